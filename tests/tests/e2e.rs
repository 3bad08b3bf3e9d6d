//! End to end: a real ZooKeeper, real TCP backends, the real `nerve` and `synapse` binaries.
//!
//! Every wait is a condition with a deadline; every port comes from the OS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::HashMap;
use std::time::{Duration, Instant};

use integration_tests::agents::{exchange, metric, routed, who};
use integration_tests::{eventually, free_port, Agent, Backend, Zk, ZkCluster};

const WAIT: Duration = Duration::from_secs(20);

/// nerve config registering `backends` (name, port) under `path`, tcp checks every 100 ms.
fn nerve_config(zk: &str, path: &str, admin: u16, backends: &[(&str, u16)], extra: &str) -> String {
    let mut s =
        format!("instance_id: test-host\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\n{extra}services:\n");
    for (name, port) in backends {
        s += &format!(
            "  - {{name: {name}, host: 127.0.0.1, port: {port}, zk_hosts: \"{zk}\", zk_path: {path}, \
             check_interval: 100ms, rise: 2, fall: 2, checks: [{{type: tcp, timeout: 500ms}}]}}\n"
        );
    }
    s
}

fn synapse_config(zk: &str, path: &str, admin: u16, listen: u16, extra: &str) -> String {
    format!(
        "admin: {{listen: \"127.0.0.1:{admin}\"}}\n{extra}services:\n  - {{name: web, zk_hosts: \"{zk}\", zk_path: {path}, \
         listen: {listen}, connect_timeout: 500ms}}\n"
    )
}

fn addr(b: &Backend) -> String {
    format!("127.0.0.1:{}", b.port)
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
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let (nerve_admin, syn_admin, listen) = (free_port(), free_port(), free_port());
    let cs = zk.connect_string();
    let _nerve = Agent::start(
        "nerve",
        &nerve_config(
            &cs,
            "/services/web",
            nerve_admin,
            &[("a", a.port), ("b", b.port)],
            "",
        ),
    );
    let _synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );

    let mut want = vec![addr(&a), addr(&b)];
    want.sort();
    eventually("synapse routes to both backends", WAIT, || {
        (routed(syn_admin, "web")? == want).then_some(())
    });

    // Bytes go through, both ways, with half-close: the backend answers after our EOF.
    let payload = vec![7u8; 100_000];
    let answer = exchange(listen, &payload).expect("exchange through synapse");
    assert!(answer.ends_with(":100000"), "backend saw every byte: {answer}");

    let counts = spread(listen, 20);
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
    let children = zkc.children("/services/web").expect("list");
    assert_eq!(children.len(), 2, "{children:?}");
    assert!(
        children.iter().all(|c| c.starts_with("test-host_")),
        "{children:?}"
    );
    let (data, _) = zkc.get(&format!("/services/web/{}", children[0])).expect("get");
    let v: serde_json::Value = serde_json::from_slice(&data).expect("json payload");
    assert_eq!(v["host"], "127.0.0.1");
    assert_eq!(v["name"], "test-host");
    assert!(v["port"].is_u64(), "{v}");
}

#[test]
fn dead_backend_is_removed_and_comes_back() {
    let zk = ZkCluster::standalone();
    let a = Backend::start("a");
    let b = Backend::start("b");
    let a_port = a.port;
    let (nerve_admin, syn_admin, listen) = (free_port(), free_port(), free_port());
    let cs = zk.connect_string();
    let _nerve = Agent::start(
        "nerve",
        &nerve_config(
            &cs,
            "/services/web",
            nerve_admin,
            &[("a", a.port), ("b", b.port)],
            "",
        ),
    );
    let _synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );
    eventually("both routed", WAIT, || {
        (routed(syn_admin, "web")?.len() == 2).then_some(())
    });

    let killed = Instant::now();
    drop(a);
    eventually("synapse stops routing to the dead backend", WAIT, || {
        (routed(syn_admin, "web")? == vec![addr(&b)]).then_some(())
    });
    let took = killed.elapsed();
    println!("backend killed -> not routed: {took:?} (tcp check every 100ms, fall 2)");
    let counts = spread(listen, 10);
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "all traffic on the live backend: {counts:?}"
    );

    let nerve_status = integration_tests::agents::http_get(nerve_admin, "/status").expect("status");
    assert_eq!(nerve_status.0, 503, "a service is down: {}", nerve_status.1);

    let a = Backend::start_on("a", a_port);
    eventually("the backend is routed again", WAIT, || {
        (routed(syn_admin, "web")?.len() == 2).then_some(())
    });
    let counts = spread(listen, 10);
    assert_eq!(
        counts.get("a"),
        Some(&5),
        "traffic back on the revived backend: {counts:?}"
    );
    drop(a);
}

#[test]
fn nerve_session_expiry_recreates_exactly_one_node() {
    let zk = ZkCluster::standalone();
    let a = Backend::start("a");
    let nerve_admin = free_port();
    let cs = zk.connect_string();
    let mut nerve = Agent::start(
        "nerve",
        &nerve_config(
            &cs,
            "/services/web",
            nerve_admin,
            &[("a", a.port)],
            "zookeeper: {session_timeout: 1s}\n",
        ),
    );
    let zkc = Zk::connect(&cs);
    let node = |zkc: &Zk| -> Option<(String, i64)> {
        let children = zkc.children("/services/web").ok()?;
        let [only] = children.as_slice() else { return None };
        let (_, owner) = zkc.get(&format!("/services/web/{only}")).ok()?;
        Some((only.clone(), owner))
    };
    let (first, old_owner) = eventually("nerve registers", WAIT, || node(&zkc));

    // Freeze nerve past its session timeout: the server expires the session and deletes
    // the ephemeral node.
    nerve.signal("STOP");
    eventually("the frozen session expires", WAIT, || {
        zkc.children("/services/web").ok()?.is_empty().then_some(())
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
    assert_eq!(
        zkc.children("/services/web").expect("list").len(),
        1,
        "exactly one node"
    );
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
    let (syn_admin, listen) = (free_port(), free_port());
    let zkc = Zk::connect(&cs);
    let a = Backend::start("a");
    zkc.create(
        "/services/web/a_0000000001",
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", a.port).as_bytes(),
    );
    let _synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );
    eventually("synapse routes to a", WAIT, || {
        (routed(syn_admin, "web")? == vec![addr(&a)]).then_some(())
    });

    // The only sessions are ours and synapse's: find the server synapse is connected to.
    let mine = zkc.session_id();
    let (server, synapse_session) = eventually("synapse's connection is visible in cons", WAIT, || {
        zk.sessions().into_iter().find(|(_, sid)| *sid != mine)
    });
    zk.kill(server);
    eventually("synapse reconnects to another server", WAIT, || {
        zk.server_with_session(synapse_session).filter(|s| *s != server)
    });

    // Membership changes made after the failover still arrive.
    let b = Backend::start("b");
    zkc.create(
        "/services/web/b_0000000002",
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
    let mut want = vec![addr(&a), addr(&b)];
    want.sort();
    eventually("the new member arrives after failover", WAIT, || {
        (routed(syn_admin, "web")? == want).then_some(())
    });
    zkc.delete("/services/web/a_0000000001");
    eventually("the removal arrives too", WAIT, || {
        (routed(syn_admin, "web")? == vec![addr(&b)]).then_some(())
    });
    assert_eq!(who(listen).as_deref(), Some("b"));
}

#[test]
fn malformed_and_unavailable_nodes_never_hide_good_ones() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let good = Backend::start("good");
    let other = Backend::start("other");
    zkc.create("/services/web/garbage_0000000001", b"not json at all");
    zkc.create(
        "/services/web/badport_0000000002",
        br#"{"host":"127.0.0.1","port":0}"#,
    );
    zkc.create(
        "/services/web/down_0000000003",
        format!(
            "{{\"host\":\"127.0.0.1\",\"port\":{},\"available\":false}}",
            other.port
        )
        .as_bytes(),
    );
    zkc.create(
        "/services/web/good_0000000004",
        format!("{{\"host\":\"127.0.0.1\",\"port\":\"{}\"}}", good.port).as_bytes(),
    );
    let (syn_admin, listen) = (free_port(), free_port());
    let _synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );
    eventually("only the good node is routed", WAIT, || {
        (routed(syn_admin, "web")? == vec![addr(&good)]).then_some(())
    });
    assert_eq!(spread(listen, 4).get("good"), Some(&4));
    let invalid = metric(syn_admin, "synapse_invalid_nodes_total{service=\"web\"}");
    assert_eq!(invalid, Some(2.0), "both malformed nodes counted once");
    assert_eq!(
        metric(syn_admin, "synapse_unavailable_nodes{service=\"web\"}"),
        Some(1.0)
    );

    // A good node turning malformed keeps routing to what was last known good for it.
    zkc.create("/services/web/late_0000000005", b"{\"host\":");
    eventually("the late malformed node is counted", WAIT, || {
        (metric(syn_admin, "synapse_invalid_nodes_total{service=\"web\"}")? == 3.0).then_some(())
    });
    assert_eq!(routed(syn_admin, "web"), Some(vec![addr(&good)]));
    drop(other);
}

#[test]
fn synapse_keeps_previous_backends_when_the_path_empties_and_is_ready_after_sync() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let a = Backend::start("a");
    zkc.create(
        "/services/web/a_0000000001",
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", a.port).as_bytes(),
    );
    let (syn_admin, listen) = (free_port(), free_port());
    let _synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );
    eventually("ready", WAIT, || {
        let (status, _) = integration_tests::agents::http_get(syn_admin, "/ready").ok()?;
        (status == 200).then_some(())
    });
    assert_eq!(routed(syn_admin, "web"), Some(vec![addr(&a)]));
    zkc.delete("/services/web/a_0000000001");
    eventually("the emptied path is noticed", WAIT, || {
        (metric(syn_admin, "synapse_using_previous_backends{service=\"web\"}")? == 1.0).then_some(())
    });
    // The last backend is still served.
    assert_eq!(routed(syn_admin, "web"), Some(vec![addr(&a)]));
    assert_eq!(who(listen).as_deref(), Some("a"));
}

#[test]
fn sigterm_deregisters_before_nerve_exits() {
    let zk = ZkCluster::standalone();
    let a = Backend::start("a");
    let cs = zk.connect_string();
    let mut nerve = Agent::start(
        "nerve",
        &nerve_config(&cs, "/services/web", free_port(), &[("a", a.port)], ""),
    );
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || {
        (zkc.children("/services/web").ok()?.len() == 1).then_some(())
    });
    nerve.signal("TERM");
    let status = nerve.wait_exit(WAIT);
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        zkc.children("/services/web").expect("list").is_empty(),
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
    let a = Backend::start("a");
    let cs = zk.connect_string();
    let (nerve_admin, syn_admin, listen) = (free_port(), free_port(), free_port());
    let mut nerve = Agent::start(
        "nerve",
        &nerve_config(&cs, "/services/web", nerve_admin, &[("a", a.port)], ""),
    );
    let mut synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );
    eventually("routed", WAIT, || {
        (routed(syn_admin, "web")? == vec![addr(&a)]).then_some(())
    });
    for _ in 0..50 {
        nerve.signal("HUP");
        synapse.signal("HUP");
    }
    eventually("both logged the ignored SIGHUPs", WAIT, || {
        (nerve.log().contains("SIGHUP") && synapse.log().contains("SIGHUP")).then_some(())
    });
    assert!(
        nerve.is_running() && synapse.is_running(),
        "SIGHUP must not kill an agent"
    );
    assert_eq!(who(listen).as_deref(), Some("a"));
    let zkc = Zk::connect(&cs);
    assert_eq!(zkc.children("/services/web").expect("list").len(), 1);
}

#[test]
fn zookeeper_outage_keeps_routing_and_recovers() {
    let mut zk = ZkCluster::standalone();
    let a = Backend::start("a");
    let cs = zk.connect_string();
    let (nerve_admin, syn_admin, listen) = (free_port(), free_port(), free_port());
    let mut nerve = Agent::start(
        "nerve",
        &nerve_config(&cs, "/services/web", nerve_admin, &[("a", a.port)], ""),
    );
    let mut synapse = Agent::start(
        "synapse",
        &synapse_config(&cs, "/services/web", syn_admin, listen, ""),
    );
    eventually("routed", WAIT, || {
        (routed(syn_admin, "web")? == vec![addr(&a)]).then_some(())
    });

    zk.kill(0);
    eventually("synapse notices the outage", WAIT, || {
        synapse.log().contains("disconnected").then_some(())
    });
    assert_eq!(
        spread(listen, 5).get("a"),
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
    zkc.create(
        "/services/web/b_0000000001",
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
    let mut want = vec![addr(&a), addr(&b)];
    want.sort();
    eventually("changes flow again after the outage", WAIT, || {
        (routed(syn_admin, "web")? == want).then_some(())
    });
    eventually("nerve's node is there", WAIT, || {
        (zkc.children("/services/web")
            .ok()?
            .iter()
            .filter(|c| c.starts_with("test-host_"))
            .count()
            == 1)
            .then_some(())
    });
}
