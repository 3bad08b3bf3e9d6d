//! Forwarding one request (the steps in [`super`]'s docs). HOT PATH. The backends are
//! picked once; each *try* (one connection, one send) is [`HttpService::try_once`], which
//! returns its [`Outcome`]; [`HttpService::forward`] applies the retry rules around the tries.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2, TrySendError};
use hyper::header::{HeaderValue, HOST, TE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Version};
use tokio::time::Instant;
use tracing::debug;

use super::body::Release;
use super::multiplex::Stream;
use super::server::Client;
use super::upstream::Acquire;
use super::{headers, HttpBackend, HttpService, ReqBody, RespBody, REPLAY_MAX};
use crate::balance::{now_ns, ns_at, Ctx, InFlight};
use crate::config::BackendProtocol;
use crate::metrics::{code_class, ProxyError, RetryReason};
use crate::outlier::Failure;
use crate::proxy::connect;
use crate::proxy::grpc::{self, Code};
use crate::proxy::replay::Replay;
use crate::table::Backend;

/// What one try gave.
enum Outcome {
    /// The answer for the client.
    Response(Response<RespBody>),
    /// A 502 or 503 answer: retried on the next backend when allowed, else the answer.
    RetryableStatus(Response<RespBody>),
    /// No connection to the backend (counted); nothing was sent.
    Unreachable,
    /// A pooled connection closed before any byte of the request was written: the request
    /// is back in the [`Message`].
    Unsent,
    /// Sent, then failed (reset, closed, or `try_timeout`): what the client gets unless a
    /// retry is allowed, and the retry's reason.
    Failed(ProxyError, RetryReason),
    /// The backend provably did not process the request ([`grpc::refused`]): it may be sent
    /// to another backend whatever its method, if its body can be sent again.
    Refused,
    /// A gRPC `UNAVAILABLE` with no message (trailers-only): sent again like [`Self::Refused`]
    /// when allowed, else the answer.
    Unavailable(Response<RespBody>),
    /// Answer with this now (`request_timeout` ran out).
    Reply(ProxyError),
    /// The request is gone (its body was streamed to an earlier try).
    Gone,
}

/// What every try of one request needs to know about it.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// Over the backend's multiplexed HTTP/2 connection (else HTTP/1.1).
    h2: bool,
    /// A gRPC call: synapse's own answers are gRPC statuses, `grpc-status` is read.
    grpc: bool,
    /// The client's `grpc-timeout` deadline: the rest of it goes to each try's backend.
    grpc_deadline: Option<Instant>,
}

/// One backend being tried.
struct Attempt<'a> {
    backend: &'a Backend,
    http: &'a HttpBackend,
    /// The request counts as active on the backend until its response body ends.
    in_flight: Option<InFlight>,
    /// A new connection, not a pooled one.
    fresh: bool,
}

impl HttpService {
    /// Proxies one request (see the module docs).
    /// `protocol`: the route's `backend_protocol`, if it sets one (else the service's).
    pub(super) async fn forward(
        &self,
        client: &Client,
        mut req: Request<Incoming>,
        start: Instant,
        protocol: Option<BackendProtocol>,
    ) -> Response<RespBody> {
        let service = &*self.service;
        let config = &service.config;
        let present = headers::Present::scan(req.headers());
        let upgrade = headers::upgrade(req.headers(), present).cloned();
        let grpc = present.content_type() && grpc::is_grpc(req.headers());
        let grpc_deadline = if grpc {
            grpc::timeout(req.headers()).map(|t| start + t)
        } else {
            None
        };
        let call = Call {
            // Upgrades (WebSocket) exist in HTTP/1.1 only.
            h2: upgrade.is_none()
                && match protocol.unwrap_or(config.http.backend_protocol) {
                    BackendProtocol::Http1 => false,
                    BackendProtocol::H2c => true,
                    BackendProtocol::Auto => req.version() == Version::HTTP_2,
                },
            grpc,
            grpc_deadline,
        };
        if !service.snapshot.load().synced() && connect::first_sync(service, &client.cancel).await.is_err() {
            return self.reply(ProxyError::NotSynced, grpc);
        }
        // The request's arrival on the `now_ns` clock, without another clock read.
        let start_ns = ns_at(start.into_std());
        self.budget.on_request(start_ns);
        let deadline = (!config.http.request_timeout.is_zero()).then(|| start + config.http.request_timeout);
        let deadline = match (deadline, grpc_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let key = self.key(&req, client.peer);
        let trailers = headers::accepts_trailers(req.headers(), present);
        let (mut parts, body) = req.into_parts();
        let host = headers::prepare_request(&mut parts, &client.xff, upgrade.as_ref(), present);
        if trailers && call.h2 {
            // A hop-by-hop header, but what it says holds end to end over HTTP/2: trailers
            // are passed through (gRPC servers require it).
            parts.headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        let retryable = upgrade.is_none() && headers::idempotent(&parts.method);
        let body = match self.request_body(body, retryable, deadline, grpc).await {
            Ok(ReqBody::Stream(b)) if call.h2 && config.connect_attempts.get() > 1 => {
                ReqBody::Replay(Replay::new(b, REPLAY_MAX as usize))
            }
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let mut msg = Message {
            replayable: matches!(body, ReqBody::Empty | ReqBody::Full(_)),
            host,
            parts: Some(parts),
            body: Some(body),
            on_upgrade,
        };

        let table = service.table();
        let ctx = Ctx {
            attempts: config.connect_attempts.get() as usize,
            key,
            ignore_ejection: table.panic().active(),
        };
        // At most this many backends are tried: whether another may follow is known without
        // computing the next pick (it is computed only when a try failed).
        let limit = ctx.attempts.min(table.backends().len());
        let mut picks = table.pick(ctx).peekable();
        let mut tried = 0;
        // What the client gets when every candidate failed.
        let mut failure = ProxyError::NoBackend;
        'backends: while let Some(backend) = picks.next() {
            tried += 1;
            let Some(http) = self.backend(&backend.state) else {
                continue 'backends;
            };
            let mut attempt = Attempt {
                backend,
                http,
                in_flight: Some(backend.state.live.begin_request()),
                fresh: false,
            };
            loop {
                // A copy of the request is kept only when another try may follow: an upper
                // bound says so without computing the next pick (computed only on failure).
                let bound = tried < limit;
                // Sent again when it failed, if idempotent...
                let may_retry = msg.replayable && bound;
                // ...or, whatever it is, when the backend refused it.
                let may_resend = msg.resendable() && bound;
                let outcome = self
                    .try_once(
                        client,
                        &mut attempt,
                        &mut msg,
                        may_retry || may_resend,
                        deadline,
                        call,
                        start_ns,
                    )
                    .await;
                let mut more = || picks.peek().is_some();
                match outcome {
                    Outcome::Response(resp) => return resp,
                    Outcome::RetryableStatus(resp) => {
                        if may_retry && more() && self.retry(RetryReason::Status) {
                            continue 'backends;
                        }
                        return resp;
                    }
                    Outcome::Unavailable(resp) => {
                        if may_resend && more() && self.retry(RetryReason::Refused) {
                            continue 'backends;
                        }
                        return resp;
                    }
                    Outcome::Refused => {
                        failure = ProxyError::BackendFailed;
                        if may_resend && more() && self.retry(RetryReason::Refused) {
                            continue 'backends;
                        }
                        return self.reply(failure, grpc);
                    }
                    Outcome::Unreachable => continue 'backends,
                    Outcome::Unsent => {
                        // Once more on a fresh connection to the same backend.
                        if !attempt.fresh {
                            attempt.fresh = true;
                            continue;
                        }
                        failure = ProxyError::BackendFailed;
                        continue 'backends;
                    }
                    Outcome::Failed(why, reason) => {
                        failure = why;
                        if may_retry && more() && self.retry(reason) {
                            continue 'backends;
                        }
                        return self.reply(failure, grpc);
                    }
                    Outcome::Reply(why) => return self.reply(why, grpc),
                    Outcome::Gone => return self.reply(failure, grpc),
                }
            }
        }
        self.reply(failure, grpc)
    }

    /// One try: a connection to the attempt's backend, the request sent on it (a copy when
    /// `again`: another try may follow), its response head awaited up to `try_timeout` and
    /// `deadline`; the backend's live state, metrics and outlier state updated.
    #[allow(clippy::too_many_arguments)]
    async fn try_once(
        &self,
        client: &Client,
        at: &mut Attempt<'_>,
        msg: &mut Message,
        again: bool,
        deadline: Option<Instant>,
        call: Call,
        start_ns: u64,
    ) -> Outcome {
        let (backend, http) = (at.backend, at.http);
        let config = &self.service.config;
        let mut upstream = if call.h2 {
            match self.link(backend, http, deadline).await {
                Ok(link) => {
                    let (sender, stream) = link.open(&http.metrics.streams);
                    Upstream::H2(sender, stream)
                }
                Err(Acquire::ConnectFailed) => return Outcome::Unreachable,
                Err(Acquire::Deadline) => return Outcome::Reply(ProxyError::Timeout),
            }
        } else {
            match self.connection(backend, http, at.fresh, deadline, start_ns).await {
                Ok(sender) => Upstream::H1(sender),
                Err(Acquire::ConnectFailed) => return Outcome::Unreachable,
                Err(Acquire::Deadline) => return Outcome::Reply(ProxyError::Timeout),
            }
        };
        let Some(mut request) = msg.take(again) else {
            return Outcome::Gone;
        };
        if !msg.host {
            // An HTTP/1.0 client may send none; HTTP/1.1 backends require one.
            if let Ok(host) = HeaderValue::from_str(&backend.state.key) {
                request.headers_mut().insert(HOST, host);
            }
        }
        if call.h2 {
            headers::to_h2(&mut request);
        }
        let sent_at = Instant::now();
        if let Some(d) = call.grpc_deadline {
            // What is left of the caller's deadline, for the backend to stop in time too.
            request.headers_mut().insert(
                grpc::GRPC_TIMEOUT.clone(),
                grpc::encode_timeout(d.saturating_duration_since(sent_at)),
            );
        }
        let try_deadline = match config.http.try_timeout {
            t if t.is_zero() => deadline,
            t => Some(deadline.map_or(sent_at + t, |d| d.min(sent_at + t))),
        };
        let send = upstream.send(request);
        let result = match try_deadline {
            Some(at) => tokio::time::timeout_at(at, send).await.ok(),
            None => Some(send.await),
        };
        let done = Instant::now();
        let elapsed = done.saturating_duration_since(sent_at);
        match result {
            Some(Ok(mut resp)) => {
                let status = resp.status();
                backend.state.live.on_complete_at(elapsed, ns_at(done.into_std()));
                http.metrics.responses[code_class(status.as_u16())].inc();
                http.metrics.response_time.observe(elapsed.as_secs_f64());
                // A trailers-only gRPC answer has its status in the headers.
                let grpc_status = if call.grpc {
                    grpc::status(resp.headers())
                } else {
                    None
                };
                if let Some(code) = grpc_status {
                    http.metrics.grpc.get()[code as usize].inc();
                }
                let unavailable = grpc_status == Some(Code::Unavailable);
                if status.is_server_error() || unavailable {
                    self.service
                        .outlier
                        .on_failure(backend, Failure::ServerError, &self.service.snapshot);
                } else {
                    backend.state.outlier.on_success();
                }
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(on_client) = msg.on_upgrade.take() {
                        let on_backend = hyper::upgrade::on(&mut resp);
                        let in_flight = at.in_flight.take();
                        return Outcome::Response(
                            self.upgraded(client, resp, on_client, on_backend, in_flight, backend),
                        );
                    }
                }
                let (mut head, body) = resp.into_parts();
                headers::prepare_response(&mut head.headers, false);
                let mut body = match upstream {
                    Upstream::H1(sender) => {
                        let release = Release {
                            sender,
                            state: backend.state.clone(),
                        };
                        RespBody::backend(body, Some(release), at.in_flight.take())
                    }
                    Upstream::H2(_, stream) => {
                        RespBody::backend(body, None, at.in_flight.take()).on_stream(stream)
                    }
                };
                if call.grpc && grpc_status.is_none() {
                    body = body.count_grpc(http.metrics.grpc.get().clone());
                }
                let resp = Response::from_parts(head, body);
                if unavailable {
                    Outcome::Unavailable(resp)
                } else if matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE) {
                    Outcome::RetryableStatus(resp)
                } else {
                    Outcome::Response(resp)
                }
            }
            Some(Err(mut err)) => {
                if let Some(request) = err.take_message() {
                    // Never written: the pooled connection was closing (or the HTTP/2
                    // connection closed: the next try opens a new one).
                    msg.restore(request);
                    return Outcome::Unsent;
                }
                let err = err.into_error();
                if grpc::refused(&err) {
                    debug!(backend.addr = %backend.state.key, error = %err, "backend refused the request");
                    return Outcome::Refused;
                }
                self.tried_and_failed(backend, elapsed);
                debug!(backend.addr = %backend.state.key, error = %err, "request to backend failed");
                Outcome::Failed(ProxyError::BackendFailed, RetryReason::Error)
            }
            None => {
                // Dropping the send closed the connection.
                self.tried_and_failed(backend, elapsed);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Outcome::Reply(ProxyError::Timeout);
                }
                Outcome::Failed(ProxyError::Timeout, RetryReason::Timeout)
            }
        }
    }

    /// Takes a retry from the budget (counted either way).
    fn retry(&self, why: RetryReason) -> bool {
        if self.budget.try_retry(now_ns()) {
            self.metrics.retries[why as usize].inc();
            true
        } else {
            self.metrics.budget_exhausted.inc();
            false
        }
    }

    /// A request that reached `backend` got no response: reset, closed or timed out.
    fn tried_and_failed(&self, backend: &Backend, elapsed: Duration) {
        backend.state.live.on_failure(elapsed);
        self.service
            .outlier
            .on_failure(backend, Failure::Connect, &self.service.snapshot);
    }

    /// The body to send: empty, read whole when small and the request is replayable, else
    /// streamed.
    async fn request_body(
        &self,
        body: Incoming,
        retryable: bool,
        deadline: Option<Instant>,
        grpc: bool,
    ) -> Result<ReqBody, Response<RespBody>> {
        if body.is_end_stream() {
            return Ok(ReqBody::Empty);
        }
        let small = body.size_hint().exact().is_some_and(|n| n <= REPLAY_MAX);
        if !retryable || !small {
            return Ok(ReqBody::Stream(body));
        }
        let read = body.collect();
        let read = match deadline {
            Some(at) => tokio::time::timeout_at(at, read).await.ok(),
            None => Some(read.await),
        };
        match read {
            Some(Ok(collected)) => Ok(ReqBody::Full(Some(collected.to_bytes()))),
            Some(Err(err)) => {
                debug!(error = %err, "cannot read the request body");
                Err(self.reply(ProxyError::BadRequest, grpc))
            }
            None => Err(self.reply(ProxyError::ClientTimeout, grpc)),
        }
    }
}

/// The request being proxied, kept for another try when it is replayable.
struct Message {
    parts: Option<hyper::http::request::Parts>,
    body: Option<ReqBody>,
    replayable: bool,
    /// The request has a `Host` header.
    host: bool,
    /// The client's side of an upgrade it asked for.
    on_upgrade: Option<OnUpgrade>,
}

impl Message {
    /// The request for one try: a copy when another try may follow, else the original. A
    /// [`ReqBody::Replay`] body gets a new reader for each try.
    fn take(&mut self, keep: bool) -> Option<Request<ReqBody>> {
        if let Some(ReqBody::Replay(r)) = &self.body {
            let body = ReqBody::Replay(r.again()?);
            let parts = if keep {
                self.parts.as_ref()?.clone()
            } else {
                self.parts.take()?
            };
            return Some(Request::from_parts(parts, body));
        }
        if keep {
            let parts = self.parts.as_ref()?.clone();
            let body = self.body.as_ref()?.replay()?;
            Some(Request::from_parts(parts, body))
        } else {
            Some(Request::from_parts(self.parts.take()?, self.body.take()?))
        }
    }

    /// True when the request could be sent again if a backend refused it.
    fn resendable(&self) -> bool {
        match &self.body {
            Some(ReqBody::Empty | ReqBody::Full(_)) => true,
            Some(ReqBody::Replay(r)) => r.replayable(),
            Some(ReqBody::Stream(_)) | None => false,
        }
    }

    /// Puts back a request that was never sent.
    fn restore(&mut self, request: Request<ReqBody>) {
        let (parts, body) = request.into_parts();
        self.parts = Some(parts);
        self.body = Some(body);
    }
}

/// The connection a try goes out on.
enum Upstream {
    /// A pooled (or new) HTTP/1.1 connection.
    H1(http1::SendRequest<ReqBody>),
    /// A stream on the backend's HTTP/2 connection.
    H2(http2::SendRequest<ReqBody>, Stream),
}

impl Upstream {
    async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ReqBody>>> {
        match self {
            Upstream::H1(s) => s.try_send_request(req).await,
            Upstream::H2(s, _) => s.try_send_request(req).await,
        }
    }
}

#[cfg(test)]
mod tests;
