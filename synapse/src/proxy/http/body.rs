//! Request and response bodies of the HTTP proxy. HOT PATH: every frame goes through them.
//! Both are enums (no boxing per request) and stream frame by frame; only a small
//! replayable request body ([`ReqBody::Full`]) is ever held whole.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use prometheus::IntCounter;

use super::multiplex::Stream;
use super::server::Handling;
use crate::backend::BackendState;
use crate::balance::InFlight;
use crate::proxy::grpc;
use crate::proxy::replay::Replay;

/// A request body on its way to a backend.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// A small body read whole so that the request can be sent again (see
    /// [`super::REPLAY_MAX`]).
    Full(Option<Bytes>),
    /// The client's body, streamed.
    Stream(Incoming),
    /// The client's body, streamed while a copy of its first [`super::REPLAY_MAX`] bytes is
    /// kept, so that a try the backend refused can be made again elsewhere (HTTP/2 backends).
    Replay(Replay<Incoming>),
}

impl ReqBody {
    /// A copy for another try, when the body is replayable (`Empty` or `Full`).
    pub fn replay(&self) -> Option<ReqBody> {
        match self {
            ReqBody::Empty => Some(ReqBody::Empty),
            ReqBody::Full(b) => Some(ReqBody::Full(b.clone())),
            ReqBody::Stream(_) => None,
            ReqBody::Replay(r) => r.again().map(ReqBody::Replay),
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream(s) => Pin::new(s).poll_frame(cx),
            ReqBody::Replay(r) => Pin::new(r).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream(s) => s.is_end_stream(),
            ReqBody::Replay(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream(s) => s.size_hint(),
            ReqBody::Replay(r) => r.size_hint(),
        }
    }
}

/// The connection a response came on, given back to its backend's pool when the response
/// body has been read to its end (a connection left mid-body cannot be reused; dropping its
/// sender closes it).
#[derive(Debug)]
pub struct Release {
    /// The request sender of the connection.
    pub sender: SendRequest<ReqBody>,
    /// The backend (its pool is in [`BackendState::slot`]).
    pub state: Arc<BackendState>,
}

impl Release {
    fn give_back(self) {
        if let Some(http) = self.state.slot.get::<super::HttpBackend>() {
            http.pool.checkin(self.sender);
        }
    }
}

/// A response body on its way to a client.
#[derive(Debug)]
pub struct RespBody {
    inner: Inner,
    /// Keeps the request counted on its client connection until the body is done.
    handling: Option<Handling>,
}

#[derive(Debug)]
enum Inner {
    /// synapse's own answer, or nothing.
    Full(Option<Bytes>),
    /// A backend's body, streamed.
    Backend {
        body: Incoming,
        /// Taken when the body ends.
        release: Option<Release>,
        /// The request stays counted on its backend until its body is done.
        _in_flight: Option<InFlight>,
        /// The HTTP/2 stream it comes on, counted open until the body is done.
        stream: Option<Stream>,
        /// A gRPC call's status counters: `grpc-status` of the trailers is counted.
        grpc: Option<Arc<[IntCounter; 17]>>,
    },
}

impl RespBody {
    /// No body.
    pub fn empty() -> RespBody {
        RespBody {
            inner: Inner::Full(None),
            handling: None,
        }
    }

    /// A fixed body.
    pub fn full(bytes: Bytes) -> RespBody {
        RespBody {
            inner: Inner::Full(Some(bytes)),
            handling: None,
        }
    }

    /// A backend's body; `release` goes back to the pool at its end.
    /// `in_flight` (if any) ends with it.
    pub fn backend(body: Incoming, release: Option<Release>, in_flight: Option<InFlight>) -> RespBody {
        RespBody {
            inner: Inner::Backend {
                body,
                release,
                _in_flight: in_flight,
                stream: None,
                grpc: None,
            },
            handling: None,
        }
    }

    /// Keeps `handling` (the request counted on its client connection) until the body is
    /// done: hyper drops it once written to its end, or when the connection ends.
    pub(super) fn hold(&mut self, handling: Handling) {
        self.handling = Some(handling);
    }

    /// The HTTP/2 stream of a backend's body, closed at its end.
    pub fn on_stream(mut self, s: Stream) -> RespBody {
        if let Inner::Backend { stream, .. } = &mut self.inner {
            *stream = Some(s);
        }
        self
    }

    /// Counts the `grpc-status` of the trailers in `counters` (index = code).
    pub fn count_grpc(mut self, counters: Arc<[IntCounter; 17]>) -> RespBody {
        if let Inner::Backend { grpc, .. } = &mut self.inner {
            *grpc = Some(counters);
        }
        self
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Backend {
                body,
                release,
                _in_flight,
                stream,
                grpc,
            } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                let done = match &frame {
                    None => true,
                    Some(Ok(f)) => {
                        if let (Some(counters), Some(t)) = (grpc.as_ref(), f.trailers_ref()) {
                            if let Some(code) = grpc::status(t) {
                                counters[code as usize].inc();
                            }
                        }
                        body.is_end_stream()
                    }
                    Some(Err(_)) => {
                        // A connection that failed mid-body is not reused.
                        release.take();
                        false
                    }
                };
                if done {
                    if let Some(r) = release.take() {
                        r.give_back();
                    }
                    _in_flight.take();
                    stream.take();
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Backend { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Backend { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // A body that hyper never polled because it was empty (204, 304, HEAD, length 0) is
        // complete too.
        if let Inner::Backend { body, release, .. } = &mut self.inner {
            if let Some(r) = release.take() {
                if body.is_end_stream() {
                    r.give_back();
                }
            }
        }
    }
}
