//! synapse's HTTP mode end to end: pooling, headers, upgrades, streaming, retries and their
//! limits, timeouts, shared listeners routed by Host and path, header and cookie hashing,
//! 5xx ejection and the HTTP metrics. Real ZooKeeper, real HTTP backends (hyper), the real
//! binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration_tests::http::{self as h, HttpBackend, HttpConn, Mode, TestBody};
use integration_tests::{eventually, free_port, SynapseBuilder, SynapseService, Zk, ZkCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// A `mode: http` service (connect timeout 500 ms) on `/services/<name>`, its own port.
fn http(name: &str) -> SynapseService {
    SynapseService::http(name)
}

fn get(port: u16, path: &str) -> h::Answer {
    h::get(port, path).unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"))
}

/// A port with nothing listening.
fn dead_port() -> u16 {
    free_port()
}

/// Connections are pooled: many client connections, few backend connections. Headers:
/// X-Forwarded-For appended, X-Forwarded-Proto added, hop-by-hop headers removed both ways.
/// synapse's own answers: 503 without a backend, 504 on `request_timeout`. HTTP/2 prior
/// knowledge from clients.
#[test]
fn pooling_headers_and_own_answers() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let a = HttpBackend::start("a");
    zkc.put_backend("web", "a_0000000001", a.port, "");
    zkc.put_backend("slow", "a_0000000001", a.port, "");
    zkc.create("/services/empty", b"");
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .http("web")
        .http("empty")
        .service(http("slow").with("request_timeout", "300ms"))
        .start();
    synapse.wait_routes("web", 1);
    synapse.wait_routes("slow", 1);
    synapse.wait_routes("empty", 0);
    let web = synapse.port("web");

    // 40 requests, each on its own client connection, one after the other: one backend
    // connection serves them all.
    for i in 0..40 {
        let r = get(web, &format!("/n/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend().as_deref(), Some("a"));
    }
    assert!(
        a.connections() <= 2,
        "40 requests took {} backend connections: not pooled",
        a.connections()
    );
    println!(
        "40 requests on 40 client connections used {} backend connection(s)",
        a.connections()
    );

    // Forwarded headers and hop-by-hop removal, request side.
    let mut conn = HttpConn::open(web).unwrap();
    let req = hyper::Request::get("/headers")
        .header("host", "web.local")
        .header("x-forwarded-for", "10.1.1.1")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "do not forward")
        .header("keep-alive", "timeout=9")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "kept")
        .body(TestBody::empty())
        .unwrap();
    let r = conn.send(req).unwrap();
    assert_eq!(r.status, 200);
    let seen = r.json()["headers"].clone();
    assert_eq!(
        seen["x-forwarded-for"],
        serde_json::json!(["10.1.1.1, 127.0.0.1"]),
        "{seen}"
    );
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["http"]), "{seen}");
    assert_eq!(seen["host"], serde_json::json!(["web.local"]), "{seen}");
    assert_eq!(seen["x-end-to-end"], serde_json::json!(["kept"]), "{seen}");
    for hop in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(seen.get(hop).is_none(), "{hop} reached the backend: {seen}");
    }
    // Response side.
    let r = conn.get("web.local", "/hop").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-public"], "yes");
    assert!(r.headers.get("x-private").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);

    // An HTTP/1.0 request without Host: the backend gets one (its own address).
    let mut s = TcpStream::connect(("127.0.0.1", web)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(
        out.contains(&format!("\"host\":[\"127.0.0.1:{}\"]", a.port)),
        "{out}"
    );

    // No backend: 503 with a clear body and Retry-After.
    let r = get(synapse.port("empty"), "/");
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("no backend available for service empty"),
        "{}",
        r.text()
    );
    assert_eq!(r.headers["retry-after"], "1");

    // request_timeout: 504, in about that time.
    let started = Instant::now();
    let r = get(synapse.port("slow"), "/delay/3000");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(took < Duration::from_millis(2500), "504 after {took:?}");

    // HTTP/2 with prior knowledge (h2c).
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{web}/h2"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("2 200"),
        "curl h2c: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"backend\":\"a\""), "{text}");

    assert_eq!(
        synapse
            .metric(
                "synapse_http_proxy_errors_total",
                &[("reason", "no_backend"), ("service", "empty")]
            )
            .unwrap_or(0.0),
        1.0
    );
    assert_eq!(
        synapse
            .metric(
                "synapse_http_proxy_errors_total",
                &[("reason", "timeout"), ("service", "slow")]
            )
            .unwrap_or(0.0),
        1.0
    );
}

/// Retries: a connect failure moves on whatever the method; an idempotent request is sent
/// again after the backend closed without answering or `try_timeout`; a POST whose bytes
/// were sent is not; the retry budget caps retries.
#[test]
fn retries_and_their_limits() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let good = HttpBackend::start("good");
    let closer = HttpBackend::start("closer");
    closer.set_mode(Mode::Close);
    let slow = HttpBackend::start("slow");
    slow.set_mode(Mode::Delay(3000));
    let (u1, u2) = (HttpBackend::start("u1"), HttpBackend::start("u2"));
    u1.set_mode(Mode::Status(503));
    u2.set_mode(Mode::Status(503));
    zkc.put_backend("connfail", "dead_0000000001", dead_port(), "");
    zkc.put_backend("connfail", "good_0000000002", good.port, "");
    zkc.put_backend("closing", "closer_0000000001", closer.port, "");
    zkc.put_backend("closing", "good_0000000002", good.port, "");
    zkc.put_backend("timing", "slow_0000000001", slow.port, "");
    zkc.put_backend("timing", "good_0000000002", good.port, "");
    zkc.put_backend("budget", "u1_0000000001", u1.port, "");
    zkc.put_backend("budget", "u2_0000000002", u2.port, "");
    // Ejection off: every request's first pick alternates between the two backends.
    let no_eject = |name: &str| http(name).with("outlier", json!({"consecutive_failures": 0}));
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .service(no_eject("connfail"))
        .service(no_eject("closing"))
        .service(no_eject("timing").with("try_timeout", "300ms"))
        .service(no_eject("budget").with("retry_budget", json!({"percent": 0, "min_per_second": 1})))
        .start();
    for s in ["connfail", "closing", "timing", "budget"] {
        synapse.wait_routes(s, 2);
    }

    // Connect failures: retried for GET and POST alike (nothing was sent).
    let mut conn = HttpConn::open(synapse.port("connfail")).unwrap();
    for i in 0..10 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let r = conn
            .send(h::request(method, "x", "/c", TestBody::text("payload")))
            .unwrap();
        assert_eq!(r.status, 200, "{method}: {}", r.text());
    }
    assert_eq!(good.requests(), 10);

    // The backend closes without answering: GETs are retried on the other one.
    let port = synapse.port("closing");
    for _ in 0..10 {
        let r = get(port, "/g");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend().as_deref(), Some("good"));
    }
    let closed_gets = closer.requests();
    assert!(
        closed_gets >= 3,
        "round-robin sent {closed_gets} of 10 GETs to the closing backend first"
    );
    assert!(
        synapse
            .metric(
                "synapse_http_retries_total",
                &[("reason", "error"), ("service", "closing")]
            )
            .unwrap_or(0.0)
            >= closed_gets as f64
    );

    // POSTs with a body are not retried once sent: 502, and no other backend sees them.
    let good_before = good.requests();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..10 {
        let r = HttpConn::open(port)
            .unwrap()
            .send(h::request("POST", "x", "/p", TestBody::text("not twice")))
            .unwrap();
        match r.status {
            200 => ok += 1,
            502 => {
                assert!(r.text().contains("backend failed"), "{}", r.text());
                bad += 1
            }
            other => panic!("POST got {other}: {}", r.text()),
        }
    }
    let posts_to_closer = closer.requests() - closed_gets;
    let posts_to_good = good.requests() - good_before;
    println!("10 POSTs: {ok} answered, {bad} × 502; closer saw {posts_to_closer}, good saw {posts_to_good}");
    assert!(
        bad >= 3,
        "round-robin sent {bad} of 10 POSTs to the closing backend"
    );
    assert_eq!(bad, posts_to_closer, "each 502 is a POST the closing backend got");
    assert_eq!(ok, posts_to_good, "no POST went to a second backend");

    // try_timeout: the slow backend's tries give up after 300 ms and go to the other one.
    let port = synapse.port("timing");
    for _ in 0..6 {
        let started = Instant::now();
        let r = get(port, "/t");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend().as_deref(), Some("good"));
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "took {:?}",
            started.elapsed()
        );
    }
    assert!(
        synapse
            .metric(
                "synapse_http_retries_total",
                &[("reason", "timeout"), ("service", "timing")]
            )
            .unwrap_or(0.0)
            >= 2.0
    );

    // Budget: 1 retry/s over 10 s, no share of requests. Both backends answer 503: each
    // request could retry once, only the budget's worth do.
    let port = synapse.port("budget");
    for _ in 0..30 {
        let r = get(port, "/b");
        assert_eq!(r.status, 503, "the backend's own 503 goes to the client");
        assert!(r.backend().is_some(), "a backend's answer, not synapse's");
    }
    let retries = synapse
        .metric(
            "synapse_http_retries_total",
            &[("reason", "status"), ("service", "budget")],
        )
        .unwrap_or(0.0);
    let refused = synapse.service_metric("synapse_http_retry_budget_exhausted_total", "budget");
    println!("budget: {retries} retries, {refused} refused over 30 requests");
    assert!(
        (1.0..=12.0).contains(&retries),
        "{retries} retries: the budget allows about 10"
    );
    assert!(refused >= 18.0, "{refused} refused");
    assert_eq!(u1.requests() + u2.requests(), 30 + retries as usize);
}

/// WebSocket-style upgrades pass through; 80 MB bodies stream both ways without synapse's
/// memory growing by anything like their size.
#[test]
fn upgrades_and_streaming() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let a = HttpBackend::start("a");
    zkc.put_backend("ws", "a_0000000001", a.port, "");
    let synapse = SynapseBuilder::new(&zk.connect_string()).http("ws").start();
    synapse.wait_routes("ws", 1);
    let port = synapse.port("ws");

    // Upgrade, then bytes both ways on the same connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    let mut got = read_exactly(&mut s, 2);
    assert_eq!(got, b"a:");
    for msg in [&b"hello"[..], b"over the upgrade", &[0u8, 1, 2, 255]] {
        s.write_all(msg).unwrap();
        got = read_exactly(&mut s, msg.len());
        assert_eq!(got, msg);
    }
    drop(s);

    // 80 MB down then 80 MB up, each on one request.
    let size: u64 = 80 * 1024 * 1024;
    let pid = synapse.agent().pid();
    let before = vm_kb(pid, "VmRSS");
    let mut conn = HttpConn::open(port).unwrap();
    let r = conn
        .send_counting(h::request(
            "GET",
            "x",
            &format!("/stream/{size}"),
            TestBody::empty(),
        ))
        .unwrap();
    assert_eq!((r.status, r.body_len), (200, size));
    let r = conn
        .send(h::request("POST", "x", "/upload", TestBody::zeros(size)))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_len"], size);
    let peak = vm_kb(pid, "VmHWM");
    println!("synapse RSS before {before} kB, peak after 2 × 80 MB {peak} kB");
    assert!(
        peak < before + 40 * 1024,
        "synapse's peak RSS grew from {before} kB to {peak} kB while streaming 80 MB bodies"
    );
}

/// A shared listener routes by Host (exact, wildcard) and longest path prefix; unknown
/// hosts get 404; a service with its own port is reachable both ways.
#[test]
fn shared_listener_routes_by_host_and_path() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let (api, v2, web, fallback) = (
        HttpBackend::start("api"),
        HttpBackend::start("v2"),
        HttpBackend::start("web"),
        HttpBackend::start("fallback"),
    );
    zkc.put_backend("api", "api_0000000001", api.port, "");
    zkc.put_backend("apiv2", "v2_0000000001", v2.port, "");
    zkc.put_backend("web", "web_0000000001", web.port, "");
    zkc.put_backend("fallback", "fb_0000000001", fallback.port, "");
    let shared = free_port();
    // This one runs on a multi-thread runtime; the others on the default single thread.
    let routes = json!([
        {"host": "api.local", "service": "api"},
        {"host": "api.local", "path_prefix": "/v2", "service": "apiv2"},
        {"host": "*.web.local", "service": "web"},
        {"path_prefix": "/static/", "service": "fallback"},
    ]);
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .top("worker_threads", 2)
        .top("http_listeners", json!([{"listen": shared, "routes": routes}]))
        .http("api")
        .service(http("apiv2").no_listen())
        .service(http("web").no_listen())
        .service(http("fallback").no_listen())
        .start();
    for s in ["api", "apiv2", "web", "fallback"] {
        synapse.wait_routes(s, 1);
    }
    let mut conn = HttpConn::open(shared).unwrap();
    let mut who = |host: &str, path: &str| {
        let r = conn.get(host, path).unwrap();
        (r.status, r.backend().unwrap_or_else(|| r.text()))
    };
    assert_eq!(who("api.local", "/v1/users"), (200, "api".into()));
    assert_eq!(who("API.local:8080", "/v2/users"), (200, "v2".into()));
    assert_eq!(who("api.local", "/v2"), (200, "v2".into()));
    assert_eq!(who("www.web.local", "/"), (200, "web".into()));
    assert_eq!(who("a.b.web.local", "/x"), (200, "web".into()));
    assert_eq!(who("anything", "/static/app.js"), (200, "fallback".into()));
    assert_eq!(
        who("api.local", "/static/app.js"),
        (200, "api".into()),
        "a host's own routes first"
    );
    let (status, body) = who("unknown.local", "/v1");
    assert_eq!(status, 404);
    assert!(body.contains("no route for host \"unknown.local\""), "{body}");
    // The api service is also on its own port, whatever the Host.
    assert_eq!(
        get(synapse.port("api"), "/v2/x").backend().as_deref(),
        Some("api")
    );
    assert_eq!(
        synapse.metric(
            "synapse_http_unrouted_total",
            &[("listen", &format!("127.0.0.1:{shared}"))]
        ),
        Some(1.0)
    );
}

/// `hash_on: header:` and `cookie:` stick a key to a backend; a backend answering 5xx is
/// ejected; requests are counted by status class, per service and per backend.
#[test]
fn hashing_ejection_and_metrics() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let backends: Vec<HttpBackend> = (0..4).map(|i| HttpBackend::start(&format!("b{i}"))).collect();
    for (i, b) in backends.iter().enumerate() {
        zkc.put_backend("sticky", &format!("b{i}_000000000{i}"), b.port, "");
        zkc.put_backend("cookie", &format!("b{i}_000000000{i}"), b.port, "");
    }
    let (bad, fine) = (HttpBackend::start("bad"), HttpBackend::start("fine"));
    bad.set_mode(Mode::Status(500));
    zkc.put_backend("eject", "bad_0000000001", bad.port, "");
    zkc.put_backend("eject", "fine_0000000002", fine.port, "");
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .service(
            http("sticky")
                .with("balance", "hash")
                .with("hash_on", "header:X-User"),
        )
        .service(
            http("cookie")
                .with("balance", "hash")
                .with("hash_on", "cookie:session"),
        )
        .service(http("eject").with(
            "outlier",
            json!({"consecutive_failures": 3, "base_ejection": "30s"}),
        ))
        .start();
    synapse.wait_routes("sticky", 4);
    synapse.wait_routes("cookie", 4);
    synapse.wait_routes("eject", 2);

    let mut conn = HttpConn::open(synapse.port("sticky")).unwrap();
    let mut owner: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for u in 0..20 {
            let user = format!("user-{u}");
            let req = hyper::Request::get("/s")
                .header("host", "x")
                .header("x-user", &user)
                .body(TestBody::empty())
                .unwrap();
            let b = conn.send(req).unwrap().backend().unwrap();
            let first = owner.entry(user.clone()).or_insert_with(|| b.clone());
            assert_eq!(*first, b, "{user} moved from {first} to {b} in round {round}");
        }
    }
    let spread: std::collections::BTreeSet<&String> = owner.values().collect();
    assert!(
        spread.len() >= 3,
        "20 users on {} backends: {owner:?}",
        spread.len()
    );

    let mut conn = HttpConn::open(synapse.port("cookie")).unwrap();
    let mut owner: HashMap<String, String> = HashMap::new();
    for _ in 0..3 {
        for u in 0..12 {
            let req = hyper::Request::get("/c")
                .header("host", "x")
                .header("cookie", format!("theme=dark; session=s{u}; other=1"))
                .body(TestBody::empty())
                .unwrap();
            let b = conn.send(req).unwrap().backend().unwrap();
            assert_eq!(owner.entry(format!("s{u}")).or_insert_with(|| b.clone()), &b);
        }
    }

    // 5xx ejection: after 3 × 500 in a row the bad backend gets no more requests.
    let port = synapse.port("eject");
    let mut conn = HttpConn::open(port).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(conn.get("x", "/e").unwrap().status);
    }
    let errors = statuses.iter().filter(|s| **s == 500).count();
    assert_eq!(errors, 3, "exactly 3 × 500 before ejection: {statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 200), "{statuses:?}");
    let be = |name: &str, b: &HttpBackend| synapse.backend_metric(name, "eject", b.port);
    assert_eq!(be("synapse_backend_ejections_total", &bad), 1.0);

    // Metrics by class, per service and per backend.
    let class = |c: &str| {
        synapse
            .metric(
                "synapse_http_requests_total",
                &[("code_class", c), ("service", "eject")],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(class("5xx"), 3.0);
    assert_eq!(class("2xx"), 17.0);
    let backend_class = |b: &HttpBackend, c: &str| {
        let backend = format!("127.0.0.1:{}", b.port);
        synapse
            .metric(
                "synapse_backend_http_responses_total",
                &[("backend", &backend), ("code_class", c), ("service", "eject")],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(backend_class(&bad, "5xx"), 3.0);
    assert_eq!(backend_class(&fine, "2xx"), 17.0);
    assert_eq!(
        synapse.service_metric("synapse_http_response_seconds_count", "eject"),
        20.0
    );
    assert_eq!(be("synapse_backend_http_response_seconds_count", &fine), 17.0);
}

/// Reads an HTTP response head (up to the blank line) byte by byte.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("response head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("bytes through the upgrade");
    buf
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`).
fn vm_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Backends join and leave 20 times a second while keep-alive clients send requests: none
/// fails (pooled connections to a removed backend are simply no longer picked).
#[test]
fn membership_churn_fails_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let backends: Vec<HttpBackend> = (0..6).map(|i| HttpBackend::start(&format!("b{i}"))).collect();
    let id = |i: usize| format!("b{i}_{:010}", i + 1);
    for (i, b) in backends.iter().enumerate().take(3) {
        zkc.put_backend("churn", &id(i), b.port, "");
    }
    let synapse = SynapseBuilder::new(&zk.connect_string()).http("churn").start();
    synapse.wait_routes("churn", 3);
    let port = synapse.port("churn");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                let mut conn = HttpConn::open(port).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Some requests on fresh client connections too.
                    if n % 10 == 0 {
                        conn = HttpConn::open(port).unwrap();
                    }
                    let body = if n % 3 == 0 {
                        TestBody::text("a small body")
                    } else {
                        TestBody::empty()
                    };
                    let method = if n % 2 == 0 { "POST" } else { "GET" };
                    match conn.send(h::request(method, "x", &format!("/c{c}/{n}"), body)) {
                        Ok(r) if r.status == 200 => ok += 1,
                        other => failed.push(format!("{method} {n}: {other:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    // b0 stays; b1..b5 flip in turn every 50 ms, for 4 s.
    let mut member: Vec<bool> = (0..6).map(|i| i < 3).collect();
    let started = Instant::now();
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let i = 1 + changes % 5;
        if member[i] {
            zkc.delete(&format!("/services/churn/{}", id(i)));
        } else {
            zkc.put_backend("churn", &id(i), backends[i].port, "");
        }
        member[i] = !member[i];
        changes += 1;
        let due = started + Duration::from_millis(50) * changes as u32;
        if let Some(pause) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    let served: Vec<usize> = backends.iter().map(HttpBackend::requests).collect();
    println!(
        "{changes} membership changes in 4 s; {ok} requests answered, {} failed; per backend {served:?}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 200, "only {ok} requests in 4 s");
    assert!(
        served[1..].iter().filter(|n| **n > 0).count() >= 3,
        "the churning backends got traffic: {served:?}"
    );
}

/// SIGTERM: a client connection accepted before it but with no request yet (the state of a
/// connection taken from the listen backlog at shutdown) gets its first request answered,
/// with `Connection: close`, instead of being closed unanswered; the listener is closed at
/// once (new clients are refused, not queued and reset at exit).
#[test]
fn sigterm_answers_the_first_request_of_a_fresh_connection() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let b = HttpBackend::start("b1");
    zkc.put_backend("web", "b1_0000000001", b.port, "");
    let mut s = SynapseBuilder::new(&zk.connect_string())
        .drain_timeout(Duration::from_secs(10))
        .http("web")
        .start();
    s.wait_routes("web", 1);
    let port = s.port("web");
    let before = s.service_metric("synapse_connections_total", "web");
    let mut fresh = TcpStream::connect(("127.0.0.1", port)).unwrap();
    eventually("synapse accepted the connection", WAIT, || {
        (s.service_metric("synapse_connections_total", "web") > before).then_some(())
    });
    s.signal("TERM");
    eventually("the listener is closed", WAIT, || {
        TcpStream::connect(("127.0.0.1", port)).is_err().then_some(())
    });
    fresh
        .write_all(b"GET /x HTTP/1.1\r\nHost: web.local\r\n\r\n")
        .unwrap();
    fresh.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = String::new();
    let _ = fresh.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "answered: {answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    let status = s.wait_exit(WAIT);
    assert!(status.success(), "synapse exits cleanly: {status}");
}
