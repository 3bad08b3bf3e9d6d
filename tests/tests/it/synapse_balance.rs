//! synapse's balancing end to end: payload weights, backups, every policy, outlier ejection
//! and the panic threshold, live state across table rebuilds, connections to removed
//! backends, and a membership-churn load test. Real ZooKeeper, real TCP backends, the real
//! binary; what synapse did is read from its admin API and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::agents::{exchange, who};
use integration_tests::{
    eventually, free_port, Backend, EchoBackend, Synapse, SynapseBuilder, SynapseService, Zk, ZkCluster,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Which backend answered each of `n` connections through `port` (`<failed>` when none).
fn tally(port: u16, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = who(port).unwrap_or_else(|| "<failed>".to_string());
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn count(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

/// A connection through `port` that stays open (the backend answers only after our EOF).
fn hold(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"held").unwrap();
    s
}

/// `who`, from the client address `source` (any 127.0.0.0/8 address works on Linux).
fn who_from(source: Ipv4Addr, port: u16) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let std = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((source, 0))).ok()?;
        let s = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .ok()?;
        s.into_std().ok()
    })?;
    std.set_nonblocking(false).ok()?;
    let mut s = std;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"hello").ok()?;
    s.shutdown(Shutdown::Write).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (name, len) = out.split_once(':')?;
    (len == "5").then(|| name.to_string())
}

/// Weight 0 gets nothing, a weight-1 canary next to weight 99 gets 1 %, `disabled` gets
/// nothing, and nodes without a weight weigh `default_weight` (255): as much as a node
/// written with weight 255.
#[test]
fn payload_weights_are_honoured() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let (zero, canary, main, off) = (
        Backend::start("zero"),
        Backend::start("canary"),
        Backend::start("main"),
        Backend::start("off"),
    );
    zkc.put_backend("w", "zero_0000000001", zero.port, "\"weight\":0");
    zkc.put_backend("w", "canary_0000000002", canary.port, "\"weight\":1");
    zkc.put_backend("w", "main_0000000003", main.port, "\"weight\":99");
    zkc.put_backend(
        "w",
        "off_0000000004",
        off.port,
        "\"weight\":50,\"haproxy_server_options\":\"check disabled\"",
    );
    let (plain, full) = (Backend::start("plain"), Backend::start("full"));
    zkc.put_backend("mix", "plain_0000000001", plain.port, "");
    zkc.put_backend("mix", "full_0000000002", full.port, "\"weight\":255");

    let synapse = SynapseBuilder::new(&cs).tcp("w").tcp("mix").start();
    synapse.wait_routed_to("w", &[zero.port, canary.port, main.port, off.port]);
    synapse.wait_routed_to("mix", &[plain.port, full.port]);

    let n = 2000;
    let counts = tally(synapse.port("w"), n);
    println!("weights 0 / 1 / 99 / 50+disabled over {n} connections: {counts:?}");
    assert_eq!(count(&counts, "<failed>"), 0, "{counts:?}");
    assert_eq!(count(&counts, "zero"), 0, "weight 0 gets nothing: {counts:?}");
    assert_eq!(count(&counts, "off"), 0, "disabled gets nothing: {counts:?}");
    let c = count(&counts, "canary");
    // 1 % of 2000 = 20; round-robin is exact over a whole schedule.
    assert!((10..=30).contains(&c), "1 % canary got {c} of {n}: {counts:?}");

    let counts = tally(synapse.port("mix"), 200);
    println!("no weight vs weight 255 over 200 connections: {counts:?}");
    let p = count(&counts, "plain");
    assert!((90..=110).contains(&p), "even split: {counts:?}");
    assert_eq!(count(&counts, "full"), 200 - p, "{counts:?}");

    let canary_entry = synapse.backend("w", canary.port).expect("listed");
    assert_eq!(canary_entry["weight"], 1);
    assert_eq!(canary_entry["effective_weight"], 1);
    let off_entry = synapse.backend("w", off.port).expect("listed");
    assert_eq!(off_entry["effective_weight"], 0);
    assert_eq!(
        synapse.backend("mix", plain.port).unwrap()["effective_weight"],
        255
    );
}

/// A `backup` backend takes traffic only while the primary is down, and gives it back when
/// the primary returns; no client connection fails on the way.
#[test]
fn backup_is_used_only_while_the_primary_is_down() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let primary = Backend::start("primary");
    let backup = Backend::start("backup");
    let primary_port = primary.port;
    zkc.put_backend("web", "primary_0000000001", primary_port, "");
    zkc.put_backend(
        "web",
        "backup_0000000002",
        backup.port,
        "\"haproxy_server_options\":\"backup\"",
    );
    let synapse = SynapseBuilder::new(&cs).tcp("web").start();
    let port = synapse.port("web");
    synapse.wait_routed_to("web", &[primary_port, backup.port]);

    let counts = tally(port, 50);
    assert_eq!(count(&counts, "primary"), 50, "primary up: {counts:?}");

    drop(primary);
    let counts = tally(port, 50);
    assert_eq!(count(&counts, "backup"), 50, "primary down: {counts:?}");

    let _primary = Backend::start_on("primary", primary_port);
    let back = Instant::now();
    eventually("traffic returns to the primary", WAIT, || {
        (who(port)? == "primary").then_some(())
    });
    println!("primary back -> routed to it again after {:?}", back.elapsed());
    let counts = tally(port, 50);
    assert_eq!(count(&counts, "primary"), 50, "primary back: {counts:?}");
    assert_eq!(synapse.backend("web", backup.port).unwrap()["backup"], true);
}

/// Each policy is selectable and routes: `least_conn` sends new connections to the backend
/// with fewer open ones (whose count survived the table rebuild that added the other),
/// `hash` on `client_ip` keeps each client address on one backend, `random` spreads,
/// `p2c_ewma` routes.
#[test]
fn every_policy_is_selectable_and_routes() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let (x, y, z) = (Backend::start("x"), Backend::start("y"), Backend::start("z"));
    for svc in ["rnd", "hash", "p2c"] {
        for (i, b) in [&x, &y, &z].iter().enumerate() {
            zkc.put_backend(svc, &format!("{}_000000000{i}", b.name), b.port, "");
        }
    }
    zkc.put_backend("lc", "x_0000000001", x.port, "");
    let synapse = SynapseBuilder::new(&cs)
        .service(SynapseService::tcp("lc").with("balance", "least_conn"))
        .service(SynapseService::tcp("rnd").with("balance", "random"))
        .service(
            SynapseService::tcp("hash")
                .with("balance", "hash")
                .with("hash_on", "client_ip"),
        )
        .service(SynapseService::tcp("p2c").with("balance", "p2c_ewma"))
        .start();
    for svc in ["rnd", "hash", "p2c"] {
        synapse.wait_routed_to(svc, &[x.port, y.port, z.port]);
    }

    // least_conn: four long connections on x, then y joins.
    synapse.wait_routed_to("lc", &[x.port]);
    let held: Vec<TcpStream> = (0..4).map(|_| hold(synapse.port("lc"))).collect();
    eventually("four connections open on x", WAIT, || {
        (synapse.backend("lc", x.port)?["active_connections"] == 4).then_some(())
    });
    let updates = synapse.service_metric("synapse_route_updates_total", "lc");
    zkc.put_backend("lc", "y_0000000002", y.port, "");
    synapse.wait_routed_to("lc", &[x.port, y.port]);
    assert!(synapse.service_metric("synapse_route_updates_total", "lc") > updates);
    assert_eq!(
        synapse.backend("lc", x.port).unwrap()["active_connections"],
        4,
        "x's open connections are still counted in the new table"
    );
    let counts = tally(synapse.port("lc"), 20);
    assert_eq!(
        count(&counts, "y"),
        20,
        "least_conn avoids the busy backend: {counts:?}"
    );
    drop(held);
    assert_eq!(synapse.service("lc")["balance"], "least_conn");

    // hash on client_ip: one backend per client address; different addresses spread.
    let port = synapse.port("hash");
    let counts = tally(port, 30);
    assert_eq!(counts.len(), 1, "one client address, one backend: {counts:?}");
    let mut used = BTreeSet::new();
    for k in 2..22u8 {
        let source = Ipv4Addr::new(127, 0, 0, k);
        let first = who_from(source, port).expect("routed");
        for _ in 0..3 {
            assert_eq!(who_from(source, port).as_ref(), Some(&first), "{source} sticks");
        }
        used.insert(first);
    }
    assert!(used.len() >= 2, "20 client addresses all on {used:?}");
    assert_eq!(synapse.service("hash")["hash_on"], "client_ip");

    // random: each of three backends gets its third, roughly.
    let counts = tally(synapse.port("rnd"), 600);
    println!("random over 600: {counts:?}");
    for name in ["x", "y", "z"] {
        let c = count(&counts, name);
        assert!((140..=260).contains(&c), "{name}: {c} of 600: {counts:?}");
    }

    // p2c_ewma routes (its preferences depend on latencies, equal here).
    let counts = tally(synapse.port("p2c"), 50);
    assert_eq!(count(&counts, "<failed>"), 0, "{counts:?}");
    assert_eq!(synapse.service("p2c")["balance"], "p2c_ewma");
}

/// A backend that refuses connections is ejected after `consecutive_failures`, gets no
/// connection attempt during its ejection, is retried after it, and (failing again) is
/// ejected for twice as long. Clients never notice.
#[test]
fn consecutive_connect_failures_eject_for_a_growing_time() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let good = Backend::start("good");
    let dead = free_port(); // nothing listens there
    zkc.put_backend("web", "good_0000000001", good.port, "");
    zkc.put_backend("web", "dead_0000000002", dead, "");
    let synapse = SynapseBuilder::new(&cs)
        .service(SynapseService::tcp("web").with(
            "outlier",
            json!({"consecutive_failures": 3, "base_ejection": "4s", "max_ejection": "30s"}),
        ))
        .start();
    let port = synapse.port("web");
    synapse.wait_routed_to("web", &[good.port, dead]);
    let ejections = |s: &Synapse| s.backend_metric("synapse_backend_ejections_total", "web", dead);
    let failures = |s: &Synapse| s.backend_metric("synapse_backend_connect_failures_total", "web", dead);

    eventually("the dead backend is ejected", WAIT, || {
        assert_eq!(who(port).as_deref(), Some("good"), "clients are served");
        (ejections(&synapse) == 1.0).then_some(())
    });
    let ejected_at = Instant::now();
    assert_eq!(failures(&synapse), 3.0);
    assert_eq!(
        synapse.backend_metric("synapse_backend_ejected", "web", dead),
        1.0
    );
    let entry = synapse.backend("web", dead).unwrap();
    assert_eq!(entry["ejected"], true, "{entry}");

    // During the ejection: not one attempt.
    let counts = tally(port, 100);
    assert!(
        ejected_at.elapsed() < Duration::from_secs(3),
        "the test itself was too slow"
    );
    assert_eq!(count(&counts, "good"), 100, "{counts:?}");
    assert_eq!(failures(&synapse), 3.0, "attempts during the ejection");

    // After it: one attempt (it fails), and a second ejection, twice as long.
    eventually("the dead backend is retried and ejected again", WAIT, || {
        assert_eq!(who(port).as_deref(), Some("good"), "clients are served");
        (ejections(&synapse) == 2.0).then_some(())
    });
    let retried_after = ejected_at.elapsed();
    println!("ejected for 4 s: retried after {retried_after:?}");
    assert!(retried_after >= Duration::from_secs(3), "{retried_after:?}");
    assert_eq!(failures(&synapse), 4.0, "one attempt after the ejection");
    let remaining = synapse.backend("web", dead).unwrap()["ejected_remaining_ms"]
        .as_u64()
        .unwrap();
    assert!(remaining > 5000, "second ejection is 8 s: {remaining} ms left");
    assert_eq!(
        synapse.backend_metric("synapse_backend_ejected", "web", good.port),
        0.0
    );
}

/// Below `panic_threshold_percent` usable backends, ejection is ignored and every backend is
/// tried; with the threshold at 0 the ejected ones stay out. When every backend is ejected,
/// the first to come back serves at once, before its ejection ends.
#[test]
fn panic_threshold_ignores_ejection_when_too_few_are_usable() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let alive = Backend::start("alive");
    let (dead1, dead2) = (free_port(), free_port());
    for svc in ["panic", "nopanic"] {
        zkc.put_backend(svc, "alive_0000000001", alive.port, "");
        zkc.put_backend(svc, "dead1_0000000002", dead1, "");
        zkc.put_backend(svc, "dead2_0000000003", dead2, "");
    }
    let (gone1, gone2) = (free_port(), free_port());
    zkc.put_backend("alldead", "gone1_0000000001", gone1, "");
    zkc.put_backend("alldead", "gone2_0000000002", gone2, "");
    let outlier = |panic: Option<u32>| {
        let mut o = json!({"consecutive_failures": 2, "base_ejection": "30s", "max_ejected_percent": 100});
        if let Some(p) = panic {
            o["panic_threshold_percent"] = p.into();
        }
        o
    };
    let synapse = SynapseBuilder::new(&cs)
        .service(SynapseService::tcp("panic").with("outlier", outlier(Some(50))))
        .service(SynapseService::tcp("nopanic").with("outlier", outlier(Some(0))))
        .service(SynapseService::tcp("alldead").with("outlier", outlier(None)))
        .start();
    synapse.wait_routed_to("panic", &[alive.port, dead1, dead2]);
    synapse.wait_routed_to("nopanic", &[alive.port, dead1, dead2]);
    synapse.wait_routed_to("alldead", &[gone1, gone2]);

    for svc in ["panic", "nopanic"] {
        let counts = tally(synapse.port(svc), 60);
        assert_eq!(count(&counts, "alive"), 60, "{svc}: {counts:?}");
        for dead in [dead1, dead2] {
            assert_eq!(
                synapse.backend_metric("synapse_backend_ejections_total", svc, dead),
                1.0,
                "{svc}: {dead} ejected"
            );
        }
    }
    let attempts = |svc: &str| {
        synapse.backend_metric("synapse_backend_connect_failures_total", svc, dead1)
            + synapse.backend_metric("synapse_backend_connect_failures_total", svc, dead2)
    };
    println!(
        "failed attempts on the two ejected backends: {} with panic, {} without",
        attempts("panic"),
        attempts("nopanic")
    );
    assert_eq!(attempts("nopanic"), 4.0, "ejected backends left alone");
    assert!(
        attempts("panic") > 10.0,
        "1/3 usable < 50 %: ejected backends still tried"
    );
    assert_eq!(synapse.service("panic")["panic"], true);
    assert_eq!(synapse.service("nopanic")["panic"], false);

    // Every backend failing: both are ejected, and still tried.
    let port = synapse.port("alldead");
    eventually("both ejected", WAIT, || {
        assert_eq!(who(port), None);
        let e = synapse.backend_metric("synapse_backend_ejections_total", "alldead", gone1)
            + synapse.backend_metric("synapse_backend_ejections_total", "alldead", gone2);
        (e == 2.0).then_some(())
    });
    let _back = Backend::start_on("back", gone1);
    assert_eq!(
        who(port).as_deref(),
        Some("back"),
        "served during its 30 s ejection"
    );
}

/// A connection to a backend that leaves the table keeps flowing (default `removal_grace`),
/// new connections go to the remaining backends at once, and with a short `removal_grace`
/// the old connection is closed when it ends.
#[test]
fn connections_to_a_removed_backend_finish_within_the_grace() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let echo = EchoBackend::start();
    let next = Backend::start("next");
    for svc in ["keep", "grace"] {
        zkc.put_backend(svc, "echo_0000000001", echo.port, "");
    }
    let synapse = SynapseBuilder::new(&cs)
        .tcp("keep")
        .service(SynapseService::tcp("grace").with("removal_grace", "1500ms"))
        .start();
    let mut conns = Vec::new();
    for svc in ["keep", "grace"] {
        synapse.wait_routed_to(svc, &[echo.port]);
        let mut c = TcpStream::connect(("127.0.0.1", synapse.port(svc))).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(b"a").unwrap();
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf).unwrap();
        conns.push(c);
    }
    for svc in ["keep", "grace"] {
        zkc.put_backend(svc, "next_0000000002", next.port, "");
        zkc.delete(&format!("/services/{svc}/echo_0000000001"));
    }
    synapse.wait_routed_to("keep", &[next.port]);
    synapse.wait_routed_to("grace", &[next.port]);
    let removed = Instant::now();
    for svc in ["keep", "grace"] {
        assert_eq!(
            who(synapse.port(svc)).as_deref(),
            Some("next"),
            "{svc}: new ones elsewhere"
        );
        let draining = &synapse.service(svc)["draining"];
        assert_eq!(draining[0]["active_connections"], 1, "{svc}: {draining}");
    }
    let echo_round = |c: &mut TcpStream| -> std::io::Result<()> {
        c.write_all(b"b")?;
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf)
    };
    for c in &mut conns {
        echo_round(c).expect("in-flight connection to the removed backend still flows");
    }

    // removal_grace 1.5 s: the grace connection is closed, the other one is not.
    let mut buf = [0u8; 1];
    let read = conns[1].read(&mut buf);
    let closed_after = removed.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "closed at the end of the grace: {read:?}"
    );
    println!("removal_grace 1.5 s: closed {closed_after:?} after the removal was seen");
    assert!(closed_after >= Duration::from_millis(800), "{closed_after:?}");
    assert_eq!(
        synapse.service_metric("synapse_removal_grace_closed_total", "grace"),
        1.0
    );
    echo_round(&mut conns[0]).expect("default grace (5 min): still flowing");
    assert_eq!(
        synapse.service_metric("synapse_removal_grace_closed_total", "keep"),
        0.0
    );

    // Back within its grace: it gets its state back, open connection included.
    zkc.put_backend("keep", "echo_0000000003", echo.port, "");
    synapse.wait_routed_to("keep", &[echo.port, next.port]);
    let entry = synapse.backend("keep", echo.port).unwrap();
    assert_eq!(entry["active_connections"], 1, "{entry}");
    assert_eq!(synapse.service("keep")["draining"], serde_json::json!([]));
    echo_round(&mut conns[0]).expect("still flowing");
}

/// Load test: backends join and leave ~20 times a second for 10 s while clients open a
/// new connection per request; not one request fails.
#[test]
fn membership_churn_under_load_fails_no_request() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let backends: Vec<Backend> = (0..8).map(|i| Backend::start(&format!("b{i}"))).collect();
    let id = |i: usize| format!("b{i}_{:010}", i + 1);
    for (i, b) in backends.iter().enumerate().take(4) {
        zkc.put_backend("churn", &id(i), b.port, "");
    }
    let synapse = SynapseBuilder::new(&cs).tcp("churn").start();
    let port = synapse.port("churn");
    let first: Vec<u16> = backends.iter().take(4).map(|b| b.port).collect();
    synapse.wait_routed_to("churn", &first);
    let updates_before = synapse.service_metric("synapse_route_updates_total", "churn");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match exchange(port, b"hello") {
                        Ok(a) if a.starts_with('b') && a.ends_with(":5") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{other:?}"));
                        }
                    }
                    // The clients' pace: ~500 requests/s each at most.
                    std::thread::sleep(Duration::from_millis(2));
                }
                errors
            })
        })
        .collect();

    // b0 always stays; b1..b7 flip in turn every 50 ms.
    let mut member: Vec<bool> = (0..8).map(|i| i < 4).collect();
    let started = Instant::now();
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let i = 1 + changes % 7;
        let path = format!("/services/churn/{}", id(i));
        if member[i] {
            zkc.delete(&path);
        } else {
            zkc.put_backend("churn", &id(i), backends[i].port, "");
        }
        member[i] = !member[i];
        changes += 1;
        // The churn's pace: one change every 50 ms on average, ZooKeeper's latency included.
        let due = started + Duration::from_millis(50) * changes as u32;
        if let Some(pause) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let updates = synapse.service_metric("synapse_route_updates_total", "churn") - updates_before;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "{changes} membership changes in {elapsed:?} ({:.1}/s), {updates} tables installed, \
         {ok} requests served, {failed} failed",
        changes as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 1000, "too little load: {ok} requests");
    assert!(
        changes as f64 / elapsed.as_secs_f64() >= 15.0,
        "{changes} changes"
    );
    assert!(updates >= 50.0, "synapse saw the churn: {updates} tables");
    assert_eq!(synapse.service_metric("synapse_no_backend_total", "churn"), 0.0);
}
