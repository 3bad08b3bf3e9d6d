//! The HTTP proxy: `mode: http` services on their own listeners and shared HTTP listeners
//! (`http_listeners`, routed by Host and path prefix, see [`crate::router`]). HOT PATH: per
//! request, one route lookup (shared listeners only), one route-table load, one pick, a pool
//! checkout and checkin; no lock, and no allocation beyond hyper's own (plus a copy of the
//! request head when a retry is possible).
//!
//! Clients speak HTTP/1.1 (keep-alive) or HTTP/2 with prior knowledge (h2c); backends get
//! HTTP/1.1 over keep-alive connections pooled per backend ([`pool`]). By role: [`server`]
//! (listeners, client connections, routes), [`forward`] (one request: a try per backend, retries
//! around the tries), [`upstream`] (the connection to a backend: pool or connect),
//! [`upgrade`] (WebSocket pass-through). Per request:
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
mod forward;
mod headers;
mod multiplex;
mod pool;
mod server;
mod upgrade;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};

pub use body::{ReqBody, RespBody};
pub use pool::{HttpBackend, Pool};
pub(crate) use server::drain_backlog;
pub use server::{serve, serve_stream, ListenerSettings, Routes, SharedRoutes};

use self::budget::RetryBudget;
use self::multiplex::Multiplex;
use super::grpc;
use crate::backend::BackendState;
use crate::balance::{hash_bytes, hash_ip, HashOn};
use crate::metrics::{HttpMetrics, HttpServiceMetrics, Metrics, ProxyError};
use crate::service::Service;

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
    /// The same as `grpc-message` values, by [`ProxyError`] (index = discriminant).
    grpc: [HeaderValue; 6],
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
        let grpc_text = |s: &Bytes| grpc::encode_message(String::from_utf8_lossy(s).trim_end());
        HttpService {
            hash,
            budget: RetryBudget::new(service.config.http.retry_budget),
            metrics: metrics.http().service(&name),
            http_metrics: metrics.http().clone(),
            replies: {
                let no_backend = text(format!("no backend available for service {name}"));
                let not_synced = text(format!("no backend list yet for service {name}"));
                let failed = text(format!("backend failed for service {name}"));
                let timeout = text(format!("backend timed out for service {name}"));
                let bad_request = text("could not read the request body".into());
                let client_timeout = text("the request body did not arrive in time".into());
                Replies {
                    grpc: [
                        &no_backend,
                        &not_synced,
                        &failed,
                        &timeout,
                        &bad_request,
                        &client_timeout,
                    ]
                    .map(grpc_text),
                    no_backend,
                    not_synced,
                    failed,
                    timeout,
                    bad_request,
                    client_timeout,
                }
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
    /// backends, and lets go of their HTTP/2 connections without a stream for as long.
    pub fn sweep(&self) {
        let snapshot = self.service.snapshot.load_full();
        let idle = self.service.config.http.pool_idle_timeout;
        let states = snapshot
            .table
            .backends()
            .iter()
            .map(|b| &b.state)
            .chain(snapshot.draining.iter().map(|d| &d.state));
        for state in states {
            if let Some(http) = state.slot.get::<HttpBackend>() {
                http.pool.sweep();
                http.h2.sweep(idle);
            }
        }
    }

    /// The backend's pool and HTTP metric handles, set up at its first request. None only
    /// if the slot held something else (it cannot: only this proxy fills it).
    fn backend<'a>(&self, state: &'a BackendState) -> Option<&'a HttpBackend> {
        state.slot.get_or_init(|| {
            let c = &self.service.config.http;
            HttpBackend {
                pool: Pool::new(c.pool_max_idle, c.pool_idle_timeout),
                h2: Multiplex::default(),
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

    /// synapse's own answer: plain text, or a gRPC status for a gRPC call (`grpc`).
    fn reply(&self, why: ProxyError, grpc: bool) -> Response<RespBody> {
        self.metrics.errors[why as usize].inc();
        let r = &self.replies;
        if grpc {
            let code = match why {
                ProxyError::NoBackend | ProxyError::NotSynced | ProxyError::BackendFailed => {
                    grpc::Code::Unavailable
                }
                ProxyError::Timeout | ProxyError::ClientTimeout => grpc::Code::DeadlineExceeded,
                ProxyError::BadRequest => grpc::Code::Internal,
            };
            return grpc::trailers_only(code, &r.grpc[why as usize], RespBody::empty());
        }
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
