//! The upstream side of the HTTP proxy: a connection to one backend, from its pool
//! ([`super::pool`]) or newly connected (HTTP/1.1 handshake, the connection's task watching
//! the backend's closing token), or its multiplexed HTTP/2 connection
//! ([`super::multiplex`]). HOT PATH: a pool checkout, or a load of the HTTP/2 link, per
//! request.

use std::sync::Arc;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::multiplex::{self, Link};
use super::{HttpBackend, HttpService, ReqBody};
use crate::outlier::Failure;
use crate::proxy::connect::{self, keepalive};
use crate::table::Backend;

impl HttpService {
    /// A connection to `backend`: a pooled one unless `fresh` (idle time judged at `now_ns`),
    /// else a new one.
    pub(super) async fn connection(
        &self,
        backend: &Backend,
        http: &HttpBackend,
        fresh: bool,
        deadline: Option<Instant>,
        now_ns: u64,
    ) -> Result<SendRequest<ReqBody>, Acquire> {
        let connect_timeout = self.service.config.connect_timeout;
        if !fresh {
            while let Some(mut sender) = http.pool.checkout(now_ns) {
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
        let stream = self.dial(backend, deadline).await?;
        let state = &backend.state;
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

    /// The backend's HTTP/2 connection: the open one, or a new one (one connect at a time
    /// per backend; requests arriving meanwhile wait for it).
    pub(super) async fn link(
        &self,
        backend: &Backend,
        http: &HttpBackend,
        deadline: Option<Instant>,
    ) -> Result<Arc<Link>, Acquire> {
        if let Some(link) = http.h2.current() {
            return Ok(link);
        }
        let _connecting = http.h2.connecting.lock().await;
        if let Some(link) = http.h2.current() {
            return Ok(link);
        }
        let stream = self.dial(backend, deadline).await?;
        let state = &backend.state;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(multiplex::KEEPALIVE_INTERVAL)
            .keep_alive_timeout(multiplex::KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .max_header_list_size(multiplex::MAX_HEADER_LIST_SIZE);
        let (sender, conn) = match builder.handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(err) => {
                debug!(backend.addr = %state.key, error = %err, "HTTP/2 handshake with backend failed");
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
                r = conn => if let Err(err) = r {
                    debug!(backend.addr = %key, error = %err, "backend HTTP/2 connection ended with an error");
                },
                _ = closing.cancelled() => debug!(backend.addr = %key, "backend removed and its removal grace over; HTTP/2 connection closed"),
            }
            active.dec();
        });
        let link = Arc::new(Link::new(sender));
        http.h2.install(link.clone());
        Ok(link)
    }

    /// A new TCP connection to `backend` within `connect_timeout` and what is left of
    /// `deadline`; a failure is counted against the backend.
    async fn dial(&self, backend: &Backend, deadline: Option<Instant>) -> Result<TcpStream, Acquire> {
        let connect_timeout = self.service.config.connect_timeout;
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
        let stream = match connect::connect(backend, timeout).await {
            Ok(stream) => stream,
            Err(err) => {
                state.metrics.failures.inc();
                state.live.on_failure(started.elapsed());
                self.service
                    .outlier
                    .on_failure(backend, Failure::Connect, &self.service.snapshot);
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
        keepalive(&stream, self.service.config.tcp_keepalive);
        Ok(stream)
    }
}

/// Why no connection could be had.
pub(super) enum Acquire {
    /// Connect refused or timed out (counted; try the next backend).
    ConnectFailed,
    /// `request_timeout` ran out.
    Deadline,
}
