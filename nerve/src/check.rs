//! Health checks (tcp, http) and the rise/fall hysteresis.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{CheckConfig, CheckKind};

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The check took longer than its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The TCP connection failed.
    #[error("connect to {addr} failed: {reason}")]
    Connect {
        /// `host:port` checked.
        addr: String,
        /// The OS error.
        reason: String,
    },
    /// The HTTP exchange failed.
    #[error("http request failed: {0}")]
    Http(String),
    /// The HTTP status is outside the accepted range.
    #[error("http status {status} not in {lo}-{hi}")]
    Status {
        /// Status received.
        status: u16,
        /// Lowest accepted.
        lo: u16,
        /// Highest accepted.
        hi: u16,
    },
}

/// Runs one check once.
pub async fn run(check: &CheckConfig) -> Result<(), CheckError> {
    match tokio::time::timeout(check.timeout, run_inner(check)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout(check.timeout)),
    }
}

async fn run_inner(check: &CheckConfig) -> Result<(), CheckError> {
    let stream = TcpStream::connect((check.host.as_str(), check.port))
        .await
        .map_err(|e| CheckError::Connect {
            addr: format!("{}:{}", check.host, check.port),
            reason: e.to_string(),
        })?;
    match &check.kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Http {
            uri,
            host_header,
            expect_status: (lo, hi),
        } => {
            let http = |e: hyper::Error| CheckError::Http(e.to_string());
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(http)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let host = host_header
                .clone()
                .unwrap_or_else(|| format!("{}:{}", check.host, check.port));
            let req = Request::get(uri.as_str())
                .header(hyper::header::HOST, host)
                .header(hyper::header::USER_AGENT, "nerve")
                .header(hyper::header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| CheckError::Http(e.to_string()))?;
            let status = sender.send_request(req).await.map_err(http)?.status().as_u16();
            if (*lo..=*hi).contains(&status) {
                Ok(())
            } else {
                Err(CheckError::Status {
                    status,
                    lo: *lo,
                    hi: *hi,
                })
            }
        }
    }
}

/// Rise/fall hysteresis over check rounds. Starts down: `rise` successes are needed before
/// the first registration.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: bool,
    streak: u32,
}

impl Hysteresis {
    /// Starts down.
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            streak: 0,
        }
    }

    /// Current state.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one round's result; returns the new state when it flipped.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
