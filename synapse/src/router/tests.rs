#![allow(clippy::unwrap_used)]
use super::*;

fn router(routes: &[(Option<&str>, &str, &'static str)]) -> Router<&'static str> {
    let mut r = Router::new();
    for (host, prefix, target) in routes {
        let host = host.map(|h| HostMatch::parse(h).unwrap());
        r.add(host.as_ref(), prefix, *target);
    }
    r
}

fn route(r: &Router<&'static str>, host: Option<&str>, path: &str) -> Option<&'static str> {
    r.route(host.map(str::as_bytes), path).copied()
}

#[test]
fn host_then_longest_prefix() {
    let r = router(&[
        (Some("api.local"), "/", "api"),
        (Some("api.local"), "/v1", "api-v1"),
        (Some("api.local"), "/v1/admin", "admin"),
        (Some("*.web.local"), "", "web"),
        (Some("*.b.web.local"), "", "deep"),
        (None, "/static", "static"),
        (None, "", "default"),
    ]);
    assert_eq!(route(&r, Some("api.local"), "/v1/users"), Some("api-v1"));
    assert_eq!(route(&r, Some("api.local"), "/v1/admin/x"), Some("admin"));
    assert_eq!(route(&r, Some("api.local"), "/v2"), Some("api"));
    // Port, case and a trailing dot do not matter.
    assert_eq!(route(&r, Some("API.Local:8080"), "/v1"), Some("api-v1"));
    assert_eq!(route(&r, Some("api.local."), "/v1"), Some("api-v1"));
    // Wildcards: the longest suffix wins; the bare domain is not covered.
    assert_eq!(route(&r, Some("a.web.local"), "/"), Some("web"));
    assert_eq!(route(&r, Some("x.b.web.local"), "/"), Some("deep"));
    assert_eq!(route(&r, Some("web.local"), "/"), Some("default"));
    // Host-less routes catch the rest, longest prefix first.
    assert_eq!(route(&r, Some("other"), "/static/a.css"), Some("static"));
    assert_eq!(route(&r, None, "/x"), Some("default"));
}

#[test]
fn falls_back_to_less_specific_hosts_and_misses() {
    let r = router(&[
        (Some("api.local"), "/v1", "api"),
        (Some("*.local"), "/w", "wild"),
        (None, "/static", "static"),
    ]);
    // api.local has no route for /w: the wildcard's route applies.
    assert_eq!(route(&r, Some("api.local"), "/w/x"), Some("wild"));
    assert_eq!(route(&r, Some("api.local"), "/static/x"), Some("static"));
    assert_eq!(route(&r, Some("api.local"), "/other"), None);
    assert_eq!(route(&r, Some("unknown"), "/v1"), None);
    assert_eq!(route(&r, None, "/v1"), None);
}

#[test]
fn ipv6_hosts_and_odd_values() {
    let r = router(&[(Some("::1"), "", "v6"), (Some("127.0.0.1"), "", "v4")]);
    assert_eq!(route(&r, Some("[::1]:8080"), "/"), Some("v6"));
    assert_eq!(route(&r, Some("[::1]"), "/"), Some("v6"));
    assert_eq!(route(&r, Some("127.0.0.1:80"), "/"), Some("v4"));
    assert_eq!(route(&r, Some(""), "/"), None);
    assert_eq!(route(&r, Some("[::1"), "/"), None);
    let long = "a".repeat(300);
    assert_eq!(route(&r, Some(&long), "/"), None);
}

#[test]
fn host_match_parsing() {
    assert_eq!(
        HostMatch::parse("API.local").unwrap(),
        HostMatch::Exact("api.local".into())
    );
    assert_eq!(
        HostMatch::parse("*.Example.com").unwrap(),
        HostMatch::Wildcard(".example.com".into())
    );
    assert_eq!(HostMatch::parse("::1").unwrap(), HostMatch::Exact("::1".into()));
    assert!(HostMatch::parse("api.local:8080").is_err());
    assert!(HostMatch::parse("a b").is_err());
    assert!(HostMatch::parse("*.").is_err());
    assert!(HostMatch::parse("").is_err());
    // An empty label before the trailing dot (found by tests/tests/it/http_props.rs).
    assert!(HostMatch::parse("a..").is_err());
    assert!(HostMatch::parse("*.a..").is_err());
    assert_eq!(HostMatch::parse("a.").unwrap(), HostMatch::Exact("a".into()));
    assert_eq!(
        HostMatch::parse("*.example.com").unwrap().to_string(),
        "*.example.com"
    );
}
