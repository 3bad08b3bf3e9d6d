#![allow(clippy::unwrap_used)]
use super::*;
use crate::metrics::Metrics;

fn config() -> ServiceConfig {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(
        &f,
        "services:\n  - {name: web, zk_hosts: 'zk:2181', zk_path: /web, listen: 3306}\n",
    )
    .unwrap();
    crate::config::Config::load(&f).unwrap().services.remove(0)
}

fn node(host: &str) -> Node {
    common::codec::decode("n", format!("{{\"host\":\"{host}\",\"port\":80}}").as_bytes()).unwrap()
}

fn members(hosts: &[&str]) -> BTreeMap<String, Node> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (format!("n_{i:010}"), node(h)))
        .collect()
}

/// A snapshot routing to `hosts`, synced from ZooKeeper.
fn snapshot(hosts: &[&str]) -> Snapshot {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let entries = members(hosts)
        .into_iter()
        .map(|(id, n)| {
            let key = format!("{}:{}", n.host, n.port);
            let state = Arc::new(BackendState::new(key.clone(), metrics.backend("web", &key)));
            (id, n, state)
        })
        .collect();
    Snapshot {
        table: Arc::new(RouteTable::build(entries, PolicyName::RoundRobin, 1)),
        source: SyncSource::Zookeeper,
        ..Snapshot::default()
    }
}

#[test]
fn a_listing_builds_a_table_and_is_known_from_zookeeper() {
    let p = plan(
        &members(&["10.0.0.1", "10.0.0.2"]),
        &Snapshot::default(),
        &config(),
        Trigger::Updates { listing: true },
    );
    assert_eq!(p.source, SyncSource::Zookeeper);
    assert_eq!(p.build.map(|b| b.entries.len()), Some(2));
    assert!(p.known.current);
    assert_eq!(p.known.members.len(), 2);
    assert!(!p.stale);
}

#[test]
fn an_update_before_any_listing_keeps_the_source() {
    let p = plan(
        &members(&["10.0.0.1"]),
        &Snapshot::default(),
        &config(),
        Trigger::Updates { listing: false },
    );
    assert_eq!(p.source, SyncSource::None);
}

#[test]
fn the_state_file_is_not_zookeepers_word() {
    let p = plan(
        &members(&["10.0.0.1"]),
        &Snapshot::default(),
        &config(),
        Trigger::Cache,
    );
    assert_eq!(p.source, SyncSource::Cache);
    assert!(!p.known.current);
    assert_eq!(p.known.members.len(), 1);
}

#[test]
fn an_empty_path_keeps_the_previous_table_unless_a_reload_rebuilds_it() {
    let current = snapshot(&["10.0.0.1", "10.0.0.2"]);
    let empty = BTreeMap::new();
    let p = plan(&empty, &current, &config(), Trigger::Updates { listing: true });
    assert!(p.stale);
    assert!(p.build.is_none(), "the current table stays");
    assert_eq!(p.selected.fallback, Fallback::Previous);
    assert!(!p.known.current);

    let p = plan(&empty, &current, &config(), Trigger::Reload);
    assert!(p.stale);
    assert_eq!(
        p.build.map(|b| b.entries.len()),
        Some(2),
        "new settings, same backends"
    );
}
