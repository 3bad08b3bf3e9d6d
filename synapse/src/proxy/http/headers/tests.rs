#![allow(clippy::unwrap_used)]
use super::*;

fn parts(req: hyper::Request<()>) -> Parts {
    req.into_parts().0
}

fn prep(p: &mut Parts, xff: &HeaderValue, upgrade: Option<&HeaderValue>) -> bool {
    let present = Present::scan(&p.headers);
    prepare_request(p, xff, upgrade, present)
}

#[test]
fn the_scan_finds_each_known_name_and_only_those() {
    let known = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "x-forwarded-for",
        "x-forwarded-proto",
        "host",
        "content-type",
    ];
    for (i, name) in known.iter().enumerate() {
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
        assert_eq!(Present::scan(&h), Present(1 << i), "{name}");
    }
    // Same lengths, other names (standard and not).
    let mut h = HeaderMap::new();
    for name in [
        "ab",
        "date",
        "accept",
        "referer",
        "user-agent",
        "content-md5",
        "x-forwarded-xyz",
        "x-forwarded-protx",
    ] {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
    }
    assert_eq!(Present::scan(&h), Present::default());
}

#[test]
fn host_is_reported() {
    let mut p = parts(hyper::Request::get("/").header("host", "a").body(()).unwrap());
    assert!(prep(&mut p, &HeaderValue::from_static("1.2.3.4"), None));
    let mut p = parts(hyper::Request::get("/").body(()).unwrap());
    assert!(!prep(&mut p, &HeaderValue::from_static("1.2.3.4"), None));
    let mut p = parts(hyper::Request::get("http://b:80/x").body(()).unwrap());
    assert!(prep(&mut p, &HeaderValue::from_static("1.2.3.4"), None));
    assert_eq!(p.headers["host"], "b:80");
}

#[test]
fn hop_by_hop_headers_go_and_listed_ones_too() {
    let mut p = parts(
        hyper::Request::get("/x")
            .header("connection", "keep-alive, X-Secret")
            .header("connection", "x-other")
            .header("keep-alive", "timeout=5")
            .header("x-secret", "1")
            .header("x-other", "2")
            .header("proxy-authorization", "Basic x")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers")
            .header("trailer", "x-t")
            .header("transfer-encoding", "chunked")
            .header("upgrade", "h2c")
            .header("expect", "100-continue")
            .header("x-kept", "yes")
            .body(())
            .unwrap(),
    );
    let xff = HeaderValue::from_static("10.0.0.1");
    prep(&mut p, &xff, None);
    let names: Vec<&str> = p.headers.keys().map(HeaderName::as_str).collect();
    assert_eq!(
        names,
        ["x-kept", "x-forwarded-for", "x-forwarded-proto"],
        "{:?}",
        p.headers
    );
    assert_eq!(p.headers["x-forwarded-for"], "10.0.0.1");
    assert_eq!(p.headers["x-forwarded-proto"], "http");
    assert_eq!(p.version, Version::HTTP_11);
}

#[test]
fn forwarded_for_appends_and_proto_is_kept() {
    let mut p = parts(
        hyper::Request::get("/")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-for", "2.2.2.2, 3.3.3.3")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap(),
    );
    prep(&mut p, &HeaderValue::from_static("::1"), None);
    let all: Vec<_> = p.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, ["1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"]);
    assert_eq!(p.headers["x-forwarded-proto"], "https");
}

#[test]
fn upgrade_is_detected_and_kept() {
    let req = hyper::Request::get("/ws")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .unwrap();
    let up = upgrade(req.headers(), Present::scan(req.headers())).cloned();
    assert_eq!(up.as_ref().unwrap(), "websocket");
    let mut p = parts(req);
    prep(&mut p, &HeaderValue::from_static("1.2.3.4"), up.as_ref());
    assert_eq!(p.headers["upgrade"], "websocket");
    assert_eq!(p.headers["connection"], "upgrade");
    // Upgrade without Connection: upgrade is not an upgrade request.
    let req = hyper::Request::get("/")
        .header("upgrade", "websocket")
        .body(())
        .unwrap();
    assert!(upgrade(req.headers(), Present::scan(req.headers())).is_none());
}

#[test]
fn http2_requests_become_origin_form_with_host() {
    let mut p = parts(
        hyper::Request::get("http://api.local:8080/v1/x?y=1")
            .version(Version::HTTP_2)
            .body(())
            .unwrap(),
    );
    prep(&mut p, &HeaderValue::from_static("1.2.3.4"), None);
    assert_eq!(p.uri, "/v1/x?y=1");
    assert_eq!(p.headers["host"], "api.local:8080");
    assert_eq!(p.version, Version::HTTP_11);
}

#[test]
fn responses_lose_hop_by_hop_but_101_keeps_upgrade() {
    let mut h = HeaderMap::new();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade, x-hop"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("x-hop", HeaderValue::from_static("1"));
    h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    let mut plain = h.clone();
    prepare_response(&mut plain, false);
    assert!(plain.is_empty(), "{plain:?}");
    prepare_response(&mut h, true);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["connection"], "upgrade");
}

#[test]
fn cookies_are_found_by_exact_name() {
    let mut h = HeaderMap::new();
    h.append(COOKIE, HeaderValue::from_static("a=1; session=abc ; sessionx=no"));
    h.append(COOKIE, HeaderValue::from_static("other=2"));
    assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
    assert_eq!(cookie(&h, "other"), Some(&b"2"[..]));
    assert_eq!(cookie(&h, "sess"), None);
    assert!(idempotent(&Method::PUT) && !idempotent(&Method::POST) && !idempotent(&Method::PATCH));
}
