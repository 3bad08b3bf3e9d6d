#![allow(clippy::unwrap_used)]
use super::*;

fn node(port: u16, labels: &[(&str, &str)]) -> Node {
    Node {
        host: "10.0.0.1".into(),
        port,
        name: None,
        weight: None,
        available: true,
        unavailable_reason: None,
        haproxy_server_options: None,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        shard: None,
    }
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn filter(label: &str, condition: Condition) -> LabelFilter {
    LabelFilter {
        label: label.into(),
        condition,
    }
}

fn rules<'a>(
    filters: &'a [LabelFilter],
    defaults: &'a [DefaultServer],
    loc: Option<&'a Locality>,
) -> Rules<'a> {
    Rules {
        label_filters: filters,
        default_servers: defaults,
        keep_default_servers: false,
        use_previous_backends: true,
        locality: loc,
        default_weight: 255,
    }
}

fn ports(s: &Selection) -> Vec<u16> {
    s.entries.iter().map(|(_, n)| n.port).collect()
}

fn members(nodes: Vec<Node>) -> Vec<(String, Node)> {
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| (format!("n_{i:010}"), n))
        .collect()
}

#[test]
fn each_condition_and_a_missing_label() {
    let labels: BTreeMap<String, String> = [("az".to_string(), "eu-1a".to_string())].into();
    let none = BTreeMap::new();
    let cases = [
        (Condition::Equals("eu-1a".into()), true, false),
        (Condition::Equals("eu-1b".into()), false, false),
        (Condition::NotEquals("eu-1a".into()), false, true),
        (Condition::NotEquals("eu-1b".into()), true, true),
        (Condition::In(set(&["eu-1a", "eu-1b"])), true, false),
        (Condition::In(set(&["eu-1c"])), false, false),
        (Condition::NotIn(set(&["eu-1a"])), false, true),
        (Condition::NotIn(set(&["eu-1c"])), true, true),
    ];
    for (c, with, without) in cases {
        let f = filter("az", c);
        assert_eq!(f.matches(&labels), with, "{f} on az=eu-1a");
        assert_eq!(f.matches(&none), without, "{f} without the label");
    }
}

#[test]
fn every_filter_must_pass() {
    let m = members(vec![
        node(1, &[("az", "a"), ("env", "prod")]),
        node(2, &[("az", "a"), ("env", "dev")]),
        node(3, &[("az", "b"), ("env", "prod")]),
    ]);
    let filters = [
        filter("az", Condition::Equals("a".into())),
        filter("env", Condition::In(set(&["prod", "canary"]))),
    ];
    let s = select(m.iter().map(|(i, n)| (i, n)), false, rules(&filters, &[], None));
    assert_eq!(ports(&s), [1]);
    assert_eq!(s.filtered_out, 2);
    assert_eq!(s.fallback, Fallback::None);
}

fn default_server(port: u16) -> DefaultServer {
    DefaultServer {
        id: format!("default:10.0.0.1:{port}"),
        node: node(port, &[]),
    }
}

#[test]
fn default_servers_stand_in_and_can_be_kept() {
    let defaults = [default_server(9)];
    let m = members(vec![node(1, &[])]);
    // ZooKeeper has backends: defaults unused...
    let s = select(m.iter().map(|(i, n)| (i, n)), true, rules(&[], &defaults, None));
    assert_eq!((ports(&s), s.fallback), (vec![1], Fallback::None));
    // ...unless kept.
    let mut keep = rules(&[], &defaults, None);
    keep.keep_default_servers = true;
    let s = select(m.iter().map(|(i, n)| (i, n)), true, keep);
    assert_eq!((ports(&s), s.fallback), (vec![1, 9], Fallback::None));
    // Nothing in ZooKeeper (or nothing passing the filters): the defaults, unfiltered.
    let filters = [filter("az", Condition::Equals("x".into()))];
    let s = select(
        m.iter().map(|(i, n)| (i, n)),
        true,
        rules(&filters, &defaults, None),
    );
    assert_eq!((ports(&s), s.fallback), (vec![9], Fallback::DefaultServers));
}

#[test]
fn previous_backends_only_without_defaults_and_with_a_current_table() {
    let empty: Vec<(String, Node)> = Vec::new();
    let s = select(empty.iter().map(|(i, n)| (i, n)), true, rules(&[], &[], None));
    assert_eq!(s.fallback, Fallback::Previous);
    let s = select(empty.iter().map(|(i, n)| (i, n)), false, rules(&[], &[], None));
    assert_eq!((s.fallback, s.entries.len()), (Fallback::None, 0));
    let mut off = rules(&[], &[], None);
    off.use_previous_backends = false;
    let s = select(empty.iter().map(|(i, n)| (i, n)), true, off);
    assert_eq!((s.fallback, s.entries.len()), (Fallback::None, 0));
}

fn zone(min_local: MinLocal) -> Locality {
    Locality {
        label: "zone".into(),
        value: "a".into(),
        min_local,
    }
}

#[test]
fn locality_demotes_remote_backends_while_enough_local_ones_are_usable() {
    let mut weightless = node(3, &[("zone", "a")]);
    weightless.weight = Some(0);
    let m = members(vec![
        node(1, &[("zone", "a")]),
        node(2, &[("zone", "a")]),
        weightless,
        node(4, &[("zone", "b")]),
        node(5, &[]),
    ]);
    let demoted = |s: &Selection| {
        let mut d: Vec<String> = s.demoted.iter().cloned().collect();
        d.sort();
        d
    };
    let loc = zone(MinLocal::Count(2));
    let s = select(m.iter().map(|(i, n)| (i, n)), false, rules(&[], &[], Some(&loc)));
    assert_eq!(s.locality, LocalityState::Local { local: 2, usable: 4 });
    assert_eq!(demoted(&s), ["10.0.0.1:4", "10.0.0.1:5"]);
    assert_eq!(s.entries.len(), 5, "demoted, not removed");
    // The weight-0 local one does not count: 2 < 3.
    let loc = zone(MinLocal::Count(3));
    let s = select(m.iter().map(|(i, n)| (i, n)), false, rules(&[], &[], Some(&loc)));
    assert_eq!(s.locality, LocalityState::Failover { local: 2, usable: 4 });
    assert!(s.demoted.is_empty());
    // Percent of the usable backends: 2 of 4 = 50 %.
    for (p, local) in [(50, true), (51, false)] {
        let loc = zone(MinLocal::Percent(p));
        let s = select(m.iter().map(|(i, n)| (i, n)), false, rules(&[], &[], Some(&loc)));
        assert_eq!(matches!(s.locality, LocalityState::Local { .. }), local, "{p}%");
    }
    // No host zone: off.
    let mut loc = zone(MinLocal::Count(1));
    loc.value.clear();
    let s = select(m.iter().map(|(i, n)| (i, n)), false, rules(&[], &[], Some(&loc)));
    assert_eq!(s.locality, LocalityState::Off);
}
