use super::*;

fn entry(id: &str, host: &str, port: u16) -> (String, Node, Arc<BackendState>) {
    let node = Node {
        host: host.into(),
        port,
        name: None,
        weight: None,
        available: true,
        unavailable_reason: None,
        haproxy_server_options: None,
        labels: Default::default(),
        shard: None,
    };
    let metrics = crate::metrics::Metrics::new(&prometheus::Registry::new())
        .map(|m| m.backend("s", &format!("{host}:{port}")));
    let Ok(metrics) = metrics else { panic!("metrics") };
    (
        id.into(),
        node,
        Arc::new(BackendState {
            key: format!("{host}:{port}"),
            metrics,
        }),
    )
}

#[test]
fn round_robin_and_bounded_attempts() {
    let t = RouteTable::build(vec![entry("b", "10.0.0.2", 80), entry("a", "10.0.0.1", 80)]);
    let firsts: Vec<String> = (0..4)
        .map(|_| t.pick(1).next().map(|b| b.state.key.clone()).unwrap_or_default())
        .collect();
    assert_eq!(
        firsts,
        ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]
    );
    assert_eq!(t.pick(5).count(), 2, "attempts bounded by backend count");
    assert_eq!(RouteTable::default().pick(3).count(), 0);
}

#[test]
fn duplicates_collapse_and_hostnames_kept() {
    let t = RouteTable::build(vec![
        entry("x1", "10.0.0.1", 80),
        entry("x0", "10.0.0.1", 80),
        entry("h", "db.local", 5432),
    ]);
    assert_eq!(t.backends().len(), 2);
    assert_eq!(t.backends()[0].id, "x0");
    assert_eq!(t.backends()[1].target, Target::Host("db.local".into(), 5432));
}
