//! `grpc`: `grpc.health.v1.Health/Check` over HTTP/2 (h2c, or TLS with ALPN `h2`).
//!
//! The messages are small enough to encode by hand:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }` (`SERVING` = 1). Healthy means an
//! HTTP 200, `grpc-status: 0` (in the trailers, or in the headers of a trailers-only
//! answer) and `status` = `SERVING`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, TE, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{connect, shown, tls, CheckError, MAX_BODY};
use crate::config::authority;

/// The method called.
pub const PATH: &str = "/grpc.health.v1.Health/Check";

/// `ServingStatus` values.
const SERVING: u64 = 1;

/// Asks `host:port` whether `service` is serving; `timeout` is sent as `grpc-timeout`.
pub async fn run(
    host: &str,
    port: u16,
    service: &str,
    tls: Option<&tls::Client>,
    timeout: Duration,
) -> Result<(), CheckError> {
    let stream = connect(host, port).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{}{PATH}", authority(host, port));
    match tls {
        None => call(stream, &uri, service, timeout).await,
        Some(client) => call(client.connect(stream).await?, &uri, service, timeout).await,
    }
}

fn grpc_error(e: impl std::fmt::Display) -> CheckError {
    CheckError::Grpc(e.to_string())
}

async fn call<T>(io: T, uri: &str, service: &str, timeout: Duration) -> Result<(), CheckError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(grpc_error)?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, "nerve")
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
        .body(Full::new(Bytes::from(encode_request(service))))
        .map_err(grpc_error)?;
    let talk = async {
        let response = sender.send_request(req).await.map_err(grpc_error)?;
        if response.status() != hyper::StatusCode::OK {
            return Err(CheckError::Grpc(format!("http status {}", response.status())));
        }
        // Trailers-only answer (an error, such as an unknown service): the status is here.
        if response.headers().contains_key("grpc-status") {
            grpc_status(response.headers())?;
        }
        let collected = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(grpc_error)?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        match &trailers {
            Some(t) if t.contains_key("grpc-status") => grpc_status(t)?,
            _ => return Err(CheckError::Grpc("no grpc-status in the answer".to_string())),
        }
        let status = decode_response(&body)?;
        if status == SERVING {
            Ok(())
        } else {
            Err(CheckError::NotServing {
                service: service.to_string(),
                status: status_name(status),
            })
        }
    };
    // Driven here, not in a spawned task: dropping the check closes the connection.
    tokio::pin!(talk);
    tokio::select! {
        r = &mut talk => r,
        c = conn => match c {
            Err(e) => Err(grpc_error(e)),
            Ok(()) => talk.await,
        },
    }
}

/// `Ok` for `grpc-status: 0`, else the status and its message.
fn grpc_status(headers: &HeaderMap) -> Result<(), CheckError> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    match code {
        Some(0) => Ok(()),
        Some(code) => {
            let message = headers
                .get("grpc-message")
                .map(HeaderValue::as_bytes)
                .map(shown)
                .unwrap_or_default();
            Err(CheckError::Grpc(format!(
                "grpc-status {code} ({}){}{message}",
                code_name(code),
                if message.is_empty() { "" } else { ": " }
            )))
        }
        None => Err(CheckError::Grpc("invalid grpc-status".to_string())),
    }
}

fn code_name(code: u32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        16 => "UNAUTHENTICATED",
        _ => "other",
    }
}

fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".to_string(),
        1 => "SERVING".to_string(),
        2 => "NOT_SERVING".to_string(),
        3 => "SERVICE_UNKNOWN".to_string(),
        n => format!("status {n}"),
    }
}

/// A length-prefixed `HealthCheckRequest`.
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    frame(&message)
}

/// gRPC framing: flag 0 (not compressed), 4-byte big-endian length, the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` of a length-prefixed `HealthCheckResponse` (0, `UNKNOWN`, when absent, as
/// proto3 defaults go). Unknown fields are skipped.
pub fn decode_response(body: &[u8]) -> Result<u64, CheckError> {
    let bad = |why: &str| CheckError::Grpc(format!("invalid HealthCheckResponse: {why}"));
    let (&flag, rest) = body.split_first().ok_or_else(|| bad("empty answer"))?;
    if flag != 0 {
        return Err(bad("compressed message"));
    }
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("truncated frame"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let mut msg = rest
        .get(4..)
        .and_then(|r| r.get(..len))
        .ok_or_else(|| bad("truncated message"))?;
    let mut status = 0;
    while !msg.is_empty() {
        let key = get_varint(&mut msg).ok_or_else(|| bad("truncated field"))?;
        match key & 7 {
            0 => {
                let v = get_varint(&mut msg).ok_or_else(|| bad("truncated varint"))?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => msg = msg.get(8..).ok_or_else(|| bad("truncated field"))?,
            2 => {
                let n = get_varint(&mut msg).ok_or_else(|| bad("truncated length"))?;
                let n = usize::try_from(n).map_err(|_| bad("field too long"))?;
                msg = msg.get(n..).ok_or_else(|| bad("truncated field"))?;
            }
            5 => msg = msg.get(4..).ok_or_else(|| bad("truncated field"))?,
            _ => return Err(bad("unsupported wire type")),
        }
    }
    Ok(status)
}
