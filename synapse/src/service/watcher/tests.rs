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

/// A watcher over `config`, with no member yet.
fn watcher(config: ServiceConfig) -> Watcher {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let service = Arc::new(Service::new(config, metrics.service("web"), None));
    Watcher::new(service, metrics, watch::Sender::new(0))
}

fn routed(w: &Watcher) -> Vec<(String, String, u32)> {
    let s = w.service.snapshot.load();
    s.table
        .backends()
        .iter()
        .map(|b| (b.id.clone(), b.state.key.clone(), b.weight))
        .collect()
}

/// Incremental installs route exactly as a plan from scratch would, through joins, leaves,
/// weight changes, members marked unavailable, a `host:port` shared by two members and a
/// path that empties; they keep the backends' states.
#[tokio::test]
async fn incremental_installs_match_a_full_plan() {
    let mut w = watcher(config());
    let upsert = |id: &str, host: &str, extra: &str| {
        let json = format!("{{\"host\":\"{host}\",\"port\":80{extra}}}");
        WatchUpdate::Upsert(Box::new(registry::Member {
            id: id.into(),
            node: common::codec::decode(id, json.as_bytes()).unwrap(),
        }))
    };
    let reset: Vec<registry::Member> = (0..20)
        .map(|i| registry::Member {
            id: format!("n{i:03}"),
            node: node(&format!("10.0.0.{i}")),
        })
        .collect();
    w.apply(WatchUpdate::Reset(reset));
    w.install(Trigger::Updates { listing: true }).await;
    let state_of_5 = w.states["10.0.0.5:80"].clone();
    let steps: Vec<Vec<WatchUpdate>> = vec![
        vec![upsert("n100", "10.0.1.1", "")],
        vec![WatchUpdate::Remove("n003".into())],
        vec![upsert("n005", "10.0.0.5", ",\"weight\":7")],
        vec![upsert("n006", "10.0.0.6", ",\"available\":false")],
        vec![WatchUpdate::Remove("n007".into()), upsert("n101", "10.0.0.7", "")],
        // Two members on one host:port: the full way, then incremental again.
        vec![upsert("n102", "10.0.0.8", "")],
        vec![WatchUpdate::Remove("n102".into())],
        vec![upsert("n006", "10.0.0.6", "")],
    ];
    for (i, batch) in steps.into_iter().enumerate() {
        let before = w
            .service
            .snapshot
            .load()
            .table
            .backend("10.0.0.1:80")
            .unwrap()
            .clone();
        for u in batch {
            w.apply(u);
        }
        w.install(Trigger::Updates { listing: false }).await;
        let current = w.service.snapshot.load_full();
        let fresh = plan(
            &w.members,
            &Snapshot::default(),
            &w.service.config,
            Trigger::Updates { listing: false },
        );
        let mut expected: Vec<(String, String, u32)> = fresh
            .build
            .unwrap()
            .entries
            .into_iter()
            .map(|(id, n)| (id, format!("{}:{}", n.host, n.port), n.weight.unwrap_or(1)))
            .collect();
        expected.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        expected.dedup_by(|a, b| a.1 == b.1);
        let got_keys: Vec<_> = routed(&w).into_iter().map(|(id, k, _)| (id, k)).collect();
        let want_keys: Vec<_> = expected
            .iter()
            .map(|(id, k, _)| (id.clone(), k.clone()))
            .collect();
        assert_eq!(got_keys, want_keys, "step {i}");
        assert_eq!(current.known.members.len(), fresh.known.members.len(), "step {i}");
        assert_eq!(
            w.service.metrics.unavailable_nodes.get() as usize,
            fresh.unavailable,
            "step {i}"
        );
        assert_eq!(w.states.len(), current.table.backends().len(), "step {i}");
        // Incremental (the untouched backend is shared, not rebuilt), except around the
        // shared host:port.
        let after = current.table.backend("10.0.0.1:80").unwrap();
        assert_eq!(Arc::ptr_eq(&before, after), i != 5 && i != 6, "step {i}");
    }
    let five = w
        .service
        .snapshot
        .load()
        .table
        .backend("10.0.0.5:80")
        .unwrap()
        .clone();
    assert_eq!(five.weight, 7);
    assert!(
        Arc::ptr_eq(&five.state, &state_of_5),
        "the backend's state is kept"
    );
    // The path empties: the full way (previous backends kept).
    let ids: Vec<String> = w.members.keys().cloned().collect();
    for id in ids {
        w.apply(WatchUpdate::Remove(id));
    }
    w.install(Trigger::Updates { listing: false }).await;
    assert!(!routed(&w).is_empty(), "use_previous_backends keeps the table");
}
