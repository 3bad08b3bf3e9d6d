use super::*;
use crate::backend::BackendState;

fn node(host: &str, port: u16, weight: Option<u32>, options: Option<&str>) -> Node {
    Node {
        host: host.into(),
        port,
        name: None,
        weight,
        available: true,
        unavailable_reason: None,
        haproxy_server_options: options.map(Into::into),
        labels: Default::default(),
        shard: None,
    }
}

fn state(key: &str) -> Arc<BackendState> {
    let metrics = crate::metrics::Metrics::new(&prometheus::Registry::new()).map(|m| m.backend("s", key));
    let Ok(metrics) = metrics else { panic!("metrics") };
    Arc::new(BackendState::new(key.into(), metrics))
}

fn entry(id: &str, host: &str, port: u16) -> (String, Node, Arc<BackendState>) {
    weighted(id, host, port, None, None)
}

fn weighted(
    id: &str,
    host: &str,
    port: u16,
    weight: Option<u32>,
    options: Option<&str>,
) -> (String, Node, Arc<BackendState>) {
    (
        id.into(),
        node(host, port, weight, options),
        state(&format!("{host}:{port}")),
    )
}

fn rr(entries: Vec<(String, Node, Arc<BackendState>)>) -> RouteTable {
    RouteTable::build(entries, PolicyName::RoundRobin, crate::balance::DEFAULT_WEIGHT)
}

fn firsts(t: &RouteTable, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            t.pick(Ctx::new(1))
                .next()
                .map(|b| b.state.key.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn round_robin_alternates_and_attempts_are_bounded() {
    let t = rr(vec![entry("b", "10.0.0.2", 80), entry("a", "10.0.0.1", 80)]);
    let f = firsts(&t, 4);
    assert_ne!(f[0], f[1], "{f:?}");
    assert_eq!((&f[0], &f[1]), (&f[2], &f[3]), "{f:?}");
    assert_eq!(
        t.pick(Ctx::new(5)).count(),
        2,
        "attempts bounded by backend count"
    );
    assert_eq!(RouteTable::default().pick(Ctx::new(3)).count(), 0);
}

#[test]
fn duplicates_collapse_and_hostnames_kept() {
    let t = rr(vec![
        entry("x1", "10.0.0.1", 80),
        entry("x0", "10.0.0.1", 80),
        entry("h", "db.local", 5432),
    ]);
    assert_eq!(t.backends().len(), 2);
    assert_eq!(t.backends()[0].id, "x0");
    assert_eq!(t.backends()[1].target, Target::Host("db.local".into(), 5432));
}

#[test]
fn weights_options_and_default_weight_reach_the_balancer() {
    let t = RouteTable::build(
        vec![
            weighted("zero", "10.0.0.1", 80, Some(0), None),
            weighted("one", "10.0.0.2", 80, Some(1), None),
            weighted("none", "10.0.0.3", 80, None, None),
            weighted("off", "10.0.0.4", 80, Some(9), Some("check disabled")),
            weighted("opt", "10.0.0.5", 80, Some(9), Some("weight 3 inter 2s")),
            weighted("spare", "10.0.0.6", 80, None, Some("backup")),
        ],
        PolicyName::RoundRobin,
        7,
    );
    let w: Vec<(u32, bool)> = t.backends().iter().map(|b| (b.weight, b.backup)).collect();
    assert_eq!(
        w,
        [
            (0, false),
            (1, false),
            (7, false),
            (0, false),
            (3, false),
            (7, true)
        ]
    );
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for k in firsts(&t, 1100) {
        *seen.entry(k).or_default() += 1;
    }
    // 1 + 7 + 3 = 11 per schedule: exact over 100 schedules.
    assert_eq!(seen.get("10.0.0.2:80"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("10.0.0.3:80"), Some(&700), "{seen:?}");
    assert_eq!(seen.get("10.0.0.5:80"), Some(&300), "{seen:?}");
    assert_eq!(
        seen.len(),
        3,
        "weight 0, disabled and backup get nothing: {seen:?}"
    );
    // The backup is the last fallback.
    let all: Vec<&str> = t.pick(Ctx::new(10)).map(|b| b.id.as_str()).collect();
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[3], "spare", "{all:?}");
}

#[test]
fn live_state_is_shared_with_the_balancer() {
    let a = entry("a", "10.0.0.1", 80);
    let b = entry("b", "10.0.0.2", 80);
    let (busy, idle) = (a.2.clone(), b.2.clone());
    let t = RouteTable::build(vec![a, b], PolicyName::LeastConn, 1);
    let _held: Vec<_> = (0..3)
        .map(|_| busy.live.on_connect_start().on_connect_ok())
        .collect();
    for k in firsts(&t, 20) {
        assert_eq!(k, "10.0.0.2:80", "least_conn sees a's three connections");
    }
    idle.live.eject_for(std::time::Duration::from_secs(60));
    for k in firsts(&t, 20) {
        assert_eq!(k, "10.0.0.1:80", "the ejected backend is skipped");
    }
    let panic = t
        .pick(Ctx::new(1).ignoring_ejection())
        .next()
        .map(|b| b.id.as_str());
    assert_eq!(panic, Some("b"), "in panic mode, ejection is ignored");
}

/// A table made by `apply` from another equals the one built from scratch with the same
/// members, and shares the backends that did not change.
#[test]
fn apply_matches_a_full_build_and_shares_unchanged_backends() {
    let dw = crate::balance::DEFAULT_WEIGHT;
    let old = rr(vec![
        entry("a", "10.0.0.1", 80),
        entry("b", "10.0.0.2", 80),
        entry("c", "10.0.0.3", 80),
    ]);
    let kept = old.backend("10.0.0.1:80").unwrap().clone();
    let mut changes = BTreeMap::new();
    // b leaves, c changes weight, d and a first one (before a) join.
    changes.insert("10.0.0.2:80".to_string(), None);
    let c = weighted("c", "10.0.0.3", 80, Some(5), None);
    changes.insert("10.0.0.3:80".to_string(), Some(c.clone()));
    let d = entry("d", "10.0.0.4", 80);
    changes.insert("10.0.0.4:80".to_string(), Some(d.clone()));
    let z = entry("z", "10.0.0.0", 80);
    changes.insert("10.0.0.0:80".to_string(), Some(z.clone()));
    let new = old.apply(&changes, PolicyName::RoundRobin, dw);
    let full = rr(vec![z, old.backends()[0].as_ref().clone().into_entry(), c, d]);
    let summary = |t: &RouteTable| -> Vec<(String, String, u32)> {
        t.backends()
            .iter()
            .map(|b| (b.id.clone(), b.state.key.clone(), b.weight))
            .collect()
    };
    assert_eq!(summary(&new), summary(&full));
    assert!(Arc::ptr_eq(new.backend("10.0.0.1:80").unwrap(), &kept));
    assert_eq!(new.balancer.pickable(), (4, 0));
}

impl Backend {
    fn into_entry(self) -> (String, Node, Arc<BackendState>) {
        (self.id, self.node, self.state)
    }
}
