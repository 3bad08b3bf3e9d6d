//! What nerve writes to ZooKeeper, read back with a plain ZooKeeper client: node names and
//! payloads as go-synapse and airbnb synapse read them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::Duration;

use integration_tests::{eventually, Backend, NerveBuilder, NerveService, SynapseBuilder, Zk, ZkCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const PATH: &str = "/services/web";

/// Two services of one nerve on one path: each writes its own payload `name` (go-synapse
/// turns it into the HAProxy server name, which must be unique) and says `"available": true`
/// (go-synapse only re-enables a server on an explicit true).
#[test]
fn per_service_instance_id_names_node_and_payload() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let _nerve = NerveBuilder::new(&cs)
        .instance_id("host-1")
        .service(NerveService::tcp("web", a.port).zk_path(PATH))
        .service(
            NerveService::tcp("web-admin", b.port)
                .instance_id("host-1-admin")
                .zk_path(PATH),
        )
        .start();
    let zkc = Zk::connect(&cs);
    let children = eventually("both services registered", WAIT, || {
        let c = zkc.children(PATH).ok()?;
        (c.len() == 2).then_some(c)
    });
    let mut seen = Vec::new();
    for child in &children {
        let (data, _) = zkc.get(&format!("{PATH}/{child}")).expect("get");
        let v: serde_json::Value = serde_json::from_slice(&data).expect("json payload");
        assert_eq!(v["available"], serde_json::Value::Bool(true), "{v}");
        let name = v["name"].as_str().expect("name").to_string();
        let prefix = if v["port"] == a.port {
            "host-1_web_"
        } else {
            "host-1-admin_web-admin_"
        };
        assert!(child.starts_with(prefix), "{child} for {v}");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, ["host-1", "host-1-admin"]);
}

/// `expose_unavailable: true`: a failing check keeps the node, with `"available": false` and
/// the failing checks as the reason; synapse (the real binary) stops routing to it, and
/// routes again when the check passes. Every node always carries a weight (default 255).
#[test]
fn expose_unavailable_keeps_the_node_and_synapse_stops_routing() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let backend = Backend::start("a");
    // A second, always healthy instance: synapse keeps its previous backends when a path has
    // none available, so "stops routing" is shown by routing to the other one only.
    let other = Backend::start("b");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let _nerve = NerveBuilder::new(&cs)
        .instance_id("host-1")
        .service(
            NerveService::tcp("web", backend.port)
                .zk_path(PATH)
                .fall(1)
                .with("expose_unavailable", true)
                .checks(vec![json!({
                    "type": "exec", "name": "flag",
                    "command": ["test", "-f", flag.display().to_string()]
                })]),
        )
        .service(
            NerveService::tcp("web-b", other.port)
                .instance_id("host-1-b")
                .zk_path(PATH),
        )
        .start();
    let synapse = SynapseBuilder::new(&cs).tcp("web").start();
    let backend_addr = format!("127.0.0.1:{}", backend.port);
    let other_addr = format!("127.0.0.1:{}", other.port);
    let mut both = vec![backend_addr.clone(), other_addr.clone()];
    both.sort();
    let zkc = Zk::connect(&cs);
    let read = |zkc: &Zk| -> Option<(String, serde_json::Value)> {
        let c: Vec<String> = zkc
            .children(PATH)
            .ok()?
            .into_iter()
            .filter(|c| c.starts_with("host-1_web_"))
            .collect();
        let [child] = c.as_slice() else { return None };
        let (data, _) = zkc.get(&format!("{PATH}/{child}")).ok()?;
        Some((child.clone(), serde_json::from_slice(&data).ok()?))
    };
    let (node, v) = eventually("registered available", WAIT, || {
        read(&zkc).filter(|(_, v)| v["available"] == true)
    });
    assert_eq!(v["weight"], 255, "default weight always written: {v}");
    eventually("synapse routes to it", WAIT, || {
        (synapse.routes("web")? == both).then_some(())
    });

    std::fs::remove_file(&flag).unwrap();
    let (down_node, v) = eventually("marked unavailable", WAIT, || {
        read(&zkc).filter(|(_, v)| v["available"] == false)
    });
    assert_eq!(down_node, node, "the same node is kept, not re-created");
    assert_eq!(v["unavailable_reason"], "checks failing: flag", "{v}");
    eventually("synapse stops routing to it", WAIT, || {
        (synapse.routes("web")? == [other_addr.clone()]).then_some(())
    });
    // Still there: readers can tell "down" from "gone".
    assert!(zkc.children(PATH).unwrap().contains(&node));

    std::fs::write(&flag, "").unwrap();
    eventually("available again", WAIT, || {
        read(&zkc).filter(|(n, v)| v["available"] == true && *n == node)
    });
    eventually("synapse routes to it again", WAIT, || {
        (synapse.routes("web")? == both).then_some(())
    });
}
