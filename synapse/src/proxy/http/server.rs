//! The server side of the HTTP proxy: listeners (on the shared accept loop), client
//! connections (hyper's server, idle timeout, graceful close) and the routes of a listener
//! (a service's own, or Host / path for a shared one). HOT PATH: [`handle`] runs once per
//! request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use common::net::{self, Activity, Tracked};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
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

/// Streams an HTTP/2 client may have open at once on one connection: more are refused
/// (`REFUSED_STREAM`, which clients retry).
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest request header list accepted from an HTTP/2 client: 64 KiB (more is answered
/// 431).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

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
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE);
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
    builder: Arc<auto::Builder<TokioExecutor>>,
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
