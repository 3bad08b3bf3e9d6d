//! The small admin HTTP server (HTTP/1.1, hyper 1), bound to localhost by default.
//!
//! Each agent supplies a synchronous [`Handler`]: routes read in-memory state only, so no
//! request ever waits on ZooKeeper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

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

/// Routes a request (method, path) to a reply.
pub type Handler = Arc<dyn Fn(&Method, &str) -> Reply + Send + Sync>;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind admin server on {addr}: {source}")]
pub struct AdminBindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// Binds the admin listener (done before anything else starts, so a busy port is an error
/// at start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminBindError { addr, source })
}

/// Serves admin requests until `cancel` fires.
pub async fn serve(listener: TcpListener, handler: Handler, cancel: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin server listening");
    }
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(err) => {
                    warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let reply = handler(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(to_response(reply)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(err) = r { debug!(%peer, error = %err, "admin connection error") },
                _ = cancel.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
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
