//! Header handling of the HTTP proxy. HOT PATH: runs on every request and response; the
//! common case (no hop-by-hop header but `Connection`, no earlier `X-Forwarded-For`)
//! allocates nothing.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it lists,
//!   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`) are removed both ways: each side of synapse
//!   is its own connection, framed by hyper. An upgrade keeps `Upgrade` and gets
//!   `Connection: upgrade`.
//! - `X-Forwarded-For`: the client's address is appended to the list (one header line, as
//!   Go's and nginx's proxies do, so readers of the first line see the whole chain);
//!   `X-Forwarded-Proto: http` is added unless the client sent one (a TLS terminator in front
//!   of synapse knows better).
//! - `Expect` is dropped: hyper already answered `100 Continue` to the client when the body
//!   was first read, and the backend gets the body at once.
//! - The request goes to an HTTP/1.1 backend in origin form (`/path?query`); an HTTP/2
//!   request's `:authority` becomes its `Host` when it has none. To an HTTP/2 backend
//!   ([`to_h2`]) it goes in absolute form, `Host` becoming `:authority`.
//! - `TE: trailers` is kept for HTTP/2 backends ([`accepts_trailers`]): trailers are passed
//!   through, and gRPC servers require it.

use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, COOKIE, EXPECT, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::request::Parts;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Uri, Version};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fixed hop-by-hop headers (those listed in `Connection` come on top). A `static`, not
/// a `const`: a const array would be built and dropped at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Which of the headers the proxy acts on a message carries, from one pass over its names
/// ([`Present::scan`]): a header known absent costs no lookup (each is a hash of the name and
/// a probe), and most requests carry only `Host` and a few others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u16);

/// Bit of [`Present`] for each name beyond [`HOP_BY_HOP`] (bits 0 to 8).
const EXPECT_BIT: u16 = 1 << 9;
const XFF_BIT: u16 = 1 << 10;
const XFP_BIT: u16 = 1 << 11;
const HOST_BIT: u16 = 1 << 12;
const CONTENT_TYPE_BIT: u16 = 1 << 13;
/// Bits of the hop-by-hop headers.
const HOP_BY_HOP_BITS: u16 = (1 << 9) - 1;

impl Present {
    /// One pass over the names of `headers`. Names are compared only with the known ones of
    /// the same length: most names match no length, or one candidate.
    pub fn scan(headers: &HeaderMap) -> Present {
        let mut bits = 0u16;
        for name in headers.keys() {
            bits |= Present::bit(name);
        }
        Present(bits)
    }

    fn bit(name: &HeaderName) -> u16 {
        let is = |known: &HeaderName, bit: u16| if name == known { bit } else { 0 };
        let hop = |i: usize| is(&HOP_BY_HOP[i], 1 << i);
        match name.as_str().len() {
            2 => hop(5),
            4 => is(&HOST, HOST_BIT),
            6 => is(&EXPECT, EXPECT_BIT),
            7 => hop(6) | hop(8),
            10 => hop(0) | hop(1),
            12 => is(&CONTENT_TYPE, CONTENT_TYPE_BIT),
            15 => is(&X_FORWARDED_FOR, XFF_BIT),
            16 => hop(2),
            17 => hop(7) | is(&X_FORWARDED_PROTO, XFP_BIT),
            18 => hop(3),
            19 => hop(4),
            _ => 0,
        }
    }

    /// `Host` is present.
    pub fn host(self) -> bool {
        self.0 & HOST_BIT != 0
    }

    /// `Content-Type` is present.
    pub fn content_type(self) -> bool {
        self.0 & CONTENT_TYPE_BIT != 0
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// RFC 9110 §9.2.2 idempotent methods: safe to send again after a failure.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The `Upgrade` value of an HTTP/1.1 request that asks for one (`Connection: upgrade`).
/// `present`: [`Present::scan`] of `headers`.
pub fn upgrade(headers: &HeaderMap, present: Present) -> Option<&HeaderValue> {
    // Bits 0 and 8: `Connection`, `Upgrade`.
    if !present.has(1) || !present.has(1 << 8) {
        return None;
    }
    let upgrade = headers.get(UPGRADE)?;
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
        .then_some(upgrade)
}

/// Comma-separated tokens of a header value, trimmed.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop headers (see the module docs). `present`: [`Present::scan`] of
/// `headers` (bit i: `HOP_BY_HOP[i]`): most messages carry none, or only `Connection`, and a
/// miss costs less than a removal.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, present: Present) {
    let present = present.0 & HOP_BY_HOP_BITS;
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let listed = headers.get_all(CONNECTION).iter().count();
        if listed == 1 {
            if let Some(v) = headers.remove(CONNECTION) {
                remove_listed(headers, &v);
            }
        } else {
            let values: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
            headers.remove(CONNECTION);
            for v in &values {
                remove_listed(headers, v);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in tokens(connection) {
        // The usual options, not header names (`Keep-Alive` and `Upgrade` go anyway).
        if token.eq_ignore_ascii_case(b"keep-alive")
            || token.eq_ignore_ascii_case(b"close")
            || token.eq_ignore_ascii_case(b"upgrade")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            headers.remove(name);
        }
    }
}

/// Rewrites a client request for the backend (see the module docs). `xff` is the client's
/// address as a header value; `upgrade` the value of an accepted `Upgrade` request;
/// `present`: [`Present::scan`] of the request's headers. Returns whether the request has a
/// `Host` header now.
pub fn prepare_request(
    parts: &mut Parts,
    xff: &HeaderValue,
    upgrade: Option<&HeaderValue>,
    present: Present,
) -> bool {
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers, present);
    if present.has(EXPECT_BIT) {
        headers.remove(EXPECT);
    }
    if let Some(protocol) = upgrade {
        headers.insert(UPGRADE, protocol.clone());
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if present.has(XFF_BIT) {
        append_forwarded_for(headers, xff);
    } else {
        headers.insert(X_FORWARDED_FOR, xff.clone());
    }
    if !present.has(XFP_BIT) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    let mut host = present.host();
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        if !host {
            if let Some(value) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(HOST, value);
                host = true;
            }
        }
        let mut origin = Uri::builder();
        if let Some(pq) = parts.uri.path_and_query() {
            origin = origin.path_and_query(pq.clone());
        } else {
            origin = origin.path_and_query("/");
        }
        if let Ok(uri) = origin.build() {
            parts.uri = uri;
        }
    }
    parts.version = Version::HTTP_11;
    host
}

/// True when the request's `TE` says the client accepts trailers. `present`:
/// [`Present::scan`] of `headers`.
pub fn accepts_trailers(headers: &HeaderMap, present: Present) -> bool {
    // Bit 5: `TE`.
    present.has(1 << 5)
        && headers.get_all(TE).iter().any(|v| {
            tokens(v).any(|t| {
                t.split(|&b| b == b';')
                    .next()
                    .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
            })
        })
}

/// Rewrites a request prepared for HTTP/1.1 ([`prepare_request`]) for an HTTP/2 backend:
/// `http://<Host><path>`, the `Host` header moved into `:authority` (RFC 9113 §8.3.1).
/// Without a usable `Host` it stays in origin form (`:scheme` http, no `:authority`).
pub fn to_h2<B>(req: &mut Request<B>) {
    *req.version_mut() = Version::HTTP_2;
    let Some(host) = req.headers().get(HOST) else {
        return;
    };
    let Ok(authority) = Authority::try_from(host.as_bytes()) else {
        return;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
        req.headers_mut().remove(HOST);
    }
}

/// Appends `xff` to the `X-Forwarded-For` lines present, joined into one.
fn append_forwarded_for(headers: &mut HeaderMap, xff: &HeaderValue) {
    let mut joined: Vec<u8> = Vec::with_capacity(64);
    for v in headers.get_all(X_FORWARDED_FOR) {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(xff.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Rewrites a backend response for the client: hop-by-hop headers removed. For a `101
/// Switching Protocols`, `Upgrade` stays and `Connection: upgrade` is set.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) {
    let upgrade = if switching {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    remove_hop_by_hop(headers, Present::scan(headers));
    if let Some(protocol) = upgrade {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            (k == name.as_bytes()).then_some(v)
        })
    })
}

#[cfg(test)]
mod tests;
