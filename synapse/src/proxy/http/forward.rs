//! Forwarding one request (the steps in [`super`]'s docs). HOT PATH. The backends are
//! picked once; each *try* (one connection, one send) is [`HttpService::try_once`], which
//! returns its [`Outcome`]; [`HttpService::forward`] applies the retry rules around the tries.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, HOST};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;
use tracing::debug;

use super::body::Release;
use super::server::Client;
use super::upstream::Acquire;
use super::{headers, HttpBackend, HttpService, ReqBody, RespBody, REPLAY_MAX};
use crate::balance::{now_ns, Ctx, InFlight};
use crate::metrics::{code_class, ProxyError, RetryReason};
use crate::outlier::Failure;
use crate::proxy::connect;
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
    /// Answer with this now (`request_timeout` ran out).
    Reply(ProxyError),
    /// The request is gone (its body was streamed to an earlier try).
    Gone,
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
    pub(super) async fn forward(
        &self,
        client: &Client,
        mut req: Request<Incoming>,
        start: Instant,
    ) -> Response<RespBody> {
        let service = &*self.service;
        if !service.snapshot.load().synced() && connect::first_sync(service, &client.cancel).await.is_err() {
            return self.reply(ProxyError::NotSynced);
        }
        self.budget.on_request(now_ns());
        let config = &service.config;
        let deadline = (!config.http.request_timeout.is_zero()).then(|| start + config.http.request_timeout);
        let upgrade = headers::upgrade(req.headers()).cloned();
        let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let key = self.key(&req, client.peer);
        let (mut parts, body) = req.into_parts();
        headers::prepare_request(&mut parts, &client.xff, upgrade.as_ref());
        let retryable = upgrade.is_none() && headers::idempotent(&parts.method);
        let body = match self.request_body(body, retryable, deadline).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        let mut msg = Message {
            replayable: body.replay().is_some(),
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
        let mut picks = table.pick(ctx).peekable();
        // What the client gets when every candidate failed.
        let mut failure = ProxyError::NoBackend;
        'backends: while let Some(backend) = picks.next() {
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
                let again = msg.replayable && picks.peek().is_some();
                match self
                    .try_once(client, &mut attempt, &mut msg, again, deadline)
                    .await
                {
                    Outcome::Response(resp) => return resp,
                    Outcome::RetryableStatus(resp) => {
                        if again && self.retry(RetryReason::Status) {
                            continue 'backends;
                        }
                        return resp;
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
                        if again && self.retry(reason) {
                            continue 'backends;
                        }
                        return self.reply(failure);
                    }
                    Outcome::Reply(why) => return self.reply(why),
                    Outcome::Gone => return self.reply(failure),
                }
            }
        }
        self.reply(failure)
    }

    /// One try: a connection to the attempt's backend, the request sent on it (a copy when
    /// `again`: another try may follow), its response head awaited up to `try_timeout` and
    /// `deadline`; the backend's live state, metrics and outlier state updated.
    async fn try_once(
        &self,
        client: &Client,
        at: &mut Attempt<'_>,
        msg: &mut Message,
        again: bool,
        deadline: Option<Instant>,
    ) -> Outcome {
        let (backend, http) = (at.backend, at.http);
        let config = &self.service.config;
        let sender = match self.connection(backend, http, at.fresh, deadline).await {
            Ok(sender) => sender,
            Err(Acquire::ConnectFailed) => return Outcome::Unreachable,
            Err(Acquire::Deadline) => return Outcome::Reply(ProxyError::Timeout),
        };
        let mut sender = sender;
        let Some(mut request) = msg.take(again) else {
            return Outcome::Gone;
        };
        if !request.headers().contains_key(HOST) {
            // An HTTP/1.0 client may send none; HTTP/1.1 backends require one.
            if let Ok(host) = HeaderValue::from_str(&backend.state.key) {
                request.headers_mut().insert(HOST, host);
            }
        }
        let sent_at = Instant::now();
        let try_deadline = match config.http.try_timeout {
            t if t.is_zero() => deadline,
            t => Some(deadline.map_or(sent_at + t, |d| d.min(sent_at + t))),
        };
        let send = sender.try_send_request(request);
        let result = match try_deadline {
            Some(at) => tokio::time::timeout_at(at, send).await.ok(),
            None => Some(send.await),
        };
        let elapsed = sent_at.elapsed();
        match result {
            Some(Ok(mut resp)) => {
                let status = resp.status();
                backend.state.live.on_complete(elapsed);
                http.metrics.responses[code_class(status.as_u16())].inc();
                http.metrics.response_time.observe(elapsed.as_secs_f64());
                if status.is_server_error() {
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
                let release = Release {
                    sender,
                    state: backend.state.clone(),
                };
                let resp =
                    Response::from_parts(head, RespBody::backend(body, Some(release), at.in_flight.take()));
                if matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE) {
                    Outcome::RetryableStatus(resp)
                } else {
                    Outcome::Response(resp)
                }
            }
            Some(Err(mut err)) => {
                if let Some(request) = err.take_message() {
                    // Never written: the pooled connection was closing.
                    msg.restore(request);
                    return Outcome::Unsent;
                }
                let err = err.into_error();
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
                Err(self.reply(ProxyError::BadRequest))
            }
            None => Err(self.reply(ProxyError::ClientTimeout)),
        }
    }
}

/// The request being proxied, kept for another try when it is replayable.
struct Message {
    parts: Option<hyper::http::request::Parts>,
    body: Option<ReqBody>,
    replayable: bool,
    /// The client's side of an upgrade it asked for.
    on_upgrade: Option<OnUpgrade>,
}

impl Message {
    /// The request for one try: a copy when another try may follow, else the original.
    fn take(&mut self, keep: bool) -> Option<Request<ReqBody>> {
        if keep {
            let parts = self.parts.as_ref()?.clone();
            let body = self.body.as_ref()?.replay()?;
            Some(Request::from_parts(parts, body))
        } else {
            Some(Request::from_parts(self.parts.take()?, self.body.take()?))
        }
    }

    /// Puts back a request that was never sent.
    fn restore(&mut self, request: Request<ReqBody>) {
        let (parts, body) = request.into_parts();
        self.parts = Some(parts);
        self.body = Some(body);
    }
}

#[cfg(test)]
mod tests;
