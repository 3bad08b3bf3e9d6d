#![allow(clippy::unwrap_used)]
use std::collections::HashSet;

use common::codec::Node;

use super::*;
use crate::backend::BackendState;
use crate::balance::PolicyName;
use crate::metrics::Metrics;

fn node(port: u16, weight: Option<u32>) -> Node {
    Node {
        host: "10.0.0.1".into(),
        port,
        name: Some(format!("i-{port}")),
        weight,
        available: true,
        unavailable_reason: None,
        haproxy_server_options: None,
        labels: [("zone".to_string(), "a".to_string())].into(),
        shard: None,
    }
}

#[test]
fn airbnb_keys_plus_effective_weight_and_backup() {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let entries = [(1, "i-1_web_0000000042"), (2, "member_x")]
        .into_iter()
        .map(|(port, id)| {
            let key = format!("10.0.0.1:{port}");
            let state = Arc::new(BackendState::new(key.clone(), metrics.backend("web", &key)));
            (id.to_string(), node(port, (port == 1).then_some(10)), state)
        })
        .collect();
    let demoted: HashSet<String> = ["10.0.0.1:2".to_string()].into();
    let table = RouteTable::build_demoting(entries, PolicyName::RoundRobin, 255, &demoted);
    let v: serde_json::Value = serde_json::from_slice(&render(&table)).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"name": "i-1", "host": "10.0.0.1", "port": 1, "id": 42, "weight": 10,
             "haproxy_server_options": null, "labels": {"zone": "a"},
             "effective_weight": 10, "backup": false},
            {"name": "i-2", "host": "10.0.0.1", "port": 2, "id": null, "weight": null,
             "haproxy_server_options": null, "labels": {"zone": "a"},
             "effective_weight": 255, "backup": true},
        ])
    );
    assert_eq!(render(&RouteTable::default()), b"[]");
}

#[test]
fn only_other_services_json_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["web.json", "old.json", ".web.json.tmp", "notes.txt"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    remove_others(dir.path(), &["web".to_string()]);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".web.json.tmp", "notes.txt", "web.json"]);
}
