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
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rise_applies_at_start_and_fall_flips_down() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.observe(true), None);
        assert!(!h.is_up());
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a success resets the fall streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(false), None);
    }

    #[test]
    fn rise_one_fall_one_flips_each_time() {
        let mut h = Hysteresis::new(1, 1);
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(true), Some(true));
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
            }
        });
        let base = CheckConfig {
            host: "127.0.0.1".into(),
            port,
            timeout: Duration::from_secs(2),
            kind: CheckKind::Tcp,
        };
        assert_eq!(run(&base).await, Ok(()));
        let http = |uri: &str| CheckConfig {
            kind: CheckKind::Http {
                uri: uri.into(),
                host_header: None,
                expect_status: (200, 399),
            },
            ..base.clone()
        };
        assert_eq!(run(&http("/ok")).await, Ok(()));
        assert_eq!(
            run(&http("/bad")).await,
            Err(CheckError::Status {
                status: 503,
                lo: 200,
                hi: 399
            })
        );
        // A port nobody listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let closed = CheckConfig { port: free, ..base };
        assert!(matches!(run(&closed).await, Err(CheckError::Connect { .. })));
    }
}
