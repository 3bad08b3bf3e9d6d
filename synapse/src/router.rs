//! Routing of a shared HTTP listener (`http_listeners`): Host header and path prefix →
//! service. HOT PATH: [`Router::route`] runs once per request; it allocates nothing.
//!
//! Matching, nginx-like:
//! 1. The host (the `Host` header, or the `:authority` of an HTTP/2 request; port and a
//!    trailing dot stripped, case-insensitive) picks a group of routes: the routes of that
//!    exact host first, then those of the longest matching `*.suffix` wildcard, then the
//!    routes without a host.
//! 2. Within a group, the longest `path_prefix` that the path starts with wins (a plain
//!    string prefix, as HAProxy's `path_beg`: `/api` also matches `/apiary`; write `/api/`
//!    to stop at a segment). A route without `path_prefix` matches every path (as `/`).
//! 3. When no route of a group matches the path, the next, less specific group is tried.
//!
//! No match: the listener answers 404.

use std::collections::HashMap;
use std::fmt;

/// The longest host name looked up (RFC 1035 limits names to 253 characters).
const MAX_HOST: usize = 255;

/// A route's `host`: a name, or `*.<suffix>` for every name under a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Exactly this name (lowercase).
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored lowercase with its leading
    /// dot), not `example.com` itself.
    Wildcard(String),
}

impl HostMatch {
    /// Parses a route's `host`: a DNS name or IP literal, or `*.` followed by a name;
    /// case-insensitive; no port.
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let lower = text.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.contains(':') && name.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "invalid host {text:?}: no port here (routes match the host whatever the port)"
            ));
        }
        // Checked with its trailing dot (check_host allows one): stripping it first would let
        // `a..` through as `a.`, a name no request can carry.
        common::codec::check_host(name).map_err(|e| format!("invalid host {text:?}: {e}"))?;
        let name = name.strip_suffix('.').unwrap_or(name);
        Ok(if wild {
            HostMatch::Wildcard(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_owned())
        })
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Routes of one host group, longest prefix first.
#[derive(Debug)]
struct Group<T> {
    routes: Vec<(Box<str>, T)>,
}

impl<T> Group<T> {
    fn new() -> Self {
        Group { routes: Vec::new() }
    }

    fn add(&mut self, prefix: &str, target: T) {
        self.routes.push((prefix.into(), target));
        // Stable: among equal lengths the first declared stays first.
        self.routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
    }

    fn find(&self, path: &str) -> Option<&T> {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(&**prefix))
            .map(|(_, t)| t)
    }
}

/// An immutable Host/path → `T` table, built once from the config.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<Box<str>, Group<T>>,
    /// `(suffix with its leading dot, routes)`, longest suffix first.
    wildcard: Vec<(Box<str>, Group<T>)>,
    any: Group<T>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Group::new(),
        }
    }
}

impl<T> Router<T> {
    /// An empty router (routes nothing).
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route. `prefix` empty or `/` matches every path.
    pub fn add(&mut self, host: Option<&HostMatch>, prefix: &str, target: T) {
        let group = match host {
            None => &mut self.any,
            Some(HostMatch::Exact(h)) => self.exact.entry(h.as_str().into()).or_insert_with(Group::new),
            Some(HostMatch::Wildcard(suffix)) => {
                if !self.wildcard.iter().any(|(s, _)| **s == **suffix) {
                    self.wildcard.push((suffix.as_str().into(), Group::new()));
                    // Most specific (longest) suffix first; stable for equal lengths.
                    self.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
                }
                match self.wildcard.iter_mut().find(|(s, _)| **s == **suffix) {
                    Some((_, group)) => group,
                    None => return,
                }
            }
        };
        group.add(prefix, target);
    }

    /// The target for a request to `host` (a `Host` header value, perhaps with a port; None
    /// when the request has none) and `path`.
    pub fn route(&self, host: Option<&[u8]>, path: &str) -> Option<&T> {
        let mut buf = [0u8; MAX_HOST];
        if let Some(name) = host.and_then(|h| normalize(h, &mut buf)) {
            if let Some(t) = self.exact.get(name).and_then(|g| g.find(path)) {
                return Some(t);
            }
            for (suffix, group) in &self.wildcard {
                if name.len() > suffix.len() && name.ends_with(&**suffix) {
                    if let Some(t) = group.find(path) {
                        return Some(t);
                    }
                }
            }
        }
        self.any.find(path)
    }
}

/// `Host` value → lowercase name without port or trailing dot, in `buf` when it had to be
/// lowercased. None when it is not a plausible host.
fn normalize<'a>(host: &'a [u8], buf: &'a mut [u8; MAX_HOST]) -> Option<&'a str> {
    let name = if host.first() == Some(&b'[') {
        // `[v6]:port`: routes store the bare address.
        let end = host.iter().position(|&b| b == b']')?;
        &host[1..end]
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
            _ => host,
        }
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST {
        return None;
    }
    if name.iter().any(u8::is_ascii_uppercase) {
        let out = &mut buf[..name.len()];
        for (o, b) in out.iter_mut().zip(name) {
            *o = b.to_ascii_lowercase();
        }
        std::str::from_utf8(out).ok()
    } else {
        std::str::from_utf8(name).ok()
    }
}

#[cfg(test)]
mod tests;
