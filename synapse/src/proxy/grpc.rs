//! What the HTTP proxy reads and writes of the gRPC protocol (gRPC over HTTP/2, as specified
//! in grpc/grpc `doc/PROTOCOL-HTTP2.md`). Pure functions; the forwarding code calls them.
//!
//! - [`is_grpc`]: a request is gRPC when its `content-type` is `application/grpc` or
//!   `application/grpc+<codec>` (gRPC-Web, which carries its trailers in the body, is not).
//! - [`timeout`] / [`encode_timeout`]: the `grpc-timeout` header, the call's deadline.
//! - [`status`]: `grpc-status` of a trailers block or of a trailers-only response.
//! - [`trailers_only`]: synapse's own errors as a gRPC status (HTTP 200, no message).
//! - [`refused`]: whether a failed try provably never reached the backend's application,
//!   so that sending it again elsewhere cannot run it twice.

use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    /// 0: success.
    Ok = 0,
    /// 1: cancelled, typically by the caller.
    Cancelled = 1,
    /// 2: unknown error (also any code outside 0..=16).
    Unknown = 2,
    /// 3: the client specified an invalid argument.
    InvalidArgument = 3,
    /// 4: the deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// 5: some requested entity was not found.
    NotFound = 5,
    /// 6: the entity already exists.
    AlreadyExists = 6,
    /// 7: the caller may not do this.
    PermissionDenied = 7,
    /// 8: some resource has been exhausted.
    ResourceExhausted = 8,
    /// 9: the system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// 10: the operation was aborted (e.g. a concurrency conflict).
    Aborted = 10,
    /// 11: the operation was attempted past the valid range.
    OutOfRange = 11,
    /// 12: not implemented or not supported.
    Unimplemented = 12,
    /// 13: internal error.
    Internal = 13,
    /// 14: the service is currently unavailable; retrying may help.
    Unavailable = 14,
    /// 15: unrecoverable data loss or corruption.
    DataLoss = 15,
    /// 16: no valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order (index = value).
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code with this value; values outside 0..=16 are `UNKNOWN`, as gRPC clients read
    /// them.
    pub fn from_value(v: u32) -> Code {
        usize::try_from(v)
            .ok()
            .and_then(|i| Code::ALL.get(i))
            .copied()
            .unwrap_or(Code::Unknown)
    }

    /// The canonical name (`UNAVAILABLE`), as a metric label.
    pub fn as_str(self) -> &'static str {
        crate::metrics::GRPC_STATUS_NAMES[self as usize]
    }

    /// The `grpc-status` value.
    fn header(self) -> HeaderValue {
        const VALUES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
        ];
        HeaderValue::from_static(VALUES[self as usize])
    }

    /// The code a gRPC client assigns to an HTTP answer without `grpc-status` (gRPC's
    /// "HTTP to gRPC status code mapping"): for counting such answers of a backend.
    pub fn from_http(status: StatusCode) -> Code {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// True when the request is a gRPC call: `content-type: application/grpc`, optionally
/// followed by `+<codec>` or `;<parameters>`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    v.len() >= PREFIX.len()
        && v[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && matches!(v.get(PREFIX.len()), None | Some(b'+' | b';'))
}

/// The call's timeout from `grpc-timeout` (`<1 to 8 digits><H|M|S|m|u|n>`). None when
/// absent or malformed: a malformed header is passed on untouched, for the backend to judge.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_timeout(headers.get(&GRPC_TIMEOUT)?.as_bytes())
}

/// Parses a `grpc-timeout` value.
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `d` (what is left of a deadline, forwarded to the backend):
/// the finest unit whose value fits the 8 digits allowed, rounded down, so that the backend
/// never waits past the caller's deadline.
pub fn encode_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let (n, unit) = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos / per, unit))
    .find(|(n, _)| *n <= MAX)
    .unwrap_or((MAX, 'H'));
    // Digits and a letter: always a valid header value.
    HeaderValue::from_str(&format!("{n}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

/// `grpc-status` in a trailers block, or in the headers of a trailers-only response. None
/// when absent; a value that is not a number is `UNKNOWN`.
pub fn status(headers: &HeaderMap) -> Option<Code> {
    let v = headers.get(&GRPC_STATUS)?;
    Some(
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .map_or(Code::Unknown, Code::from_value),
    )
}

/// A `grpc-message` value: `text` percent-encoded as gRPC requires (bytes outside printable
/// ASCII, and `%`).
pub fn encode_message(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Printable ASCII only: always a valid header value.
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static(""))
}

/// A trailers-only gRPC answer: HTTP 200, `content-type: application/grpc`, `grpc-status`
/// and `grpc-message` in the headers and no message (`body` is expected empty). This is what
/// a gRPC client reads as the call's status; an HTTP error status would only be mapped to
/// one by the client's guess.
pub fn trailers_only<B>(code: Code, message: &HeaderValue, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(GRPC_STATUS.clone(), code.header());
    if !message.is_empty() {
        h.insert(GRPC_MESSAGE.clone(), message.clone());
    }
    resp
}

/// Trailers ending a call with `code` (for a deadline that passes while a response streams).
pub fn status_trailers(code: Code, message: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(2);
    h.insert(GRPC_STATUS.clone(), code.header());
    if !message.is_empty() {
        h.insert(GRPC_MESSAGE.clone(), message.clone());
    }
    h
}

/// True when a try that failed with `err` provably never reached the backend's application,
/// so the request may be sent to another backend whatever it is (RFC 9113 §8.7):
///
/// - the backend reset the stream with `REFUSED_STREAM`;
/// - the stream failed because of the backend's `GOAWAY`: h2 fails with the GOAWAY's error
///   only the streams above its last processed stream id (and streams opened after it);
///   streams it was still processing fail later with a broken-pipe error when the
///   connection closes, which is not retried.
pub fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote() && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests;
