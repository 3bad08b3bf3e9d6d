//! The upstream side of the HTTP proxy: a connection to one backend, from its pool
//! ([`super::pool`]) or newly connected (HTTP/1.1 handshake, the connection's task watching
//! the backend's closing token). HOT PATH: a pool checkout per request.

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::debug;

use super::{HttpBackend, HttpService, ReqBody};
use crate::outlier::Failure;
use crate::proxy::connect::{self, keepalive};
use crate::table::Backend;

impl HttpService {
    /// A connection to `backend`: a pooled one unless `fresh`, else a new one.
    pub(super) async fn connection(
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
}

/// Why no connection could be had.
pub(super) enum Acquire {
    /// Connect refused or timed out (counted; try the next backend).
    ConnectFailed,
    /// `request_timeout` ran out.
    Deadline,
}
