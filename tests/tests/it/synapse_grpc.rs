//! synapse with real gRPC peers (Python grpcio servers and clients, `tests/grpc/peer.py`):
//! what an L4 proxy does to gRPC (every call of a channel pinned to one backend), and what
//! synapse's HTTP mode does with `backend_protocol: h2c` (every call balanced). Real
//! ZooKeeper, the real binary, backends registered in ZooKeeper.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_tests::grpc::{client, Outcome};
use integration_tests::http::HttpBackend;
use integration_tests::synapse::WAIT;
use integration_tests::{
    eventually, free_port, GrpcLoad, GrpcServer, Synapse, SynapseBuilder, SynapseService, Zk, ZkCluster,
};

/// Starts synapse with the service `g` at `/services/g`, in TCP mode.
fn start_tcp(zk: &str) -> Synapse {
    SynapseBuilder::new(zk).tcp("g").start()
}

/// Starts synapse with the gRPC service `g`: HTTP mode, HTTP/2 to the backends.
fn start_h2c(zk: &str) -> Synapse {
    start_http(zk, "h2c")
}

/// Starts synapse with the service `g` in HTTP mode, `backend_protocol: protocol`.
fn start_http(zk: &str, protocol: &str) -> Synapse {
    SynapseBuilder::new(zk)
        .service(SynapseService::http("g").with("backend_protocol", protocol))
        .start()
}

/// Three grpcio servers registered under `/services/g`.
fn three_backends(zkc: &Zk) -> Vec<GrpcServer> {
    let servers: Vec<GrpcServer> = ["a", "b", "c"].iter().map(|id| GrpcServer::start(id)).collect();
    for (i, s) in servers.iter().enumerate() {
        zkc.put_backend("g", &format!("{}_000000000{i}", s.id), s.port, "");
    }
    servers
}

/// The problem the issue starts from: through a TCP-mode service, a gRPC client's one
/// connection goes to one backend, and every call of the channel with it.
#[test]
fn tcp_mode_pins_every_call_of_a_channel_to_one_backend() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let _servers = three_backends(&zkc);
    let synapse = start_tcp(&zk.connect_string());
    synapse.wait_routes("g", 3);
    let out = client(
        synapse.port("g"),
        &["unary", "--calls", "300", "--concurrency", "8"],
    );
    assert_eq!(out.failures, 0, "{:?}", out.errors);
    assert_eq!(out.ok, 300);
    assert_eq!(
        out.by_backend.len(),
        1,
        "one connection, one backend: {:?}",
        out.by_backend
    );
    drop(synapse);
}

fn assert_no_failure(out: &Outcome) {
    assert_eq!(out.failures, 0, "failed calls: {:?} {:?}", out.codes, out.errors);
}

/// One client connection, 300 unary calls: through `backend_protocol: h2c` each of three
/// backends gets a third (±5 %), all over synapse's one HTTP/2 connection per backend.
#[test]
fn one_channel_is_spread_evenly_over_three_backends() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let servers = three_backends(&zkc);
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 3);
    let out = client(
        synapse.port("g"),
        &["unary", "--calls", "300", "--concurrency", "8"],
    );
    assert_no_failure(&out);
    assert_eq!(out.ok, 300);
    println!("300 calls on one channel: {:?}", out.by_backend);
    for s in &servers {
        let n = out.by_backend.get(&s.id).copied().unwrap_or(0);
        assert!(
            (95..=105).contains(&n),
            "{} got {n} of 300: {:?}",
            s.id,
            out.by_backend
        );
    }
    assert_eq!(
        synapse.service_metric("synapse_connections_total", "g"),
        1.0,
        "one client connection"
    );
    for s in &servers {
        let backend = format!("127.0.0.1:{}", s.port);
        let ok = synapse.metric(
            "synapse_backend_grpc_responses_total",
            &[("backend", &backend), ("grpc_status", "OK"), ("service", "g")],
        );
        assert_eq!(
            ok,
            Some(out.by_backend[&s.id] as f64),
            "grpc OK count of {}",
            s.id
        );
        let conns = synapse.backend_metric("synapse_backend_connections_total", "g", s.port);
        assert_eq!(conns, 1.0, "one multiplexed connection to {}", s.id);
    }
}

/// Server-streaming and bidirectional calls of 4 MiB pass through whole and intact (with
/// HTTP/2 flow control both sides: the client reads as it goes).
#[test]
fn streaming_calls_of_a_few_megabytes_pass_through() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let _servers = three_backends(&zkc);
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 3);
    for mode in ["stream", "bidi"] {
        let out = client(synapse.port("g"), &[mode, "--count", "64", "--size", "65536"]);
        assert_no_failure(&out);
        assert_eq!(out.ok, 1, "{mode}");
        assert_eq!(out.raw["bytes"], 64 * 65536, "{mode}: every byte");
    }
    // Larger messages than a window, in both directions at once.
    let out = client(synapse.port("g"), &["bidi", "--count", "4", "--size", "3000000"]);
    assert_no_failure(&out);
    assert_eq!(out.raw["bytes"], 4 * 3_000_000);
}

/// At 1,000 calls/s on one channel: a backend leaves ZooKeeper and another joins; no call
/// fails, the one that left gets no call once the table changed (its in-flight calls
/// finish on its connection), the new one gets its share.
#[test]
fn membership_changes_under_load_fail_no_call() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let servers = three_backends(&zkc);
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 3);
    let d = GrpcServer::start("d");
    // A long deadline: on a busy machine the Python client itself lags; a lost call still
    // shows, as DEADLINE_EXCEEDED.
    let mut load = GrpcLoad::start(synapse.port("g"), 1000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2)); // load runs on the first table
    zkc.delete(&format!("/services/g/{}_0000000001", servers[1].id));
    zkc.put_backend("g", "d_0000000009", d.port, "");
    synapse.wait_routed_to("g", &[servers[0].port, servers[2].port, d.port]);
    // What b had when the new table was in place (its in-flight calls finished meanwhile).
    let b_then = servers[1].stats()["calls"].as_u64().unwrap();
    load.mark();
    std::thread::sleep(Duration::from_secs(2)); // and on the new one
    let out = load.finish();
    println!(
        "{} calls at {} calls/s: {:?}",
        out.ok, out.raw["rate"], out.phases
    );
    assert_no_failure(&out);
    assert!(out.ok >= 3000, "{} calls", out.ok);
    let b_end = servers[1].stats()["calls"].as_u64().unwrap();
    assert_eq!(b_end, b_then, "b left the table but got calls");
    // Counted as they complete: the first phase's last calls may land in the second.
    let after = &out.phases[1];
    assert!(after.get("d").copied().unwrap_or(0) > 300, "d joined: {after:?}");
    assert!(
        out.phases[0].get("b").copied().unwrap_or(0) > 300,
        "{:?}",
        out.phases[0]
    );
}

/// A backend shutting down the way nerve takes one down (deregistered, then stopped
/// gracefully: grpcio's GOAWAY, calls finished, listener closed) under load: nothing fails,
/// and synapse's connection to it is replaced by none (it is no longer in the table).
#[test]
fn a_backend_deregistered_then_stopped_fails_no_call() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let mut servers = three_backends(&zkc);
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 3);
    let mut load = GrpcLoad::start(synapse.port("g"), 500, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    zkc.delete(&format!("/services/g/{}_0000000001", servers[1].id));
    synapse.wait_routed_to("g", &[servers[0].port, servers[2].port]);
    servers[1].stop();
    load.mark();
    std::thread::sleep(Duration::from_secs(2));
    let out = load.finish();
    println!("{:?}", out.phases);
    assert_no_failure(&out);
    assert_eq!(out.phases[1].get("b"), None, "{:?}", out.phases[1]);
}

/// A backend killed under load: calls in flight on it fail with UNAVAILABLE (they may have
/// run: not retried), none hangs, and the following calls go to the others.
#[test]
fn a_killed_backend_gives_unavailable_never_a_hang() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let mut servers = three_backends(&zkc);
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 3);
    let mut load = GrpcLoad::start(synapse.port("g"), 500, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    servers[1].kill();
    load.mark();
    // Calls b answered before it died may be tallied late by a client on a busy machine:
    // the phase that says "b is dead" starts once that backlog has been read.
    std::thread::sleep(Duration::from_secs(1));
    load.mark();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let out = load.finish();
    println!(
        "{} ok, failures {:?} {:?}, phases {:?}",
        out.ok, out.codes, out.errors, out.phases
    );
    assert!(started.elapsed() < Duration::from_secs(15), "calls hung");
    let other: u64 = out
        .codes
        .iter()
        .filter(|(c, _)| *c != "UNAVAILABLE")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(other, 0, "only UNAVAILABLE: {:?} {:?}", out.codes, out.errors);
    // The calls in flight on b when it died (b's queue included, on a busy machine).
    assert!(
        out.failures <= 300,
        "{} failed: more than the calls in flight",
        out.failures
    );
    let after = &out.phases[2];
    assert_eq!(after.get("b"), None, "b is dead: {after:?}");
    assert!(
        after.get("a").copied().unwrap_or(0) > 300 && after.get("c").copied().unwrap_or(0) > 300,
        "{after:?}"
    );
}

/// `UNAVAILABLE` before any message is sent again to the next backend, within
/// `connect_attempts`; the client then gets the last backend's UNAVAILABLE.
#[test]
fn unavailable_before_a_message_is_retried_on_another_backend() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let servers = three_backends(&zkc);
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 3);
    let out = client(synapse.port("g"), &["unavailable"]);
    assert_eq!(out.codes.get("UNAVAILABLE"), Some(&1), "{:?}", out.errors);
    assert!(
        out.errors[0].contains("peer"),
        "the backend's own status: {:?}",
        out.errors
    );
    let calls: u64 = servers.iter().map(|s| s.stats()["calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, 3, "tried on each of the three backends");
    assert_eq!(
        synapse.metric(
            "synapse_http_retries_total",
            &[("reason", "refused"), ("service", "g")]
        ),
        Some(2.0)
    );
}

/// synapse's own errors reach a gRPC client as gRPC statuses: no backend → UNAVAILABLE
/// with synapse's message.
#[test]
fn synapse_errors_are_grpc_statuses() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    zkc.create("/services/g", b"");
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 0);
    let out = client(synapse.port("g"), &["unary", "--calls", "1"]);
    assert_eq!(out.codes.get("UNAVAILABLE"), Some(&1), "{:?}", out.errors);
    assert!(
        out.errors[0].contains("synapse: no backend available for service g"),
        "{:?}",
        out.errors
    );
    // A backend that is down: connect refused, then UNAVAILABLE.
    zkc.put_backend("g", "gone_0000000001", free_port(), "");
    synapse.wait_routes("g", 1);
    let out = client(synapse.port("g"), &["unary", "--calls", "1"]);
    assert_eq!(out.codes.get("UNAVAILABLE"), Some(&1), "{:?}", out.errors);
}

/// A raw gRPC call over HTTP/2 (prior knowledge) that does not enforce its own deadline:
/// the `grpc-timeout` it sends is synapse's to enforce. Returns the elapsed time, the
/// response headers and the trailers.
fn raw_call(
    port: u16,
    path: &str,
    message: &[u8],
    grpc_timeout: &str,
) -> (Duration, hyper::HeaderMap, Option<hyper::HeaderMap>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        let req = hyper::Request::post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", grpc_timeout)
            .body(Full::new(Bytes::from(framed)))
            .unwrap();
        let started = Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .expect("an answer within 30 s")
            .unwrap();
        let (head, body) = resp.into_parts();
        let collected = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .expect("the body within 30 s")
            .unwrap();
        (started.elapsed(), head.headers, collected.trailers().cloned())
    })
}

/// `grpc-timeout` is the call's deadline: past it, synapse answers DEADLINE_EXCEEDED
/// itself (whatever the client does), and the backend got the rest of the deadline and
/// saw the call cancelled.
#[test]
fn grpc_timeout_is_enforced() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let a = GrpcServer::start("a");
    zkc.put_backend("g", "a_0000000001", a.port, "");
    let synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 1);
    let (elapsed, headers, trailers) =
        raw_call(synapse.port("g"), "/synapse.test.Peer/Sleep", b"5000", "300m");
    println!("answered after {elapsed:?}: {headers:?} {trailers:?}");
    assert_eq!(
        headers["grpc-status"], "4",
        "DEADLINE_EXCEEDED, trailers-only: {headers:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(290) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let stats = eventually("the backend to see the call cancelled", WAIT, || {
        let st = a.stats();
        (st["cancelled"].as_u64() == Some(1)).then_some(st)
    });
    let seen = stats["deadline_ms"].as_u64().unwrap();
    assert!(seen <= 300 && seen > 200, "the backend's deadline: {seen} ms");
    // Within the deadline, the call goes through; trailers are passed on.
    let (_, headers, trailers) = raw_call(synapse.port("g"), "/synapse.test.Peer/Sleep", b"10", "5S");
    assert_eq!(headers.get("grpc-status"), None);
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
}

/// Plain HTTP (not gRPC) goes over HTTP/2 to the backends too, with `h2c`, and with `auto`
/// when the client speaks HTTP/2; `http1` stays HTTP/1.1.
#[test]
fn plain_http_over_http2_to_backends() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let backend = HttpBackend::start("web");
    zkc.put_backend("g", "web_0000000001", backend.port, "");
    for (protocol, http2_client, want) in [
        ("h2c", false, "HTTP/2.0"),
        ("auto", true, "HTTP/2.0"),
        ("auto", false, "HTTP/1.1"),
        ("http1", true, "HTTP/1.1"),
    ] {
        let synapse = start_http(&zk.connect_string(), protocol);
        synapse.wait_routes("g", 1);
        let before = backend.seen().len();
        let status = if http2_client {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", synapse.port("g")))
                    .await
                    .unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let req = hyper::Request::get(format!("http://web.local:{}/x?y=1", synapse.port("g")))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                resp.status().as_u16()
            })
        } else {
            integration_tests::http::get(synapse.port("g"), "/x?y=1")
                .unwrap()
                .status
        };
        assert_eq!(status, 200, "{protocol}");
        let seen = backend.seen();
        let last = &seen[before..];
        assert_eq!(last.len(), 1, "{protocol}");
        assert_eq!(last[0].version, want, "{protocol}, client h2 {http2_client}");
        assert_eq!(last[0].path, "/x?y=1");
        if want == "HTTP/2.0" && http2_client {
            // The client's :authority is kept.
            assert_eq!(last[0].headers.get("host"), None, "{:?}", last[0].headers);
        }
        drop(synapse);
    }
}

/// SIGTERM: synapse tells its HTTP/2 clients GOAWAY and lets the call in flight finish.
#[test]
fn drain_lets_a_call_in_flight_finish() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let a = GrpcServer::start("a");
    zkc.put_backend("g", "a_0000000001", a.port, "");
    let mut synapse = start_h2c(&zk.connect_string());
    synapse.wait_routes("g", 1);
    let port = synapse.port("g");
    let call = std::thread::spawn(move || client(port, &["sleep", "--sleep-ms", "1500"]));
    eventually("the call to reach the backend", WAIT, || {
        (a.stats()["calls"].as_u64() == Some(1)).then_some(())
    });
    synapse.signal("TERM");
    let out = call.join().unwrap();
    assert_eq!(out.ok, 1, "{:?} {:?}", out.codes, out.errors);
    synapse.wait_exit(WAIT);
}
