//! A streamed request body that can be sent again. HOT PATH (when a retry is possible):
//! one uncontended mutex per frame, a cheap `Bytes` clone per data frame kept.
//!
//! The client's body is forwarded frame by frame as it arrives (a streaming or bidirectional
//! gRPC call is never held back), while a copy of what was forwarded is kept, up to a limit.
//! When a try fails in a way that proves the backend did not process the request (see
//! [`super::grpc::refused`]), [`Replay::again`] makes a body for the next try that sends the
//! copy, then goes on with the rest of the client's body. Past the limit the copy is dropped
//! and the request can no longer be sent again.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::HeaderMap;

/// A body that may be replayed; each try gets its own reader ([`Replay::again`]).
#[derive(Debug)]
pub struct Replay<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// The try this reader serves; readers of earlier tries end at once.
    generation: u32,
    /// Next kept frame to send.
    pos: usize,
    /// This try got the trailers.
    trailers_sent: bool,
}

#[derive(Debug)]
struct Shared<B> {
    /// The client's body, until it ends.
    source: Option<B>,
    /// Data frames read so far (while `kept` is true).
    frames: Vec<Bytes>,
    /// The trailers, once read.
    trailers: Option<HeaderMap>,
    bytes: usize,
    limit: usize,
    /// False once more than `limit` bytes were read, or the source failed: no replay.
    kept: bool,
    /// The current try.
    generation: u32,
}

impl<B> Replay<B> {
    /// Wraps `body`, keeping up to `limit` bytes for another try.
    pub fn new(body: B, limit: usize) -> Replay<B> {
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(body),
                frames: Vec::new(),
                trailers: None,
                bytes: 0,
                limit,
                kept: true,
                generation: 0,
            })),
            generation: 0,
            pos: 0,
            trailers_sent: false,
        }
    }

    /// A body for the next try, replaying what was sent so far; None when that is no longer
    /// possible (more than the limit read). Readers of earlier tries end at once.
    pub fn again(&self) -> Option<Replay<B>> {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if !s.kept {
            return None;
        }
        s.generation = s.generation.wrapping_add(1);
        Some(Replay {
            shared: self.shared.clone(),
            generation: s.generation,
            pos: 0,
            trailers_sent: false,
        })
    }

    /// True while another try could still be made.
    pub fn replayable(&self) -> bool {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).kept
    }
}

impl<B> Body for Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        if s.generation != this.generation {
            return Poll::Ready(None);
        }
        if s.kept {
            if let Some(b) = s.frames.get(this.pos) {
                this.pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(b.clone()))));
            }
        }
        let Some(source) = s.source.as_mut() else {
            // The client's body ended: its trailers, once per try, then the end.
            if s.kept && !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = &s.trailers {
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
            }
            return Poll::Ready(None);
        };
        let frame = match Pin::new(source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match &frame {
            None => s.source = None,
            Some(Err(_)) => {
                s.source = None;
                s.forget();
            }
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    if s.kept {
                        s.bytes += data.len();
                        if s.bytes > s.limit {
                            s.forget();
                        } else {
                            s.frames.push(data.clone());
                            this.pos = s.frames.len();
                        }
                    }
                } else if let Some(t) = f.trailers_ref() {
                    if s.kept {
                        s.trailers = Some(t.clone());
                    }
                    this.trailers_sent = true;
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if s.generation != self.generation {
            return true;
        }
        if s.kept && self.pos < s.frames.len() {
            return false;
        }
        match &s.source {
            Some(source) => source.is_end_stream(),
            None => !(s.kept && s.trailers.is_some() && !self.trailers_sent),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let queued: u64 = if s.kept {
            s.frames.iter().skip(self.pos).map(|b| b.len() as u64).sum()
        } else {
            0
        };
        match &s.source {
            None => SizeHint::with_exact(queued),
            Some(source) => {
                let h = source.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + queued);
                if let Some(u) = h.upper() {
                    out.set_upper(u + queued);
                }
                out
            }
        }
    }
}

impl<B> Shared<B> {
    /// No replay from now on: the copy is dropped.
    fn forget(&mut self) {
        self.kept = false;
        self.frames = Vec::new();
        self.trailers = None;
    }
}

#[cfg(test)]
mod tests;
