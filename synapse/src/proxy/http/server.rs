//! The server side of the HTTP proxy: listeners (on the shared accept loop), client
//! connections (hyper's server, idle timeout, graceful close) and the routes of a listener
//! (a service's own, or Host / path for a shared one). HOT PATH: [`handle`] runs once per
//! request.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use common::net::{Activity, Tracked};
use futures::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use super::{text_response, HttpService, RespBody};
use crate::config::{BackendProtocol, HttpListenerConfig};
use crate::metrics::{code_class, Metrics};
use crate::proxy::accept;
use crate::proxy::connect::{prepare_client, prepare_listener};
use crate::proxy::grpc;
use crate::router::Router;

/// Where a listener sends requests.
#[derive(Debug)]
pub enum Routes {
    /// A service's own listener.
    Service(Arc<HttpService>),
    /// A shared listener.
    Shared {
        /// Host / path → service, and the route's `backend_protocol` if it sets one.
        router: Router<(Arc<HttpService>, Option<BackendProtocol>)>,
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
                router.add(r.host.as_ref(), &r.path_prefix, (s.clone(), r.backend_protocol));
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
pub(super) struct Client {
    routes: SharedRoutes,
    pub(super) peer: SocketAddr,
    /// The peer's address as an `X-Forwarded-For` value.
    pub(super) xff: HeaderValue,
    /// Bytes moved on the client's socket (idle timeout, byte counts).
    pub(super) activity: Arc<Activity>,
    /// The listener's connections (upgraded connections are tracked there too).
    pub(super) tasks: TaskTracker,
    /// Shutdown (a request waiting for the first sync gives up).
    pub(super) cancel: CancellationToken,
    /// Requests being handled, until their response is sent (its body dropped by hyper).
    in_flight: AtomicUsize,
    /// Requests begun on the connection (the keep-alive watch sees new ones).
    started: AtomicU64,
    /// Set to close the connection gracefully (the connection future reads it when polled).
    shut: AtomicBool,
    /// Notified (to waiters only) when a request arrives.
    request: Notify,
}

impl Client {
    fn new(routes: SharedRoutes, peer: SocketAddr, tasks: TaskTracker, cancel: CancellationToken) -> Client {
        Client {
            routes,
            peer,
            xff: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            activity: Arc::new(Activity::default()),
            tasks,
            cancel,
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            shut: AtomicBool::new(false),
            request: Notify::new(),
        }
    }
}

/// At shutdown (or when a successor took over), how long an idle connection may take to
/// send its next request: one taken from the listen backlog, or a keep-alive connection
/// between two requests. It is then answered with `Connection: close` and closed; closing it
/// idle instead would race with a request the client may be sending (reset, or closed
/// unanswered). A client silent for longer is closed idle.
const NEXT_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Streams an HTTP/2 client may have open at once on one connection: more are refused
/// (`REFUSED_STREAM`, which clients retry).
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest request header list accepted from an HTTP/2 client: 64 KiB (more is answered
/// 431).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client that starts with it speaks
/// HTTP/2 with prior knowledge (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most bytes of a new connection read before choosing HTTP/1 or HTTP/2: the whole head of
/// most first requests, so that choosing costs no extra `read` (they are handed to hyper).
const FIRST_READ: usize = 4096;

/// The hyper server settings of a listener, by protocol.
#[derive(Debug)]
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

type ServerBuilder = Arc<Builders>;

/// The hyper server settings of a listener.
fn builder(_settings: ListenerSettings) -> ServerBuilder {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .keep_alive(true)
        // A client may end its side once its request is sent (`shutdown(SHUT_WR)`, as
        // `nc -N` and some HTTP/1.0 clients do): it still gets its answer, as from HAProxy.
        // Without this, hyper drops the request in flight at the EOF and closes.
        .half_close(true)
        .writev(false)
        // `keepalive_timeout` is enforced by the connection's watch ([`watch`]): hyper's
        // own would arm (and allocate) a timer per request.
        .header_read_timeout(None);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE);
    Arc::new(Builders { h1, h2 })
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
        let client = Client::new(
            self.routes.clone(),
            peer,
            self.connections.clone(),
            self.cancel.clone(),
        );
        let span = tracing::debug_span!("conn", client.addr = %peer);
        self.connections.spawn(
            connection(stream, Arc::new(client), self.builder.clone(), self.settings).instrument(span),
        );
    }
}

/// Serves the connections left in an HTTP listener's backlog ([`accept::take_backlog`]):
/// each gets its first request answered (with `Connection: close` once `cancel` fired).
pub(crate) fn drain_backlog(
    listener: &TcpListener,
    routes: &SharedRoutes,
    settings: ListenerSettings,
    connections: &TaskTracker,
    cancel: &CancellationToken,
) {
    let taken = accept::take_backlog(listener);
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
    prepare_listener(&listener, settings.tcp_keepalive);
    let l = Listening {
        routes,
        settings,
        builder: builder(settings),
        connections,
        cancel,
    };
    accept::serve(&listener, "http", None, &l.cancel, &stop, |stream, peer, _| {
        l.spawn(stream, peer)
    })
    .await;
}

async fn connection(
    stream: TcpStream,
    client: Arc<Client>,
    builder: ServerBuilder,
    settings: ListenerSettings,
) {
    prepare_client(&stream, settings.tcp_keepalive);
    serve_connection(stream, client, builder, settings).await;
}

/// Serves one client connection over any byte stream, as a listener does, until it ends
/// (not part of the API: for `synapse::fuzzing`, which feeds in-memory streams).
#[doc(hidden)]
pub async fn serve_stream<S>(stream: S, peer: SocketAddr, routes: SharedRoutes, settings: ListenerSettings)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = Client::new(routes, peer, TaskTracker::new(), CancellationToken::new());
    serve_connection(stream, Arc::new(client), builder(settings), settings).await;
}

/// How a connection's watch ([`watch`]) or shutdown ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// No byte moved for `idle_timeout`.
    Idle,
    /// No request head completed for `keepalive_timeout` while none was being served.
    KeepAlive,
    /// Shutdown (`cancel`).
    Cancelled,
}

async fn serve_connection<S>(
    stream: S,
    client: Arc<Client>,
    builder: ServerBuilder,
    settings: ListenerSettings,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let c = client.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let c = c.clone();
        async move { Ok::<_, Infallible>(handle(c, req).await) }
    });
    let mut io = Tracked::new(stream, client.activity.clone());
    let shut = &client.shut;
    let h2 = AtomicBool::new(false);
    let conn = async {
        // Not zeroed: read into its spare capacity.
        let mut first = BytesMut::with_capacity(FIRST_READ);
        // Enough bytes to tell HTTP/2's preface from an HTTP/1 request line.
        while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
            match first_read(&mut io, &mut first, shut).await {
                Some(Ok(0)) => break,
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(ConnError::Io(err)),
                None => return Ok(()),
            }
        }
        let io = TokioIo::new(Prefixed {
            prefix: first.freeze(),
            inner: io,
        });
        if io.inner().prefix.starts_with(H2_PREFACE) {
            h2.store(true, Ordering::Relaxed);
            let conn = builder.h2.serve_connection(io, service);
            drive(pin!(conn), shut, |c| c.graceful_shutdown()).await
        } else {
            let conn = builder.h1.serve_connection(io, service).with_upgrades();
            drive(pin!(conn), shut, |c| c.graceful_shutdown()).await
        }
        .map_err(ConnError::Hyper)
    };
    let mut conn = pin!(conn);
    let mut watching = pin!(async {
        tokio::select! {
            biased;
            _ = client.cancel.cancelled() => Stop::Cancelled,
            stop = watch(&client, &h2, settings) => stop,
        }
    });
    // The watch is polled only when its own timer or the token woke the task, not at every
    // wake-up of the connection (once or more per request).
    let side = Arc::new(Side::default());
    let side_waker = Waker::from(side.clone());
    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(Err(r));
        }
        side.parent.register(cx.waker());
        if side.woken.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(stop) = watching.as_mut().poll(&mut Context::from_waker(&side_waker)) {
                return Poll::Ready(Ok(stop));
            }
        }
        Poll::Pending
    })
    .await;
    let mut stopped = None;
    match first {
        Err(Err(err)) => debug!(error = %err, "client connection ended with an error"),
        Err(Ok(())) => {}
        Ok(Stop::Cancelled) => {
            let mut ended = false;
            let mut after = pin!(watch(&client, &h2, settings));
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
                shut.store(true, Ordering::Relaxed);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    stop = &mut after => stopped = Some(stop),
                }
            }
        }
        Ok(stop) => stopped = Some(stop),
    }
    let idled = stopped == Some(Stop::Idle);
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
    } else if stopped == Some(Stop::KeepAlive) {
        debug!(timeout = ?settings.keepalive_timeout, "client connection sent no request in time; closed");
    }
}

/// Why a connection's protocol ended it.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Io(io::Error),
    #[error(transparent)]
    Hyper(hyper::Error),
}

/// Reads the first bytes of a connection into `buf`; None once `shut` is set (nothing was
/// asked yet: the connection just closes).
async fn first_read<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    shut: &AtomicBool,
) -> Option<io::Result<usize>> {
    let mut read = pin!(io.read_buf(buf));
    poll_fn(|cx| {
        if shut.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        read.as_mut().poll(cx).map(Some)
    })
    .await
}

/// Polls a hyper connection, shutting it down gracefully once `shut` is set.
async fn drive<C, F>(mut conn: Pin<&mut C>, shut: &AtomicBool, graceful: F) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
    F: Fn(Pin<&mut C>),
{
    let mut asked = false;
    poll_fn(|cx| {
        if !asked && shut.load(Ordering::Relaxed) {
            asked = true;
            graceful(conn.as_mut());
        }
        conn.as_mut().poll(cx)
    })
    .await
}

/// Watches a client connection: ends when no byte moved for `idle_timeout`, or (HTTP/1)
/// when no request head completed for `keepalive_timeout` while none was being served
/// (between two requests, or a head arriving too slowly). One timer per connection, looked
/// at every quarter of the shorter timeout: each ends the connection between 1× and 1.25×
/// its value, and requests arm no timer of their own.
async fn watch(client: &Client, h2: &AtomicBool, settings: ListenerSettings) -> Stop {
    let (idle, keepalive) = (settings.idle_timeout, settings.keepalive_timeout);
    let Some(period) = [idle, keepalive]
        .into_iter()
        .filter(|t| !t.is_zero())
        .min()
        .map(|t| (t / 4).max(Duration::from_millis(1)))
    else {
        return std::future::pending().await;
    };
    // Quiet periods after which each timeout has passed (0: off).
    let periods = |t: Duration| {
        if t.is_zero() {
            0
        } else {
            t.as_nanos().div_ceil(period.as_nanos()).max(1)
        }
    };
    let (idle_periods, keepalive_periods) = (periods(idle), periods(keepalive));
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bytes = client.activity.total();
    let mut started = client.started.load(Ordering::Relaxed);
    let (mut quiet, mut waiting) = (0u128, 0u128);
    loop {
        tick.tick().await;
        let now = client.activity.total();
        if now != bytes {
            bytes = now;
            quiet = 0;
        } else {
            quiet += 1;
            // The last byte moved before the first quiet tick.
            if idle_periods > 0 && quiet >= idle_periods {
                return Stop::Idle;
            }
        }
        let now = client.started.load(Ordering::Relaxed);
        if now != started || client.in_flight.load(Ordering::Relaxed) > 0 || h2.load(Ordering::Relaxed) {
            started = now;
            waiting = 0;
        } else {
            waiting += 1;
            if keepalive_periods > 0 && waiting >= keepalive_periods {
                return Stop::KeepAlive;
            }
        }
    }
}

/// Wakes a task for one of the futures it polls, and says so: that future is polled only
/// after it asked to be.
#[derive(Debug)]
struct Side {
    woken: AtomicBool,
    parent: AtomicWaker,
}

impl Default for Side {
    fn default() -> Side {
        // Polled once at first, to arm its timer.
        Side {
            woken: AtomicBool::new(true),
            parent: AtomicWaker::new(),
        }
    }
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.parent.wake();
    }
}

/// A stream whose first bytes were already read (`prefix`): they are read again first.
#[derive(Debug)]
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Counts a request out of [`Client::in_flight`] when its response is sent (it goes with
/// the response body), or dropped.
#[derive(Debug)]
pub(super) struct Handling(Arc<Client>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn handle(client: Arc<Client>, req: Request<Incoming>) -> Response<RespBody> {
    client.in_flight.fetch_add(1, Ordering::AcqRel);
    client.started.fetch_add(1, Ordering::Relaxed);
    client.request.notify_waiters();
    let handling = Handling(client);
    let mut resp = respond(&handling.0, req).await;
    resp.body_mut().hold(handling);
    resp
}

async fn respond(client: &Client, req: Request<Incoming>) -> Response<RespBody> {
    let start = Instant::now();
    let (service, protocol) = match &**client.routes.load() {
        Routes::Service(s) => (s.clone(), None),
        Routes::Shared { router, unrouted } => {
            let host = req
                .headers()
                .get(HOST)
                .map(HeaderValue::as_bytes)
                .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
            match router.route(host, req.uri().path()) {
                Some((s, protocol)) => (s.clone(), *protocol),
                None => {
                    unrouted.inc();
                    if grpc::is_grpc(req.headers()) {
                        let message = grpc::encode_message("synapse: no route for this method");
                        return grpc::trailers_only(grpc::Code::Unimplemented, &message, RespBody::empty());
                    }
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
    let resp = service.forward(client, req, start, protocol).await;
    let m = &service.metrics;
    m.requests[code_class(resp.status().as_u16())].inc();
    m.response_time.observe(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests;
