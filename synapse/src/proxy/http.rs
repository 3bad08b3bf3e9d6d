//! The HTTP proxy: `mode: http` services on their own listeners and shared HTTP listeners
//! (`http_listeners`, routed by Host and path prefix, see [`crate::router`]). HOT PATH: per
//! request, one route lookup (shared listeners only), one route-table load, one pick, a pool
//! checkout and checkin; no lock, and no allocation beyond hyper's own (plus a copy of the
//! request head when a retry is possible).
//!
//! Clients speak HTTP/1.1 (keep-alive) or HTTP/2 with prior knowledge (h2c); backends get
//! HTTP/1.1 over keep-alive connections pooled per backend ([`pool`]). Per request:
//!
//! 1. Wait for the service's first sync if needed (as TCP connections do), then load its
//!    table once and pick up to `connect_attempts` backends (`hash` reads the configured
//!    header, cookie or the client address).
//! 2. Per backend: take an idle pooled connection or connect (`connect_timeout`). A failed
//!    connect moves on to the next backend at once: nothing was sent.
//! 3. Send; wait for the response headers up to `try_timeout` (per try) and
//!    `request_timeout` (from the request's arrival, all tries).
//! 4. A request may be *retried* on the next backend after it was sent when it is
//!    idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), its body is empty or at most
//!    [`REPLAY_MAX`] bytes with a `Content-Length` (read whole first, so it can be sent
//!    again), it is not an upgrade, and the retry budget allows; on a 502 or 503 answer, a
//!    connection closed or reset before any response byte, or `try_timeout`. Anything else
//!    (a POST, a streamed body) is sent once: its bytes may have had an effect. A request
//!    that a pooled connection closed before sending any of it is re-sent on a fresh
//!    connection to the same backend, whatever its method.
//! 5. Answers of synapse itself are short plain-text bodies: 503 when no backend is
//!    available or reachable (with `Retry-After: 1`), 502 when the backend failed, 504 on a
//!    timeout, 404 on a shared listener when no route matches.
//!
//! Bodies are streamed both ways. A response's latency (to its headers) feeds the backend's
//! peak EWMA (`p2c_ewma`); a request counts as active on its backend until its response body
//! ends (`least_conn`); a 5xx answer counts as a failure for outlier ejection
//! ([`Failure::ServerError`]), a connection failure or a try timeout as a connect failure.
//! Upgrades (WebSocket) are passed through: the backend's `101` goes to the client, then
//! bytes are copied both ways until either side closes, `idle_timeout` passes without a
//! byte, or the backend's `removal_grace` ends.

mod body;
mod budget;
mod headers;
mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use common::net::{self, AcceptBackoff, AcceptRetry, Activity, Tracked};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

pub use body::{ReqBody, RespBody};
pub use pool::{HttpBackend, Pool};

use self::body::Release;
use self::budget::RetryBudget;
use super::tcp;
use crate::balance::{hash_bytes, hash_ip, now_ns, Ctx, HashOn, InFlight};
use crate::config::HttpListenerConfig;
use crate::metrics::{code_class, HttpMetrics, HttpServiceMetrics, Metrics, ProxyError, RetryReason};
use crate::outlier::Failure;
use crate::router::Router;
use crate::service::Service;
use crate::table::{Backend, BackendState};

/// Largest request body (with a `Content-Length`) read whole so that an idempotent request
/// can be retried: 64 KiB. Larger or chunked bodies are streamed and sent once.
pub const REPLAY_MAX: u64 = 64 * 1024;

/// Shortest period of the pool sweeper.
const SWEEP_MIN: Duration = Duration::from_millis(250);

/// What to hash for `balance: hash`, resolved once.
#[derive(Debug)]
enum HashKey {
    Header(HeaderName),
    Cookie(Box<str>),
    ClientIp,
}

/// synapse's own answers of one service, built once.
#[derive(Debug)]
struct Replies {
    no_backend: Bytes,
    not_synced: Bytes,
    failed: Bytes,
    timeout: Bytes,
    bad_request: Bytes,
    client_timeout: Bytes,
}

/// A `mode: http` service as the HTTP proxy sees it; shared by its own listener and the
/// shared listeners that route to it.
#[derive(Debug)]
pub struct HttpService {
    service: Arc<Service>,
    hash: Option<HashKey>,
    budget: RetryBudget,
    metrics: HttpServiceMetrics,
    http_metrics: HttpMetrics,
    replies: Replies,
}

impl HttpService {
    /// Prepares `service` (its config says `mode: http`) for HTTP proxying.
    pub fn new(service: Arc<Service>, metrics: &Metrics) -> HttpService {
        let name = service.config.name.clone();
        let hash = service.config.balance.hash_on().map(|on| match on {
            HashOn::Header(h) => HeaderName::from_bytes(h.as_bytes())
                .map(HashKey::Header)
                // The config accepts RFC 9110 tokens only, which are header names.
                .unwrap_or(HashKey::ClientIp),
            HashOn::Cookie(c) => HashKey::Cookie(c.as_str().into()),
            HashOn::ClientIp => HashKey::ClientIp,
        });
        let text = |s: String| Bytes::from(format!("synapse: {s}\n"));
        HttpService {
            hash,
            budget: RetryBudget::new(service.config.http.retry_budget),
            metrics: metrics.http().service(&name),
            http_metrics: metrics.http().clone(),
            replies: Replies {
                no_backend: text(format!("no backend available for service {name}")),
                not_synced: text(format!("no backend list yet for service {name}")),
                failed: text(format!("backend failed for service {name}")),
                timeout: text(format!("backend timed out for service {name}")),
                bad_request: text("could not read the request body".into()),
                client_timeout: text("the request body did not arrive in time".into()),
            },
            service,
        }
    }

    /// The service.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// How often [`HttpService::sweep`] should run: a quarter of `pool_idle_timeout`, at
    /// least 250 ms.
    pub fn sweep_period(&self) -> Duration {
        (self.service.config.http.pool_idle_timeout / 4).max(SWEEP_MIN)
    }

    /// Closes the idle pooled connections past `pool_idle_timeout`, of current and draining
    /// backends.
    pub fn sweep(&self) {
        let table = self.service.table.load_full();
        for b in table.backends() {
            if let Some(http) = b.state.http.get() {
                http.pool.sweep();
            }
        }
        for d in self.service.draining() {
            if let Some(http) = d.state.http.get() {
                http.pool.sweep();
            }
        }
    }

    fn backend<'a>(&self, state: &'a BackendState) -> &'a HttpBackend {
        state.http.get_or_init(|| {
            let c = &self.service.config.http;
            HttpBackend {
                pool: Pool::new(c.pool_max_idle, c.pool_idle_timeout),
                metrics: self.http_metrics.backend(&self.service.config.name, &state.key),
            }
        })
    }

    fn key(&self, req: &Request<Incoming>, peer: SocketAddr) -> Option<u64> {
        match self.hash.as_ref()? {
            HashKey::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
            HashKey::Cookie(name) => headers::cookie(req.headers(), name).map(hash_bytes),
            HashKey::ClientIp => Some(hash_ip(peer.ip())),
        }
    }

    /// synapse's own answer.
    fn reply(&self, why: ProxyError) -> Response<RespBody> {
        self.metrics.errors[why as usize].inc();
        let r = &self.replies;
        let (status, body) = match why {
            ProxyError::NoBackend => (StatusCode::SERVICE_UNAVAILABLE, &r.no_backend),
            ProxyError::NotSynced => (StatusCode::SERVICE_UNAVAILABLE, &r.not_synced),
            ProxyError::BackendFailed => (StatusCode::BAD_GATEWAY, &r.failed),
            ProxyError::Timeout => (StatusCode::GATEWAY_TIMEOUT, &r.timeout),
            ProxyError::BadRequest => (StatusCode::BAD_REQUEST, &r.bad_request),
            ProxyError::ClientTimeout => (StatusCode::REQUEST_TIMEOUT, &r.client_timeout),
        };
        let mut resp = text_response(status, body.clone());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }

    /// Proxies one request (see the module docs).
    async fn forward(
        &self,
        client: &Client,
        mut req: Request<Incoming>,
        start: Instant,
    ) -> Response<RespBody> {
        let service = &*self.service;
        if !service.synced.load(Ordering::Acquire) && tcp::first_sync(service, &client.cancel).await.is_err()
        {
            return self.reply(ProxyError::NotSynced);
        }
        self.budget.on_request(now_ns());
        let config = &service.config;
        let deadline = (!config.http.request_timeout.is_zero()).then(|| start + config.http.request_timeout);
        let upgrade = headers::upgrade(req.headers()).cloned();
        let on_client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
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
        };

        let table = service.table.load_full();
        let ctx = Ctx {
            attempts: config.connect_attempts.get() as usize,
            key,
            ignore_ejection: table.panic().active(),
        };
        let mut picks = table.pick(ctx).peekable();
        // What the client gets when every candidate failed.
        let mut failure = ProxyError::NoBackend;
        'backends: while let Some(backend) = picks.next() {
            let http = self.backend(&backend.state);
            let in_flight = backend.state.live.begin_request();
            let mut fresh = false;
            loop {
                let mut sender = match self.connection(backend, http, fresh, deadline).await {
                    Ok(sender) => sender,
                    Err(Acquire::ConnectFailed) => continue 'backends,
                    Err(Acquire::Deadline) => return self.reply(ProxyError::Timeout),
                };
                let again = msg.replayable && picks.peek().is_some();
                let Some(mut request) = msg.take(again) else {
                    return self.reply(failure);
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
                            service
                                .outlier
                                .on_failure(backend, Failure::ServerError, &service.table);
                        } else {
                            backend.state.outlier.on_success();
                        }
                        let retry_status =
                            matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE);
                        if retry_status && again && self.retry(RetryReason::Status) {
                            continue 'backends;
                        }
                        if status == StatusCode::SWITCHING_PROTOCOLS {
                            if let Some(on_client) = on_client_upgrade {
                                let on_backend = hyper::upgrade::on(&mut resp);
                                return self
                                    .upgraded(client, resp, on_client, on_backend, in_flight, backend);
                            }
                        }
                        let (mut head, body) = resp.into_parts();
                        headers::prepare_response(&mut head.headers, false);
                        let release = Release {
                            sender,
                            state: backend.state.clone(),
                        };
                        return Response::from_parts(head, RespBody::backend(body, Some(release), in_flight));
                    }
                    Some(Err(mut err)) => {
                        if let Some(request) = err.take_message() {
                            // Never written: the pooled connection was closing. Once more on a
                            // fresh connection to the same backend.
                            msg.restore(request);
                            if !fresh {
                                fresh = true;
                                continue;
                            }
                            failure = ProxyError::BackendFailed;
                            continue 'backends;
                        }
                        let err = err.into_error();
                        self.tried_and_failed(backend, elapsed);
                        debug!(backend.addr = %backend.state.key, error = %err, "request to backend failed");
                        failure = ProxyError::BackendFailed;
                        if again && self.retry(RetryReason::Error) {
                            continue 'backends;
                        }
                        return self.reply(failure);
                    }
                    None => {
                        // Dropping the send closed the connection.
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            self.tried_and_failed(backend, elapsed);
                            return self.reply(ProxyError::Timeout);
                        }
                        self.tried_and_failed(backend, elapsed);
                        failure = ProxyError::Timeout;
                        if again && self.retry(RetryReason::Timeout) {
                            continue 'backends;
                        }
                        return self.reply(failure);
                    }
                }
            }
        }
        self.reply(failure)
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
            .on_failure(backend, Failure::Connect, &self.service.table);
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

    /// A connection to `backend`: a pooled one unless `fresh`, else a new one.
    async fn connection(
        &self,
        backend: &Backend,
        http: &HttpBackend,
        fresh: bool,
        deadline: Option<Instant>,
    ) -> Result<SendRequest<ReqBody>, Acquire> {
        let connect_timeout = self.service.config.connect_timeout;
        if !fresh {
            while let Some(mut sender) = http.pool.checkout() {
                if sender.is_ready() {
                    return Ok(sender);
                }
                // Checked in as its response body ended, the connection may still be
                // finishing that exchange (microseconds) or, if the backend answered before
                // reading the whole request, sending the rest of its body.
                if let Ok(Ok(())) = tokio::time::timeout(connect_timeout, sender.ready()).await {
                    return Ok(sender);
                }
            }
        }
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Acquire::Deadline);
                }
                left.min(connect_timeout)
            }
            None => connect_timeout,
        };
        let state = &backend.state;
        let started = Instant::now();
        let stream = match tcp::connect(backend, timeout).await {
            Ok(stream) => stream,
            Err(err) => {
                state.metrics.failures.inc();
                state.live.on_failure(started.elapsed());
                self.service
                    .outlier
                    .on_failure(backend, Failure::Connect, &self.service.table);
                debug!(backend.addr = %state.key, error = %err, "backend connect failed; trying the next");
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Acquire::Deadline);
                }
                return Err(Acquire::ConnectFailed);
            }
        };
        state
            .metrics
            .connect_time
            .observe(started.elapsed().as_secs_f64());
        let _ = stream.set_nodelay(true);
        tcp::keepalive(&stream, self.service.config.tcp_keepalive);
        // Heads and small bodies are copied into one buffer and written with one `write`:
        // cheaper than `writev` for the small messages that dominate.
        let handshake = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream));
        let (sender, conn) = match handshake.await {
            Ok(pair) => pair,
            Err(err) => {
                debug!(backend.addr = %state.key, error = %err, "HTTP handshake with backend failed");
                return Err(Acquire::ConnectFailed);
            }
        };
        state.metrics.connections.inc();
        state.metrics.active.inc();
        let active = state.metrics.active.clone();
        let closing = state.closing.clone();
        let key = state.key.clone();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                r = conn.with_upgrades() => if let Err(err) = r {
                    debug!(backend.addr = %key, error = %err, "backend connection ended with an error");
                },
                _ = closing.cancelled() => debug!(backend.addr = %key, "backend removed and its removal grace over; connection closed"),
            }
            active.dec();
        });
        Ok(sender)
    }

    /// Hands the client the backend's `101` and copies bytes both ways once both sides
    /// have switched.
    fn upgraded(
        &self,
        client: &Client,
        resp: Response<Incoming>,
        on_client: hyper::upgrade::OnUpgrade,
        on_backend: hyper::upgrade::OnUpgrade,
        in_flight: InFlight,
        backend: &Backend,
    ) -> Response<RespBody> {
        let (mut head, _) = resp.into_parts();
        headers::prepare_response(&mut head.headers, true);
        let idle_timeout = self.service.config.idle_timeout;
        let closing = backend.state.closing.clone();
        let activity = client.activity.clone();
        let key = backend.state.key.clone();
        client.tasks.spawn(async move {
            let _in_flight = in_flight;
            let (c, b) = match tokio::join!(on_client, on_backend) {
                (Ok(c), Ok(b)) => (c, b),
                (Err(err), _) | (_, Err(err)) => {
                    debug!(backend.addr = %key, error = %err, "upgrade failed");
                    return;
                }
            };
            let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
            // The client side is counted by its `Tracked` stream, under the upgrade.
            let idle = net::idle(idle_timeout, || activity.total());
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut c, &mut b) => if let Err(err) = r {
                    debug!(backend.addr = %key, error = %err, "upgraded connection ended with an error");
                },
                _ = idle => debug!(backend.addr = %key, "upgraded connection idle; closed"),
                _ = closing.cancelled() => debug!(backend.addr = %key, "backend removed and its removal grace over; upgraded connection closed"),
            }
        });
        Response::from_parts(head, RespBody::empty())
    }
}

/// Why no connection could be had.
enum Acquire {
    /// Connect refused or timed out (counted; try the next backend).
    ConnectFailed,
    /// `request_timeout` ran out.
    Deadline,
}

/// The request being proxied, kept for another try when it is replayable.
struct Message {
    parts: Option<hyper::http::request::Parts>,
    body: Option<ReqBody>,
    replayable: bool,
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

fn text_response(status: StatusCode, body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Where a listener sends requests.
#[derive(Debug)]
pub enum Routes {
    /// A service's own listener.
    Service(Arc<HttpService>),
    /// A shared listener.
    Shared {
        /// Host / path → service.
        router: Router<Arc<HttpService>>,
        /// 404s.
        unrouted: IntCounter,
    },
}

impl Routes {
    /// The routes of a shared listener; `services` has every `mode: http` service (the
    /// config refers to no other).
    pub fn shared(config: &HttpListenerConfig, services: &[Arc<HttpService>], metrics: &Metrics) -> Routes {
        let mut router = Router::new();
        for r in &config.routes {
            if let Some(s) = services.iter().find(|s| s.service.config.name == r.service) {
                router.add(r.host.as_ref(), &r.path_prefix, s.clone());
            }
        }
        Routes::Shared {
            router,
            unrouted: metrics.http().unrouted(&config.listen.to_string()),
        }
    }
}

/// Connection settings of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    /// A client connection on which no byte moves for this long is closed. Zero: never.
    pub idle_timeout: Duration,
    /// TCP keepalive on client sockets. Zero: off.
    pub tcp_keepalive: Duration,
    /// Time allowed for the next request's headers, idle keep-alive time included. Zero:
    /// unlimited.
    pub keepalive_timeout: Duration,
}

/// The routes of a listener, replaced by a config reload: a connection loads them per
/// request, so keep-alive connections follow reloads.
pub type SharedRoutes = Arc<ArcSwap<Routes>>;

/// One client connection.
#[derive(Debug)]
struct Client {
    routes: SharedRoutes,
    peer: SocketAddr,
    /// The peer's address as an `X-Forwarded-For` value.
    xff: HeaderValue,
    activity: Arc<Activity>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Requests being handled (until their response head is ready).
    in_flight: AtomicUsize,
    /// Notified (to waiters only) when a request arrives.
    request: Notify,
}

/// At shutdown (or when a successor took over), how long an idle connection may take to
/// send its next request: one taken from the listen backlog, or a keep-alive connection
/// between two requests. It is then answered with `Connection: close` and closed; closing it
/// idle instead would race with a request the client may be sending (reset, or closed
/// unanswered). A client silent for longer is closed idle.
const NEXT_REQUEST_GRACE: Duration = Duration::from_secs(1);

type ServerBuilder = Arc<auto::Builder<TokioExecutor>>;

/// The hyper server settings of a listener.
fn builder(settings: ListenerSettings) -> ServerBuilder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // A client may end its side once its request is sent (`shutdown(SHUT_WR)`, as
        // `nc -N` and some HTTP/1.0 clients do): it still gets its answer, as from HAProxy.
        // Without this, hyper drops the request in flight at the EOF and closes.
        .half_close(true)
        .writev(false)
        // hyper applies this to idle keep-alive connections too; zero disables it (hyper
        // would otherwise use its own 30 s default).
        .header_read_timeout(Some(settings.keepalive_timeout).filter(|t| !t.is_zero()));
    builder.http2().timer(TokioTimer::new());
    Arc::new(builder)
}

/// Everything a listener's connections share.
struct Listening {
    routes: SharedRoutes,
    settings: ListenerSettings,
    builder: ServerBuilder,
    connections: TaskTracker,
    cancel: CancellationToken,
}

impl Listening {
    fn spawn(&self, stream: TcpStream, peer: SocketAddr) {
        if let Routes::Service(s) = &**self.routes.load() {
            s.service.metrics.connections.inc();
        }
        let client = Client {
            routes: self.routes.clone(),
            peer,
            xff: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            activity: Arc::new(Activity::default()),
            tasks: self.connections.clone(),
            cancel: self.cancel.clone(),
            in_flight: AtomicUsize::new(0),
            request: Notify::new(),
        };
        let span = tracing::debug_span!("conn", client.addr = %peer);
        self.connections.spawn(
            connection(stream, Arc::new(client), self.builder.clone(), self.settings).instrument(span),
        );
    }
}

/// Serves the connections left in an HTTP listener's backlog ([`super::take_backlog`]):
/// each gets its first request answered (with `Connection: close` once `cancel` fired).
pub(crate) fn drain_backlog(
    listener: &TcpListener,
    routes: &SharedRoutes,
    settings: ListenerSettings,
    connections: &TaskTracker,
    cancel: &CancellationToken,
) {
    let taken = super::take_backlog(listener);
    if taken.is_empty() {
        return;
    }
    let l = Listening {
        routes: routes.clone(),
        settings,
        builder: builder(settings),
        connections: connections.clone(),
        cancel: cancel.clone(),
    };
    for (stream, peer) in taken {
        l.spawn(stream, peer);
    }
}

/// Accepts HTTP connections until `stop` or `cancel` fires (accept errors back off, as for
/// TCP). Connections, and upgraded connections, are tracked in `connections`; on `cancel`
/// each connection finishes its current request and closes. `stop` only ends this loop (a
/// reload serves the same socket with a new one; open connections go on).
pub async fn serve(
    listener: Arc<TcpListener>,
    routes: SharedRoutes,
    settings: ListenerSettings,
    connections: TaskTracker,
    cancel: CancellationToken,
    stop: CancellationToken,
) {
    let l = Listening {
        routes,
        settings,
        builder: builder(settings),
        connections,
        cancel,
    };
    let mut backoff = AcceptBackoff::new("http");
    loop {
        let accepted = tokio::select! {
            _ = l.cancel.cancelled() => {
                drain_backlog(&listener, &l.routes, settings, &l.connections, &l.cancel);
                return;
            }
            _ = stop.cancelled() => {
                drain_backlog(&listener, &l.routes, settings, &l.connections, &l.cancel);
                return;
            }
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => {
                backoff.on_success();
                c
            }
            Err(err) => {
                if let AcceptRetry::After(pause) = backoff.on_error(&err) {
                    tokio::select! {
                        _ = l.cancel.cancelled() => return,
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        l.spawn(stream, peer);
    }
}

async fn connection(
    stream: TcpStream,
    client: Arc<Client>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: ListenerSettings,
) {
    tcp::keepalive(&stream, settings.tcp_keepalive);
    let _ = stream.set_nodelay(true);
    serve_connection(stream, client, builder, settings).await;
}

/// Serves one client connection over any byte stream, as a listener does, until it ends
/// (not part of the API: for `synapse::fuzzing`, which feeds in-memory streams).
#[doc(hidden)]
pub async fn serve_stream<S>(stream: S, peer: SocketAddr, routes: SharedRoutes, settings: ListenerSettings)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = Client {
        routes,
        peer,
        xff: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
        activity: Arc::new(Activity::default()),
        tasks: TaskTracker::new(),
        cancel: CancellationToken::new(),
        in_flight: AtomicUsize::new(0),
        request: Notify::new(),
    };
    serve_connection(stream, Arc::new(client), builder(settings), settings).await;
}

async fn serve_connection<S>(
    stream: S,
    client: Arc<Client>,
    builder: ServerBuilder,
    settings: ListenerSettings,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Tracked::new(stream, client.activity.clone()));
    let c = client.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let c = c.clone();
        async move { Ok::<_, Infallible>(handle(&c, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let activity = client.activity.clone();
    let idle = net::idle(settings.idle_timeout, || activity.total());
    tokio::pin!(idle);
    let mut idled = false;
    tokio::select! {
        biased;
        r = conn.as_mut() => if let Err(err) = r {
            debug!(error = %err, "client connection ended with an error");
        },
        _ = &mut idle => idled = true,
        _ = client.cancel.cancelled() => {
            let mut ended = false;
            if client.in_flight.load(Ordering::Acquire) == 0 {
                // Idle: hyper's graceful shutdown would close it at once. Let the next
                // request in; it is answered with `Connection: close`.
                let next = client.request.notified();
                tokio::pin!(next);
                next.as_mut().enable();
                if client.in_flight.load(Ordering::Acquire) == 0 {
                    tokio::select! {
                        biased;
                        _ = conn.as_mut() => ended = true,
                        _ = next => {}
                        _ = tokio::time::sleep(NEXT_REQUEST_GRACE) => {}
                    }
                }
            }
            if !ended {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = &mut idle => idled = true,
                }
            }
        }
    }
    if let Routes::Service(s) = &**client.routes.load() {
        let m = &s.service.metrics;
        m.bytes_up.inc_by(client.activity.read());
        m.bytes_down.inc_by(client.activity.written());
        if idled {
            m.idle_closed.inc();
        }
    }
    if idled {
        debug!(timeout = ?settings.idle_timeout, "client connection idle; closed");
    }
}

/// Counts a request out of [`Client::in_flight`] when its handling ends (or is dropped).
struct Handling<'a>(&'a AtomicUsize);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn handle(client: &Client, req: Request<Incoming>) -> Response<RespBody> {
    let start = Instant::now();
    client.in_flight.fetch_add(1, Ordering::AcqRel);
    client.request.notify_waiters();
    let _handling = Handling(&client.in_flight);
    let service = match &**client.routes.load() {
        Routes::Service(s) => s.clone(),
        Routes::Shared { router, unrouted } => {
            let host = req
                .headers()
                .get(HOST)
                .map(HeaderValue::as_bytes)
                .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
            match router.route(host, req.uri().path()) {
                Some(s) => s.clone(),
                None => {
                    unrouted.inc();
                    let host = host.map(String::from_utf8_lossy).unwrap_or_default();
                    let body = format!(
                        "synapse: no route for host {host:?} and path {:?}\n",
                        req.uri().path()
                    );
                    return text_response(StatusCode::NOT_FOUND, Bytes::from(body));
                }
            }
        }
    };
    let resp = service.forward(client, req, start).await;
    let m = &service.metrics;
    m.requests[code_class(resp.status().as_u16())].inc();
    m.response_time.observe(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests;
