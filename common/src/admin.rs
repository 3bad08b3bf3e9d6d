//! The small admin HTTP server (HTTP/1.1, hyper 1), bound to localhost by default.
//!
//! Each agent supplies one [`Handler`]: an async function of an [`AdminRequest`] (method,
//! path, query string, body). Routes read in-memory state; the few that wait (nerve's
//! `disable?wait=`) wait on the agent's own state, bounded by their caller's deadline. A
//! request body (for `PUT`/`POST`) is read first, up to [`MAX_BODY`], and handed to the
//! handler whole.
//!
//! Served here for both agents, before the agent's handler: `/log-level` (`GET` the filter
//! in force, `PUT` new `EnvFilter` directives as the body, `DELETE` back to the configured
//! ones; changes from loopback clients only) and `GET /debug/alloc` (heap allocation counts
//! as JSON when built with the `count-alloc` feature, see [`crate::alloc_count`]; 404
//! otherwise).
//!
//! A local admin port is also a way to exhaust the process's file descriptors, so slow and
//! idle clients are bounded ([`AdminLimits`]): a short timeout for a connection's first byte,
//! header and body read timeouts, an idle timeout and a cap on open connections. The admin
//! port also answers readiness probes, so a full house never makes a new client wait: at the
//! cap, the oldest connection the server owes nothing to (headers or body unfinished, silent,
//! idle keep-alive, or a response the client does not read) is closed to make room. A
//! connection is protected only while the server works for it: from an accept that finds its
//! complete request head already received (a probe that waited in the listen backlog behind
//! abusive clients), and while its handler runs. The accept loop yields after each accept,
//! so a new connection is read before a flood of later ones can push it out. Only when every
//! connection is protected do new clients wait in the listen backlog. Accept errors back off
//! through [`crate::net::AcceptBackoff`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::net::{AcceptBackoff, AcceptRetry, Activity, Tracked};

/// Default admin listen address of nerve.
pub const NERVE_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3421);
/// Default admin listen address of synapse.
pub const SYNAPSE_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3422);

/// A response from an admin route.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{value:#}\n"),
        }
    }

    /// A plain-text reply.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// 404 for unknown routes.
    pub fn not_found() -> Reply {
        Reply::text(StatusCode::NOT_FOUND, "not found\n")
    }
}

/// One admin request, as handed to a [`Handler`].
#[derive(Debug, Clone)]
pub struct AdminRequest {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query string (`/services/web/disable`).
    pub path: String,
    /// Query string without the `?`, when there is one (`wait=10s`).
    pub query: Option<String>,
    /// Body: empty for `GET`, `HEAD` and `DELETE`, at most [`MAX_BODY`] bytes otherwise.
    pub body: Bytes,
}

/// Routes a request to a reply; the reply may wait (e.g. nerve's `disable?wait=`). A
/// synchronous route answers with `Box::pin(std::future::ready(reply))`.
pub type Handler = Arc<dyn Fn(AdminRequest) -> futures::future::BoxFuture<'static, Reply> + Send + Sync>;

/// Largest request body read (bytes); a larger one is answered 413 unread.
pub const MAX_BODY: usize = 64 * 1024;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind admin server on {addr}: {source}")]
pub struct AdminBindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// Listen backlog of the admin port (the kernel caps it at `net.core.somaxconn`). Clients
/// past the connection cap wait here; a full backlog drops a probe's SYN, which the client
/// retries only after a second, so it is far larger than the 128 of `TcpListener::bind`.
pub const BACKLOG: u32 = 1024;

/// Binds the admin listener (done before anything else starts, so a busy port is an error
/// at start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminBindError> {
    let err = |source| AdminBindError { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    // As `TcpListener::bind`: a restarted agent rebinds at once.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

/// Limits that keep slow or idle clients from holding the admin server's connections (and
/// the process's file descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Time a new connection has to send its first byte. Default 2 s. A probe or a `curl`
    /// sends its request at once; a connection that sends nothing only holds a slot. Zero
    /// disables it.
    pub first_byte_timeout: Duration,
    /// Time a client has to send a request's complete headers, counted from the moment the
    /// server is ready to read them: from the accept for the first request, and from the
    /// end of the previous response on a keep-alive connection, so this is also how long an
    /// idle keep-alive connection is kept. Default 10 s. Zero disables it.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed, whatever it
    /// is doing (e.g. a client that stalls sending a body or stops reading the response).
    /// Default 30 s. Zero disables it.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's whole body, from the end of its headers.
    /// Default 10 s (admin bodies are at most [`MAX_BODY`]); a slower one is answered 408
    /// and closed. Zero disables it.
    pub body_read_timeout: Duration,
    /// Connections open at once. At the cap, a new client takes the place of the oldest
    /// connection that is not inside a request (that one is closed); when every one is
    /// inside a request, new clients wait in the listen backlog. Default 32.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            first_byte_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 32,
        }
    }
}

/// Serves admin requests with the default [`AdminLimits`] until `cancel` fires.
pub async fn serve(listener: TcpListener, handler: Handler, cancel: CancellationToken) {
    serve_with(listener, handler, AdminLimits::default(), cancel).await
}

/// Serves admin requests until `cancel` fires, within `limits`.
pub async fn serve_with(
    listener: TcpListener,
    handler: Handler,
    limits: AdminLimits,
    cancel: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, max_connections = limits.max_connections, "admin server listening");
    }
    let tracker = TaskTracker::new();
    let conns = Arc::new(Connections::default());
    let max = limits.max_connections.max(1);
    let mut backoff = AcceptBackoff::new("admin");
    loop {
        // At the cap with every connection inside a request, nothing can be closed to make
        // room: clients wait in the backlog (without a descriptor each) until one is done.
        while conns.is_full(max) && !conns.any_idle() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = conns.changed.notified() => {}
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => {
                    backoff.on_success();
                    s
                }
                Err(err) => {
                    if let AcceptRetry::After(pause) = backoff.on_error(&err) {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            },
        };
        // Room for it: below the cap, or in place of the oldest connection outside a
        // request, or (every one inside a request since the check above) once one is done.
        while conns.is_full(max) {
            if let Some(evicted) = conns.close_oldest_idle() {
                debug!(%peer, %evicted, "admin connections at the cap: closing the oldest idle one");
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = conns.changed.notified() => {}
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        // A request already whole in the socket (its client waited in the backlog) is served
        // next; without this, the accepts of later clients could close it before its task
        // first reads.
        let slot = conns.open(peer, request_head_received(&stream));
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            serve_connection(stream, peer, handler, limits, slot, cancel).await;
        });
        // Let the new connection (and the others) read before the next accept: clients that
        // reconnect as fast as they are closed would otherwise keep this loop busy, each
        // accept closing the oldest connection, until a probe accepted a moment ago is the
        // oldest before it was ever read.
        tokio::task::yield_now().await;
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
}

/// The open admin connections, oldest first, and whether each is inside a request.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, OpenConn>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Signalled when a connection closes or leaves a request.
    changed: Notify,
}

#[derive(Debug)]
struct OpenConn {
    peer: SocketAddr,
    busy: Arc<AtomicBool>,
    close: CancellationToken,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, OpenConn>> {
        // The map stays consistent whatever panicked while holding it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_full(&self, max: usize) -> bool {
        self.lock().len() >= max
    }

    fn any_idle(&self) -> bool {
        self.lock().values().any(|c| !c.busy.load(Ordering::Relaxed))
    }

    /// Closes the oldest connection not inside a request; returns its peer.
    fn close_oldest_idle(&self) -> Option<SocketAddr> {
        let mut open = self.lock();
        let id = *open.iter().find(|(_, c)| !c.busy.load(Ordering::Relaxed))?.0;
        let conn = open.remove(&id)?;
        conn.close.cancel();
        Some(conn.peer)
    }

    /// Registers a new connection, protected from the start when `protected`.
    fn open(self: &Arc<Self>, peer: SocketAddr, protected: bool) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicBool::new(protected));
        let close = CancellationToken::new();
        self.lock().insert(
            id,
            OpenConn {
                peer,
                busy: busy.clone(),
                close: close.clone(),
            },
        );
        Slot {
            conns: self.clone(),
            id,
            busy,
            close,
        }
    }
}

/// One connection's place in [`Connections`]; dropping it frees the place.
#[derive(Debug)]
struct Slot {
    conns: Arc<Connections>,
    id: u64,
    busy: Arc<AtomicBool>,
    /// Cancelled when the connection is closed to make room for a new one.
    close: CancellationToken,
}

impl Slot {
    /// Ends the protection given at the accept: the request is now the client's to finish
    /// (its body), as any other.
    fn unprotect(&self) {
        if self.busy.swap(false, Ordering::Relaxed) {
            self.conns.changed.notify_one();
        }
    }

    /// Marks the connection inside a request until the guard drops.
    fn enter(&self) -> BusyGuard {
        self.busy.store(true, Ordering::Relaxed);
        BusyGuard {
            busy: self.busy.clone(),
            conns: self.conns.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
        self.conns.changed.notify_one();
    }
}

/// Whether a complete request head (up to a blank line) is already in `stream`'s receive
/// buffer, looked at without taking it and without waiting. Heads larger than the look are
/// reported as incomplete (probes send a few dozen bytes).
fn request_head_received(stream: &TcpStream) -> bool {
    use rustix::net::RecvFlags;
    let mut buf = [0u8; 2048];
    match rustix::net::recv(stream, &mut buf[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((n, _)) => buf[..n.min(buf.len())].windows(4).any(|w| w == b"\r\n\r\n"),
        Err(_) => false,
    }
}

#[derive(Debug)]
struct BusyGuard {
    busy: Arc<AtomicBool>,
    conns: Arc<Connections>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Relaxed);
        self.conns.changed.notify_one();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    limits: AdminLimits,
    slot: Slot,
    cancel: CancellationToken,
) {
    // A connection that sends nothing is let go early (it would only hold a place).
    if !limits.first_byte_timeout.is_zero() {
        let mut first = [0u8; 1];
        tokio::select! {
            // `peek` waits for a byte (or the end) without taking it; readiness alone can be
            // spurious.
            r = tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut first)) => {
                if r.is_err() {
                    debug!(%peer, timeout = ?limits.first_byte_timeout, "admin connection sent nothing; closing");
                    return;
                }
            }
            _ = slot.close.cancelled() => return,
            _ = cancel.cancelled() => return,
        }
    }
    let activity = Activity::default();
    let io = TokioIo::new(Tracked::new(stream, &activity));
    let close = slot.close.clone();
    let slot = Arc::new(slot);
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let slot = slot.clone();
        async move {
            slot.unprotect();
            Ok::<_, Infallible>(to_response(
                route(req, peer, &handler, &slot, limits.body_read_timeout).await,
            ))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    // Zero disables it (hyper would otherwise apply its own 30 s default).
    builder.header_read_timeout(Some(limits.header_read_timeout).filter(|t| !t.is_zero()));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = crate::net::idle(limits.idle_timeout, || activity.total());
    tokio::pin!(idle);
    tokio::select! {
        r = conn.as_mut() => if let Err(err) = r { debug!(%peer, error = %err, "admin connection error") },
        _ = &mut idle => debug!(%peer, timeout = ?limits.idle_timeout, "admin connection idle; closing"),
        _ = close.cancelled() => {}
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            // An idle or slow client must not hold the shutdown either.
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = &mut idle => {}
            }
        }
    }
}

/// Reads the body (bounded in size and time; meanwhile the connection may be closed to make
/// room, as the client is the one that owes bytes) and dispatches, the connection now inside
/// its request: built-in routes first, then the agent's handler.
async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    handler: &Handler,
    slot: &Slot,
    body_timeout: Duration,
) -> Reply {
    let (parts, body) = req.into_parts();
    let body = if matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE) {
        Bytes::new()
    } else {
        let read = Limited::new(body, MAX_BODY).collect();
        let read = if body_timeout.is_zero() {
            Ok(read.await)
        } else {
            tokio::time::timeout(body_timeout, read).await
        };
        match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return Reply::text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {MAX_BODY} bytes\n"),
                );
            }
            Ok(Err(err)) => {
                debug!(%peer, error = %err, "cannot read admin request body");
                return Reply::text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
            }
            Err(_) => {
                debug!(%peer, timeout = ?body_timeout, "admin request body too slow");
                return Reply::text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body did not arrive within {body_timeout:?}\n"),
                );
            }
        }
    };
    let _inside = slot.enter();
    if parts.uri.path() == "/log-level" {
        return log_level(&parts.method, &body, peer);
    }
    if parts.uri.path() == "/debug/alloc" && is_get(&parts.method) {
        return match crate::alloc_count::snapshot() {
            Some(counts) => Reply::json(StatusCode::OK, &counts.to_json()),
            None => Reply::text(
                StatusCode::NOT_FOUND,
                "allocation counts need a build with the count-alloc feature\n",
            ),
        };
    }
    handler(AdminRequest {
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        method: parts.method,
        body,
    })
    .await
}

/// `GET` / `PUT` / `DELETE /log-level`: the runtime log filter.
fn log_level(method: &Method, body: &[u8], peer: SocketAddr) -> Reply {
    use crate::telemetry;
    let changed = |previous: String| {
        let now = telemetry::log_filter().unwrap_or_default();
        info!(%peer, from = %previous, to = %now, "log filter changed through the admin API");
        Reply::text(StatusCode::OK, format!("{now}\n"))
    };
    let refused = |err: telemetry::TelemetryError| {
        let status = match err {
            telemetry::TelemetryError::BadLevel { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Reply::text(status, format!("{err}\n"))
    };
    // The admin port may listen beyond loopback (in a container, say): reading is harmless,
    // turning on `trace` for every module is not.
    let local = is_loopback(peer.ip());
    match *method {
        Method::GET | Method::HEAD => match telemetry::log_filter() {
            Some(f) => Reply::text(StatusCode::OK, format!("{f}\n")),
            None => refused(telemetry::TelemetryError::NotReloadable),
        },
        Method::PUT | Method::DELETE if !local => Reply::text(
            StatusCode::FORBIDDEN,
            "the log level can only be changed from a loopback address\n",
        ),
        Method::PUT => match std::str::from_utf8(body) {
            Ok(directives) => telemetry::set_log_filter(directives).map_or_else(refused, changed),
            Err(_) => Reply::text(StatusCode::BAD_REQUEST, "the body must be UTF-8 text\n"),
        },
        Method::DELETE => telemetry::reset_log_filter().map_or_else(refused, changed),
        _ => Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET, PUT or DELETE\n"),
    }
}

/// Loopback, also as an IPv4-mapped IPv6 address (a dual-stack listener).
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    resp
}

/// Helper for handlers: only GET (and HEAD) are served.
pub fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

#[cfg(test)]
mod tests;
