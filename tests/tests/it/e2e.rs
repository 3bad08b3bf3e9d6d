//! End to end: a real ZooKeeper, real TCP backends, the real `nerve` and `synapse` binaries.
//!
//! Every wait is a condition with a deadline; every port comes from the OS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::HashMap;
use std::time::{Duration, Instant};

use integration_tests::agents::{exchange, http_get, routed, who};
use integration_tests::{
    eventually, Backend, NerveBuilder, NerveService, Synapse, SynapseBuilder, Zk, ZkCluster,
};

const WAIT: Duration = Duration::from_secs(20);
/// The service path every test uses.
const PATH: &str = "/services/web";

/// nerve registering each backend as a service of its own name under [`PATH`], with tcp
/// checks every 100 ms (rise 2, fall 2), payload name (instance_id) `test-host-<name>`.
fn nerve(zk: &str, backends: &[&Backend]) -> NerveBuilder {
    backends
        .iter()
        .fold(NerveBuilder::new(zk).instance_id("test-host"), |n, b| {
            n.service(
                NerveService::tcp(&b.name, b.port)
                    .instance_id(&format!("test-host-{}", b.name))
                    .zk_path(PATH)
                    .rise(2),
            )
        })
}

/// A running synapse routing service `web` (from [`PATH`]).
fn start_synapse(zk: &str) -> Synapse {
    SynapseBuilder::new(zk).tcp("web").start()
}

/// The ports of `backends`.
fn ports(backends: &[&Backend]) -> Vec<u16> {
    backends.iter().map(|b| b.port).collect()
}

fn addr(b: &Backend) -> String {
    format!("127.0.0.1:{}", b.port)
}

/// Writes an airbnb-nerve node `<PATH>/<id>` for `b`, as another nerve would.
fn put_node(zkc: &Zk, id: &str, b: &Backend) {
    zkc.create(
        &format!("{PATH}/{id}"),
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
}

/// Tally of which backend answered `n` connections through `port`.
fn spread(port: u16, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = who(port).unwrap_or_else(|| "<failed>".to_string());
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[test]
fn register_route_and_spread_over_two_backends() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let _nerve = nerve(&cs, &[&a, &b]).start();
    let synapse = start_synapse(&cs);
    synapse.wait_routed_to("web", &ports(&[&a, &b]));

    // Bytes go through, both ways, with half-close: the backend answers after our EOF.
    let payload = vec![7u8; 100_000];
    let answer = exchange(synapse.listen(), &payload).expect("exchange through synapse");
    assert!(answer.ends_with(":100000"), "backend saw every byte: {answer}");

    let counts = spread(synapse.listen(), 20);
    assert_eq!(
        counts.get("a"),
        Some(&10),
        "round robin over two backends: {counts:?}"
    );
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "round robin over two backends: {counts:?}"
    );

    // nerve's node payload is the airbnb format.
    let zkc = Zk::connect(&cs);
    let children = zkc.children(PATH).expect("list");
    assert_eq!(children.len(), 2, "{children:?}");
    assert!(
        children.iter().all(|c| c.starts_with("test-host-")),
        "{children:?}"
    );
    let (data, _) = zkc.get(&format!("{PATH}/{}", children[0])).expect("get");
    let v: serde_json::Value = serde_json::from_slice(&data).expect("json payload");
    assert_eq!(v["host"], "127.0.0.1");
    assert!(v["name"] == "test-host-a" || v["name"] == "test-host-b", "{v}");
    assert_eq!(v["available"], true, "{v}");
    assert!(v["port"].is_u64(), "{v}");
}

#[test]
fn dead_backend_is_removed_and_comes_back() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let a_port = a.port;
    let nerve = nerve(&cs, &[&a, &b]).start();
    let synapse = start_synapse(&cs);
    synapse.wait_routed_to("web", &ports(&[&a, &b]));

    let killed = Instant::now();
    drop(a);
    synapse.wait_routed_to("web", &ports(&[&b]));
    println!(
        "backend killed -> not routed: {:?} (tcp check every 100ms, fall 2)",
        killed.elapsed()
    );
    let counts = spread(synapse.listen(), 10);
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "all traffic on the live backend: {counts:?}"
    );

    let (status, body) = http_get(nerve.admin(), "/status").expect("status");
    assert_eq!(status, 503, "a service is down: {body}");

    let a = Backend::start_on("a", a_port);
    synapse.wait_routed_to("web", &ports(&[&a, &b]));
    let counts = spread(synapse.listen(), 10);
    assert_eq!(
        counts.get("a"),
        Some(&5),
        "traffic back on the revived backend: {counts:?}"
    );
}

#[test]
fn nerve_session_expiry_recreates_exactly_one_node() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let mut nerve = nerve(&cs, &[&a]).session_timeout(Duration::from_secs(1)).start();
    let zkc = Zk::connect(&cs);
    let node = |zkc: &Zk| -> Option<(String, i64)> {
        let children = zkc.children(PATH).ok()?;
        let [only] = children.as_slice() else { return None };
        let (_, owner) = zkc.get(&format!("{PATH}/{only}")).ok()?;
        Some((only.clone(), owner))
    };
    let (first, old_owner) = eventually("nerve registers", WAIT, || node(&zkc));

    // Freeze nerve past its session timeout: the server expires the session and deletes
    // the ephemeral node.
    nerve.signal("STOP");
    eventually("the frozen session expires", WAIT, || {
        zkc.children(PATH).ok()?.is_empty().then_some(())
    });
    let thawed = Instant::now();
    nerve.signal("CONT");
    let (second, new_owner) = eventually("nerve registers again", WAIT, || node(&zkc));
    println!("session expiry -> node back in {:?}", thawed.elapsed());
    assert_ne!(old_owner, new_owner, "a new session owns the node");
    assert_ne!(first, second);
    assert!(nerve.is_running(), "nerve survives a session expiry");
    let log = nerve.log();
    assert!(log.contains("session ended"), "expiry was seen as such:\n{log}");
    assert_eq!(zkc.children(PATH).expect("list").len(), 1, "exactly one node");
    assert_eq!(
        log.matches(": registered zk.node=").count(),
        2,
        "created once per session:\n{log}"
    );
}

#[test]
fn watch_survives_losing_its_ensemble_server() {
    let mut zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let a = Backend::start("a");
    put_node(&zkc, "a_0000000001", &a);
    let synapse = start_synapse(&cs);
    synapse.wait_routed_to("web", &ports(&[&a]));

    // The only sessions are ours and synapse's: find the server synapse is connected to.
    let mine = zkc.session_id();
    let (server, _) = eventually("synapse's connection is visible in cons", WAIT, || {
        zk.sessions().into_iter().find(|(_, sid)| *sid != mine)
    });
    zk.kill(server);
    // Its session or a new one (synapse replaces a session the library is slow to move).
    eventually("synapse reconnects to another server", WAIT, || {
        zk.sessions()
            .into_iter()
            .find(|(s, sid)| *s != server && *sid != mine)
    });

    // Membership changes made after the failover still arrive.
    let b = Backend::start("b");
    put_node(&zkc, "b_0000000002", &b);
    synapse.wait_routed_to("web", &ports(&[&a, &b]));
    zkc.delete(&format!("{PATH}/a_0000000001"));
    synapse.wait_routed_to("web", &ports(&[&b]));
    assert_eq!(who(synapse.listen()).as_deref(), Some("b"));
}

#[test]
fn malformed_and_unavailable_nodes_never_hide_good_ones() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let good = Backend::start("good");
    let other = Backend::start("other");
    zkc.create(&format!("{PATH}/garbage_0000000001"), b"not json at all");
    zkc.create(
        &format!("{PATH}/badport_0000000002"),
        br#"{"host":"127.0.0.1","port":0}"#,
    );
    zkc.create(
        &format!("{PATH}/down_0000000003"),
        format!(
            "{{\"host\":\"127.0.0.1\",\"port\":{},\"available\":false}}",
            other.port
        )
        .as_bytes(),
    );
    // go-nerve writes the port as a string.
    zkc.create(
        &format!("{PATH}/good_0000000004"),
        format!("{{\"host\":\"127.0.0.1\",\"port\":\"{}\"}}", good.port).as_bytes(),
    );
    let synapse = start_synapse(&cs);
    synapse.wait_routed_to("web", &ports(&[&good]));
    assert_eq!(spread(synapse.listen(), 4).get("good"), Some(&4));
    assert_eq!(
        synapse.metric("synapse_invalid_nodes_total", &[("service", "web")]),
        Some(2.0),
        "both malformed nodes counted once"
    );
    assert_eq!(
        synapse.metric("synapse_unavailable_nodes", &[("service", "web")]),
        Some(1.0)
    );

    // A good node whose data turns malformed keeps routing to what was last known good.
    zkc.set(&format!("{PATH}/good_0000000004"), b"{\"host\":");
    eventually("the now-malformed node is counted", WAIT, || {
        (synapse.metric("synapse_invalid_nodes_total", &[("service", "web")])? == 3.0).then_some(())
    });
    assert_eq!(routed(synapse.admin(), "web"), Some(vec![addr(&good)]));
    assert_eq!(who(synapse.listen()).as_deref(), Some("good"));
}

#[test]
fn synapse_keeps_previous_backends_when_the_path_empties_and_is_ready_after_sync() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let a = Backend::start("a");
    put_node(&zkc, "a_0000000001", &a);
    let synapse = start_synapse(&cs);
    eventually("ready", WAIT, || {
        (http_get(synapse.admin(), "/ready").ok()?.0 == 200).then_some(())
    });
    assert_eq!(routed(synapse.admin(), "web"), Some(vec![addr(&a)]));
    zkc.delete(&format!("{PATH}/a_0000000001"));
    eventually("the emptied path is noticed", WAIT, || {
        (synapse.metric("synapse_using_previous_backends", &[("service", "web")])? == 1.0).then_some(())
    });
    // The last backend is still served.
    assert_eq!(routed(synapse.admin(), "web"), Some(vec![addr(&a)]));
    assert_eq!(who(synapse.listen()).as_deref(), Some("a"));
}

#[test]
fn sigterm_deregisters_before_nerve_exits() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let mut nerve = nerve(&cs, &[&a]).start();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || {
        (zkc.children(PATH).ok()?.len() == 1).then_some(())
    });
    nerve.signal("TERM");
    let status = nerve.wait_exit(WAIT);
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        zkc.children(PATH).expect("list").is_empty(),
        "node deleted on SIGTERM"
    );
    assert!(
        nerve.log().contains("deregistered on shutdown"),
        "{}",
        nerve.log()
    );
}

#[test]
fn signal_storm_of_sighup_does_not_kill_or_unregister() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let mut nerve = nerve(&cs, &[&a]).start();
    let mut synapse = start_synapse(&cs);
    synapse.wait_routed_to("web", &ports(&[&a]));
    for _ in 0..50 {
        nerve.signal("HUP");
        synapse.signal("HUP");
    }
    // Both reload their (unchanged) config, storms folded into pending reloads.
    eventually("both reloaded", WAIT, || {
        (nerve.log().contains("config reloaded") && synapse.log().contains("config reloaded")).then_some(())
    });
    assert!(
        nerve.is_running() && synapse.is_running(),
        "SIGHUP must not kill an agent"
    );
    assert_eq!(who(synapse.listen()).as_deref(), Some("a"));
    let zkc = Zk::connect(&cs);
    assert_eq!(zkc.children(PATH).expect("list").len(), 1);
}

#[test]
fn zookeeper_outage_keeps_routing_and_recovers() {
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let mut nerve = nerve(&cs, &[&a]).start();
    let mut synapse = start_synapse(&cs);
    synapse.wait_routed_to("web", &ports(&[&a]));

    zk.kill(0);
    eventually("synapse notices the outage", WAIT, || {
        synapse.log().contains("disconnected").then_some(())
    });
    assert_eq!(
        spread(synapse.listen(), 5).get("a"),
        Some(&5),
        "routing goes on from what synapse last knew"
    );
    assert!(
        nerve.is_running() && synapse.is_running(),
        "no agent exits on a ZooKeeper fault"
    );

    zk.restart(0);
    let zkc = Zk::connect(&cs);
    let b = Backend::start("b");
    put_node(&zkc, "b_0000000001", &b);
    synapse.wait_routed_to("web", &ports(&[&a, &b]));
    eventually("nerve's node is there", WAIT, || {
        let ours = zkc
            .children(PATH)
            .ok()?
            .iter()
            .filter(|c| c.starts_with("test-host-"))
            .count();
        (ours == 1).then_some(())
    });
}
