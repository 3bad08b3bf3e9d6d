//! synapse's membership features end to end: the debounce of ZooKeeper events, label
//! filters, locality failover, default servers, the state file (start with ZooKeeper down),
//! `file_output`, `max_connections`. Real ZooKeeper, real TCP backends, the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::agents::{http_get, routed, who};
use integration_tests::{
    consistently, eventually, free_port, Backend, EchoBackend, SynapseBuilder, SynapseService, Zk, ZkCluster,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn addrs(ports: &[u16]) -> Vec<String> {
    let mut v: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    v.sort();
    v
}

/// Which backends answered `n` connections through `port`.
fn tally(port: u16, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(who(port).unwrap_or_else(|| "<failed>".into()))
            .or_default() += 1;
    }
    counts
}

fn names(counts: &HashMap<String, usize>) -> BTreeSet<String> {
    counts.keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// A burst of 50 registrations is folded into a few tables, all 50 end up routed, and a
/// lone change after a quiet period is applied at once (not after the trailing window).
#[test]
fn debounce_folds_a_burst_and_keeps_a_lone_change_fast() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let first = Backend::start("first");
    zkc.put_backend("web", "first_0000000000", first.port, "");
    // A long window: a trailing-only debounce would hold the lone change 500 ms.
    let synapse = SynapseBuilder::new(&cs)
        .service(
            SynapseService::tcp("web")
                .with("debounce", "500ms")
                .with("debounce_max", "3s"),
        )
        .start();
    synapse.wait_routed_to("web", &[first.port]);
    let builds_before = synapse.service_metric("synapse_route_updates_total", "web");

    // 50 registrations as fast as one client writes them (backends need not listen).
    let ports: Vec<u16> = (0..50).map(|i| 40_000 + i).collect();
    for (i, p) in ports.iter().enumerate() {
        zkc.put_backend("web", &format!("n{i}_{:010}", i + 1), *p, "");
    }
    let mut all = ports.clone();
    all.push(first.port);
    synapse.wait_routed_to("web", &all);
    let builds = synapse.service_metric("synapse_route_updates_total", "web") - builds_before;
    let events = synapse.service_metric("synapse_watch_updates_total", "web");
    println!("burst of 50 registrations: {events} ZooKeeper updates, {builds} table builds");
    assert!(builds <= 5.0, "{builds} tables for one burst");

    // A quiet period, then a lone change: applied at once (the leading edge). Every
    // registration is routed, so no build is pending: no table is built during the quiet
    // period (the test's input: the feature is defined by it).
    let builds_then = synapse.service_metric("synapse_route_updates_total", "web");
    consistently(
        "no table built in the quiet period",
        Duration::from_millis(600),
        || match synapse.service_metric("synapse_route_updates_total", "web") {
            n if n == builds_then => Ok(()),
            n => Err(format!("{n} tables built, {builds_then} before")),
        },
    );
    let lone = Backend::start("lone");
    let started = Instant::now();
    zkc.put_backend("web", "lone_0000009999", lone.port, "");
    all.push(lone.port);
    synapse.wait_routed_to("web", &all);
    let took = started.elapsed();
    println!("lone change after a quiet period routed in {took:?} (window 500 ms)");
    assert!(
        took < Duration::from_millis(400),
        "a lone change waited {took:?}: the trailing window held it"
    );
    drop(synapse);
}

/// Each label filter condition, airbnb synapse's names included.
#[test]
fn label_filters_each_condition() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let a = Backend::start("a");
    let b = Backend::start("b");
    let c = Backend::start("c");
    let services = [
        (
            "eq",
            json!([{"label": "az", "condition": "equals", "value": "eu-1a"}]),
        ),
        (
            "ne",
            json!([{"label": "az", "condition": "not-equals", "value": "eu-1a"}]),
        ),
        (
            "in",
            json!([{"label": "env", "op": "in", "values": ["prod", "canary"]}]),
        ),
        (
            "notin",
            json!([{"label": "env", "condition": "not-in", "values": ["prod"]}]),
        ),
        (
            "both",
            json!([{"label": "az", "condition": "equals", "value": "eu-1a"},
                   {"label": "env", "condition": "in", "values": ["canary"]}]),
        ),
    ];
    for (svc, _) in &services {
        zkc.put_backend(
            svc,
            "a_0000000001",
            a.port,
            r#""labels":{"az":"eu-1a","env":"prod"}"#,
        );
        zkc.put_backend(
            svc,
            "b_0000000002",
            b.port,
            r#""labels":{"az":"eu-1b","env":"canary"}"#,
        );
        zkc.put_backend(svc, "c_0000000003", c.port, r#""labels":{"az":"eu-1a"}"#);
    }
    let synapse = services
        .iter()
        .fold(SynapseBuilder::new(&cs), |b, (svc, filters)| {
            b.service(SynapseService::tcp(svc).with("label_filters", filters.clone()))
        })
        .start();
    synapse.wait_routed_to("eq", &[a.port, c.port]);
    synapse.wait_routed_to("ne", &[b.port]);
    synapse.wait_routed_to("in", &[a.port, b.port]);
    synapse.wait_routed_to("notin", &[b.port, c.port]);
    // Nothing passes both: with no default servers and no previous backends, nothing.
    synapse.wait_routed_to("both", &[]);
    assert_eq!(synapse.service("eq")["filtered_nodes"], 1);
    assert_eq!(synapse.service_metric("synapse_filtered_nodes", "notin"), 1.0);
    assert_eq!(names(&tally(synapse.port("ne"), 5)), set(&["b"]));
    // A label that changes moves the node in or out.
    zkc.set(
        "/services/ne/a_0000000001",
        format!(
            r#"{{"host":"127.0.0.1","port":{},"labels":{{"az":"eu-1c"}}}}"#,
            a.port
        )
        .as_bytes(),
    );
    synapse.wait_routed_to("ne", &[a.port, b.port]);
}

/// Locality: local backends preferred; below `min_local` every zone is used; back to the
/// local ones when they recover. The host's zone comes from the environment (`${ZONE}`).
#[test]
fn locality_fails_over_below_the_threshold_and_back() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let (a1, a2, b1, b2) = (
        Backend::start("a1"),
        Backend::start("a2"),
        Backend::start("b1"),
        Backend::start("b2"),
    );
    zkc.put_backend("web", "a1_0000000001", a1.port, r#""labels":{"zone":"a"}"#);
    zkc.put_backend("web", "a2_0000000002", a2.port, r#""labels":{"zone":"a"}"#);
    zkc.put_backend("web", "b1_0000000003", b1.port, r#""labels":{"zone":"b"}"#);
    zkc.put_backend("web", "b2_0000000004", b2.port, r#""labels":{"zone":"b"}"#);
    let synapse = SynapseBuilder::new(&cs)
        .top(
            "locality",
            json!({"label": "zone", "value": "${ZONE}", "min_local": 2}),
        )
        .tcp("web")
        .env("ZONE", "a")
        .start();
    let port = synapse.port("web");
    synapse.wait_routed_to("web", &[a1.port, a2.port, b1.port, b2.port]);
    let loc = &synapse.service("web")["locality"];
    assert_eq!(
        (loc["value"].as_str(), loc["state"].as_str()),
        (Some("a"), Some("local")),
        "{loc}"
    );
    let counts = tally(port, 40);
    assert_eq!(names(&counts), set(&["a1", "a2"]), "local only: {counts:?}");

    // One local backend left (< 2): every zone.
    zkc.delete("/services/web/a2_0000000002");
    synapse.wait_routed_to("web", &[a1.port, b1.port, b2.port]);
    assert_eq!(synapse.service("web")["locality"]["state"], "failover");
    assert_eq!(synapse.service_metric("synapse_locality_failover", "web"), 1.0);
    let counts = tally(port, 60);
    assert_eq!(names(&counts), set(&["a1", "b1", "b2"]), "failover: {counts:?}");

    // Back: local only again.
    zkc.put_backend("web", "a2_0000000005", a2.port, r#""labels":{"zone":"a"}"#);
    synapse.wait_routed_to("web", &[a1.port, a2.port, b1.port, b2.port]);
    assert_eq!(synapse.service_metric("synapse_locality_failover", "web"), 0.0);
    let counts = tally(port, 40);
    assert_eq!(names(&counts), set(&["a1", "a2"]), "local again: {counts:?}");

    // Enough local backends in ZooKeeper but none answering: the remote ones, as backups,
    // still serve.
    drop((a1, a2));
    let counts = tally(port, 20);
    assert_eq!(count_failed(&counts), 0, "{counts:?}");
    assert!(names(&counts).is_subset(&set(&["b1", "b2"])), "{counts:?}");
}

fn count_failed(counts: &HashMap<String, usize>) -> usize {
    counts.get("<failed>").copied().unwrap_or(0)
}

/// Default servers stand in when ZooKeeper lists none (and with `keep_default_servers`
/// are always used); with ZooKeeper unreachable at start, they serve once
/// `first_sync_timeout` is over, and `/ready` says so.
#[test]
fn default_servers_stand_in_and_can_be_kept() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    zkc.create("/services/web", b"");
    zkc.create("/services/both", b"");
    let (fallback, found) = (Backend::start("fallback"), Backend::start("found"));
    let d = json!([{"name": "fb", "host": "127.0.0.1", "port": fallback.port}]);
    let synapse = SynapseBuilder::new(&cs)
        .service(SynapseService::tcp("web").with("default_servers", d.clone()))
        .service(
            SynapseService::tcp("both")
                .with("default_servers", d.clone())
                .with("keep_default_servers", true),
        )
        .start();
    synapse.wait_routed_to("web", &[fallback.port]);
    assert_eq!(synapse.service("web")["fallback"], "default_servers");
    assert_eq!(
        synapse.service_metric("synapse_using_default_servers", "web"),
        1.0
    );
    assert_eq!(names(&tally(synapse.port("web"), 3)), set(&["fallback"]));

    zkc.put_backend("web", "found_0000000001", found.port, "");
    zkc.put_backend("both", "found_0000000001", found.port, "");
    synapse.wait_routed_to("web", &[found.port]);
    synapse.wait_routed_to("both", &[fallback.port, found.port]);
    assert_eq!(
        synapse.service_metric("synapse_using_default_servers", "web"),
        0.0
    );
    assert_eq!(synapse.service("web")["fallback"], Value::Null);

    // Gone from ZooKeeper: the default servers again, not the previous backends.
    zkc.delete("/services/web/found_0000000001");
    synapse.wait_routed_to("web", &[fallback.port]);
    assert_eq!(
        synapse.service_metric("synapse_using_previous_backends", "web"),
        0.0
    );
    drop(synapse);

    // ZooKeeper unreachable at start: the default servers after first_sync_timeout.
    let dead = format!("127.0.0.1:{}", free_port());
    let synapse = SynapseBuilder::new(&dead)
        .top("first_sync_timeout", "500ms")
        .service(SynapseService::tcp("web").with("default_servers", d))
        .start();
    let waited = Instant::now();
    let answer = eventually("a first connection", WAIT, || who(synapse.port("web")));
    assert_eq!(answer, "fallback");
    println!(
        "ZooKeeper down at start: default servers after {:?}",
        waited.elapsed()
    );
    let (status, body) = http_get(synapse.admin(), "/ready").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("web: routing to default servers"), "{body}");
    assert_eq!(synapse.service("web")["synced_from"], "default_servers");
}

fn state_doc(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Started while ZooKeeper is down, synapse routes at once from the state file (the first
/// sync wait ends at once), says so in `/ready`, `/services` and a metric, and the first
/// real listing replaces the cached backends. An entry past `state_file_ttl` is not used.
#[test]
fn start_from_the_state_file_with_zookeeper_down() {
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let (one, two) = (Backend::start("one"), Backend::start("two"));
    zkc.put_backend("web", "one_0000000001", one.port, "");
    zkc.put_backend("web", "two_0000000002", two.port, "");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let config = || {
        SynapseBuilder::new(&cs)
            .top("state_file", state.display().to_string())
            .top("first_sync_timeout", "20s")
            .tcp("web")
    };
    let synapse = config().start();
    synapse.wait_routed_to("web", &[one.port, two.port]);
    eventually("the state file lists both backends", WAIT, || {
        let doc = state_doc(&state)?;
        (doc["services"]["web"]["members"].as_array()?.len() == 2).then_some(())
    });
    drop(synapse);
    zk.kill_all();

    let synapse = config().start();
    let started = Instant::now();
    let answer = eventually("a first connection", WAIT, || who(synapse.port("web")));
    let took = started.elapsed();
    println!("started with ZooKeeper down: first connection routed {took:?} after start");
    assert!(["one", "two"].contains(&answer.as_str()), "{answer}");
    assert!(
        took < Duration::from_secs(10),
        "waited {took:?}: the cache did not end the first-sync wait"
    );
    let (status, body) = http_get(synapse.admin(), "/ready").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("web: synced from cache"), "{body}");
    assert_eq!(synapse.service("web")["synced_from"], "cache");
    assert_eq!(synapse.service_metric("synapse_synced_from_cache", "web"), 1.0);
    assert_eq!(names(&tally(synapse.port("web"), 10)), set(&["one", "two"]));

    // ZooKeeper back, with one backend gone meanwhile: its listing replaces the cache.
    zk.restart_all();
    let zkc = Zk::connect(&cs);
    zkc.delete("/services/web/two_0000000002");
    synapse.wait_routed_to("web", &[one.port]);
    assert_eq!(synapse.service("web")["synced_from"], "zookeeper");
    assert_eq!(synapse.service_metric("synapse_synced_from_cache", "web"), 0.0);
    let (_, body) = http_get(synapse.admin(), "/ready").unwrap();
    assert_eq!(body, "ready\n");
    drop(synapse);

    // An entry older than the TTL is not used: connections wait for ZooKeeper (down).
    let mut doc = state_doc(&state).unwrap();
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 2 * 3600 * 1000;
    doc["services"]["web"]["confirmed_at_unix_ms"] = two_hours_ago.into();
    std::fs::write(&state, doc.to_string()).unwrap();
    zk.kill_all();
    let config = SynapseBuilder::new(&cs)
        .top("state_file", state.display().to_string())
        .top("state_file_ttl", "1h")
        .top("first_sync_timeout", "300ms")
        .tcp("web");
    let synapse = config.start();
    eventually("the admin API", WAIT, || http_get(synapse.admin(), "/ready").ok());
    assert!(
        synapse.log().contains("older than state_file_ttl"),
        "{}",
        synapse.log()
    );
    let (status, body) = http_get(synapse.admin(), "/ready").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(who(synapse.port("web")), None, "an expired cache must not route");
    assert_eq!(synapse.service("web")["synced_from"], "none");
}

/// `file_output`: airbnb synapse's format, updated on changes, written atomically (a reader
/// polling through a churn never sees a partial file).
#[test]
fn file_output_content_and_atomicity() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let a = Backend::start("a");
    zkc.put_backend(
        "web",
        "a_0000000007",
        a.port,
        r#""weight":10,"name":"i-a","labels":{"zone":"x"}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("gone.json"), "[]").unwrap();
    let synapse = SynapseBuilder::new(&cs)
        .top(
            "file_output",
            json!({"output_directory": out.display().to_string()}),
        )
        .tcp("web")
        .start();
    let file = out.join("web.json");
    let read = |f: &Path| -> Option<Value> { serde_json::from_slice(&std::fs::read(f).ok()?).ok() };
    let first = eventually("web.json", WAIT, || read(&file));
    assert_eq!(
        first,
        serde_json::json!([{"name": "i-a", "host": "127.0.0.1", "port": a.port, "id": 7,
            "weight": 10, "haproxy_server_options": null, "labels": {"zone": "x"},
            "effective_weight": 10, "backup": false}])
    );
    assert!(
        !out.join("gone.json").exists(),
        "files of services not routed are removed"
    );

    // Churn while a reader reads the file as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (stop, reads, bad, file) = (stop.clone(), reads.clone(), bad.clone(), file.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&file).expect("the file never disappears");
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) if v.is_array() => {}
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    for i in 0..40u16 {
        zkc.put_backend(
            "web",
            &format!("n{i}_{:010}", 100 + i),
            41_000 + i,
            r#""labels":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        );
        if i % 3 == 0 {
            zkc.delete(&format!("/services/web/n{i}_{:010}", 100 + i));
        }
    }
    let expected: usize = 1 + (0..40).filter(|i| i % 3 != 0).count();
    eventually("web.json lists every backend", WAIT, || {
        (read(&file)?.as_array()?.len() == expected).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    println!(
        "file_output: {} reads during the churn, {} bad",
        reads.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed)
    );
    assert_eq!(bad.load(Ordering::Relaxed), 0, "a reader saw a partial file");
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["web.json"], "no temporary file left behind");
    let writes = synapse.metric("synapse_file_output_writes_total", &[("result", "ok")]);
    assert!(writes.unwrap() >= 2.0, "{writes:?}");
}

/// `max_connections`: past the limit a client waits in the backlog (connected, not
/// accepted, not reset) and is served as soon as a connection ends.
#[test]
fn max_connections_makes_the_excess_wait_not_fail() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let echo = EchoBackend::start();
    zkc.put_backend("web", "echo_0000000001", echo.port, "");
    let synapse = SynapseBuilder::new(&cs)
        .service(SynapseService::tcp("web").with("max_connections", 2))
        .start();
    synapse.wait_routed_to("web", &[echo.port]);
    let port = synapse.port("web");
    let open = |tag: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(tag).unwrap();
        let mut buf = vec![0; tag.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, tag);
        s
    };
    let first = open(b"one");
    let _second = open(b"two");
    let mut third = TcpStream::connect(("127.0.0.1", port)).expect("the backlog takes it");
    third.write_all(b"three").unwrap();
    eventually("the accept loop to wait for a slot", WAIT, || {
        (synapse.service_metric("synapse_max_connections_reached_total", "web") >= 1.0).then_some(())
    });
    // Not served, and not reset either.
    third.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 5];
    match third.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third connection should wait, got {other:?}"),
    }
    drop(first);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    third.read_exact(&mut buf).expect("served once a slot frees");
    assert_eq!(&buf, b"three");
    assert_eq!(synapse.service("web")["max_connections"], 2);
}

/// How long a single change takes to be routed, next to how long ZooKeeper takes to tell a
/// watcher (its children watch firing, then a re-list and a read of the new child, which is
/// what any watcher must do). Run with `--ignored --nocapture`; prints p50/p99.
#[test]
#[ignore = "measurement, not a check: run by hand"]
fn propagation_latency_next_to_raw_zookeeper() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let rounds = 100;
    // `PROPAGATION_ONLY_DEFAULT=1` skips the `debounce: 0s` run (to measure a binary that
    // does not know the key).
    let only_default = std::env::var_os("PROPAGATION_ONLY_DEFAULT").is_some();
    for (label, debounce) in [("debounce 0 (batch only)", "0s"), ("default debounce", "")] {
        if only_default && !debounce.is_empty() {
            continue;
        }
        let svc = if debounce.is_empty() { "dflt" } else { "zero" };
        let mut service = SynapseService::tcp(svc);
        if !debounce.is_empty() {
            service = service.with("debounce", debounce);
        }
        zkc.create(&format!("/services/{svc}"), b"");
        let synapse = SynapseBuilder::new(&cs).service(service).start();
        synapse.wait_routed_to(svc, &[]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let raw_client = rt
            .block_on(zookeeper_client::Client::connector().connect(&cs))
            .unwrap();
        let (mut raw, mut routed_after) = (Vec::new(), Vec::new());
        let mut ports = Vec::new();
        for i in 0..rounds {
            let path = format!("/services/{svc}");
            let (_, _, watch) = rt.block_on(raw_client.get_and_watch_children(&path)).unwrap();
            let port = 42_000 + i as u16;
            let started = Instant::now();
            let raw_done = {
                let (client, path) = (raw_client.clone(), path.clone());
                rt.spawn(async move {
                    watch.changed().await;
                    // What a watcher does next: list, then read the new child.
                    let children = client.list_children(&path).await.unwrap();
                    let newest = children.iter().max().unwrap().clone();
                    let _ = client.get_data(&format!("{path}/{newest}")).await;
                    started.elapsed()
                })
            };
            zkc.put_backend(svc, &format!("n_{:010}", i + 1), port, "");
            ports.push(port);
            let want = addrs(&ports);
            while routed(synapse.admin(), svc).as_ref() != Some(&want) {
                std::thread::sleep(Duration::from_micros(200));
            }
            routed_after.push(started.elapsed());
            raw.push(rt.block_on(raw_done).unwrap());
            // A quiet period between changes: each one is a lone change.
            std::thread::sleep(Duration::from_millis(30));
        }
        let pct = |v: &mut Vec<Duration>, p: f64| {
            v.sort();
            v[((v.len() as f64 - 1.0) * p) as usize]
        };
        // synapse's own share: from the ZooKeeper update to the installed table.
        let (_, text) = http_get(synapse.admin(), "/metrics").unwrap();
        let prefix = format!("synapse_route_update_delay_seconds_bucket{{service=\"{svc}\",le=\"");
        let total = synapse
            .metric("synapse_route_update_delay_seconds_count", &[("service", svc)])
            .unwrap_or(f64::NAN);
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"} ")?;
                Some((le.to_string(), count.parse::<f64>().ok()?))
            })
            .collect();
        let bucket = |q: f64| {
            buckets
                .iter()
                .find(|(_, c)| *c >= q * total)
                .map(|(le, _)| le.clone())
                .unwrap_or_else(|| "?".into())
        };
        println!(
            "{label}: raw ZooKeeper watch+list+read p50 {:?} p99 {:?}; synapse routed (seen \
             through /services) p50 {:?} p99 {:?}; update-to-table p50 <= {}s p90 <= {}s \
             p99 <= {}s",
            pct(&mut raw, 0.5),
            pct(&mut raw, 0.99),
            pct(&mut routed_after, 0.5),
            pct(&mut routed_after, 0.99),
            bucket(0.5),
            bucket(0.9),
            bucket(0.99)
        );
    }
}
