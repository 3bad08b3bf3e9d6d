//! What nerve writes to ZooKeeper, read back with a plain ZooKeeper client: node names and
//! payloads as go-synapse and airbnb synapse read them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::Duration;

use integration_tests::{eventually, free_port, Agent, Backend, Zk, ZkCluster};

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
    let admin = free_port();
    let config = format!(
        "instance_id: host-1\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nservices:\n\
         - {{name: web, host: 127.0.0.1, port: {}, zk_hosts: \"{cs}\", zk_path: {PATH}, \
         check_interval: 100ms, rise: 1, checks: [{{type: tcp}}]}}\n\
         - {{name: web-admin, instance_id: host-1-admin, host: 127.0.0.1, port: {}, \
         zk_hosts: \"{cs}\", zk_path: {PATH}, check_interval: 100ms, rise: 1, checks: [{{type: tcp}}]}}\n",
        a.port, b.port
    );
    let _nerve = Agent::start("nerve", &config);
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
