//! Health checks, one file per type behind one enum ([`CheckKind`]), and the rise/fall
//! [`Hysteresis`] each check runs through.
//!
//! - [`tcp`]: connect, optional send / expect.
//! - [`http`]: HTTP/1.1 `GET`/`HEAD` over TCP or TLS (type `https`).
//! - [`exec`]: a command in its own process group, killed whole on timeout.
//! - [`redis`]: `AUTH` then `PING` → `PONG`.
//! - [`grpc`]: `grpc.health.v1.Health/Check` over HTTP/2.
//! - [`tls`]: the rustls client configuration shared by `https` and `grpc`.
//!
//! A [`Check`] is built once per configured check (TLS settings resolved then) and run
//! every interval by the service's check loop; every run is bounded by the check's
//! timeout and abandoned at once when its future is dropped.

use std::time::Duration;

use crate::config::{authority, CheckConfig, CheckKind};

pub mod exec;
pub mod grpc;
pub mod http;
mod hysteresis;
pub mod redis;
pub mod tcp;
pub mod tls;

pub use hysteresis::Hysteresis;

/// Most bytes a `tcp` check reads while looking for `expect`, and most bytes of a reply
/// line a `redis` check reads (4 KiB).
pub const MAX_READ: usize = 4096;
/// Most bytes of an HTTP body read while looking for `expect_body`, and most bytes of a
/// gRPC answer (64 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Most bytes of an `exec` check's output kept: the last 4 KiB of stdout and stderr.
pub const MAX_OUTPUT: usize = 4096;

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
    /// Sending to or reading from an open connection failed.
    #[error("{op} failed: {reason}")]
    Io {
        /// `send` or `read`.
        op: &'static str,
        /// The OS error.
        reason: String,
    },
    /// A `tcp` check's `expect` bytes were not received.
    #[error("expected {expected:?}, received {received:?}{}", if *.closed { " before the connection closed" } else { "" })]
    Expect {
        /// The expected bytes (lossy UTF-8).
        expected: String,
        /// The start of what was received (lossy UTF-8).
        received: String,
        /// The peer closed before the bytes came (else [`MAX_READ`] bytes came without them).
        closed: bool,
    },
    /// The TLS handshake failed (certificate refused, protocol error).
    #[error("tls handshake with {server_name:?} failed: {reason}")]
    Tls {
        /// The name verified.
        server_name: String,
        /// rustls' reason.
        reason: String,
    },
    /// The HTTP exchange failed.
    #[error("http request failed: {0}")]
    Http(String),
    /// The HTTP status is not an accepted one.
    #[error("http status {status} not in {expected}")]
    Status {
        /// Status received.
        status: u16,
        /// The accepted statuses, as configured.
        expected: String,
    },
    /// The HTTP body did not contain `expect_body`.
    #[error("body does not contain {expected:?} (read {read} bytes)")]
    Body {
        /// The expected substring.
        expected: String,
        /// Bytes of the body read (at most [`MAX_BODY`]).
        read: usize,
    },
    /// The command could not be started.
    #[error("cannot run {program:?}: {reason}")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        reason: String,
    },
    /// The command exited with a non-zero status or was killed by a signal.
    #[error("command {0}")]
    Exit(String),
    /// Redis answered something else than expected.
    #[error("redis {command}: {reply}")]
    Redis {
        /// `AUTH` or `PING`.
        command: &'static str,
        /// The reply (an error reply, or an unexpected one).
        reply: String,
    },
    /// The gRPC exchange failed or answered a non-OK `grpc-status`.
    #[error("grpc health check failed: {0}")]
    Grpc(String),
    /// The gRPC server answered, but not `SERVING`.
    #[error("grpc service {service:?} is {status}")]
    NotServing {
        /// The service asked about (`""`: the whole server).
        service: String,
        /// `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN` or the number.
        status: String,
    },
    /// The check could not be set up (TLS configuration).
    #[error("{0}")]
    Setup(String),
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Healthy, or why not.
    pub result: Result<(), CheckError>,
    /// What the command printed (`exec` only): the last [`MAX_OUTPUT`] bytes of stdout
    /// and stderr, lossy UTF-8, trimmed.
    pub output: Option<String>,
}

impl From<Result<(), CheckError>> for Report {
    fn from(result: Result<(), CheckError>) -> Report {
        Report { result, output: None }
    }
}

/// A configured check, ready to run.
#[derive(Debug, Clone)]
pub struct Check {
    config: CheckConfig,
    /// The TLS client of `https` and TLS `grpc` checks, built once (an error is reported
    /// at every run; the config was already checked at load).
    tls: Option<Result<tls::Client, String>>,
}

impl Check {
    /// Prepares `config`.
    pub fn new(config: CheckConfig) -> Check {
        let tls = match &config.kind {
            CheckKind::Http(h) => h.tls.as_ref().map(|t| tls::Client::new(t, tls::HTTP1)),
            CheckKind::Grpc { tls: Some(t), .. } => Some(tls::Client::new(t, tls::HTTP2)),
            _ => None,
        };
        Check { config, tls }
    }

    /// Its configuration.
    pub fn config(&self) -> &CheckConfig {
        &self.config
    }

    /// What it checks, for humans: `host:port`, a URL, or the command line. Never a
    /// password.
    pub fn target(&self) -> String {
        let c = &self.config;
        let addr = authority(&c.host, c.port);
        match &c.kind {
            CheckKind::Tcp { .. } => addr,
            CheckKind::Http(h) => {
                let scheme = if h.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{addr}{}", h.uri)
            }
            CheckKind::Exec(e) => e.argv.join(" "),
            CheckKind::Redis { .. } => format!("redis://{addr}"),
            CheckKind::Grpc { service, tls } => {
                let scheme = if tls.is_some() { "grpcs" } else { "grpc" };
                format!("{scheme}://{addr}/{service}")
            }
        }
    }

    /// Runs the check once, within its timeout.
    pub async fn run(&self) -> Report {
        let c = &self.config;
        // exec bounds itself: on timeout it kills the process group and keeps the output.
        if let CheckKind::Exec(e) = &c.kind {
            return exec::run(e, c.timeout).await;
        }
        let tls = match &self.tls {
            None => None,
            Some(Ok(client)) => Some(client),
            Some(Err(e)) => return Err(CheckError::Setup(e.clone())).into(),
        };
        let run = async {
            match &c.kind {
                CheckKind::Tcp { send, expect } => {
                    tcp::run(&c.host, c.port, send.as_deref(), expect.as_deref()).await
                }
                CheckKind::Http(h) => http::run(&c.host, c.port, h, tls).await,
                CheckKind::Redis { username, password } => {
                    redis::run(&c.host, c.port, username.as_deref(), password.as_deref()).await
                }
                CheckKind::Grpc { service, .. } => grpc::run(&c.host, c.port, service, tls, c.timeout).await,
                CheckKind::Exec(_) => Ok(()),
            }
        };
        match tokio::time::timeout(c.timeout, run).await {
            Ok(r) => r.into(),
            Err(_) => Err(CheckError::Timeout(c.timeout)).into(),
        }
    }
}

/// Connects to `host:port`.
pub(crate) async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, CheckError> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| CheckError::Connect {
            addr: authority(host, port),
            reason: e.to_string(),
        })?;
    // Small request/answer exchanges: do not wait to fill a segment.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// True when `needle` occurs in `haystack` at or after `from` (so that a growing buffer is
/// not searched again from its start).
pub(crate) fn contains_from(haystack: &[u8], needle: &[u8], from: usize) -> bool {
    if needle.is_empty() {
        return true;
    }
    let start = from.saturating_sub(needle.len() - 1);
    haystack
        .get(start..)
        .is_some_and(|h| h.windows(needle.len()).any(|w| w == needle))
}

/// `bytes` as lossy UTF-8, cut to 200 characters, for error messages.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
