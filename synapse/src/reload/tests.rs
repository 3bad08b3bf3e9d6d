#![allow(clippy::unwrap_used)]
use super::*;

fn config(yaml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(&f, yaml).unwrap();
    Config::load(&f).unwrap()
}

const OLD: &str = "
services:
  - {name: a, zk_hosts: 'zk:2181', zk_path: /a, listen: 3306}
  - {name: b, zk_hosts: 'zk:2181', zk_path: /b, listen: 3307}
  - {name: c, zk_hosts: 'zk:2181', zk_path: /c, listen: 3308}
  - {name: d, zk_hosts: 'zk:2181', zk_path: /d, listen: 3309, mode: http}
http_listeners:
  - {listen: '127.0.0.1:8080', routes: [{service: d}]}
  - {listen: '127.0.0.1:8081', routes: [{service: d}]}
";

#[test]
fn each_service_is_unchanged_updated_moved_removed_or_added() {
    let new = "
services:
  - {name: e, zk_hosts: 'zk:2181', zk_path: /e, listen: 3310}
  - {name: a, zk_hosts: 'zk:2181', zk_path: /a, listen: 3306}
  - {name: b, zk_hosts: 'zk:2181', zk_path: /b, listen: 3307, balance: random}
  - {name: c, zk_hosts: 'zk:2181', zk_path: /c2, listen: 3308}
http_listeners: []
";
    let p = plan(&config(OLD), &config(new));
    let actions: Vec<(&str, &str)> = p
        .services
        .iter()
        .map(|(n, a)| {
            let kind = match a {
                ServiceAction::Unchanged => "unchanged",
                ServiceAction::Update(_) => "update",
                ServiceAction::Move(_) => "move",
                ServiceAction::Remove => "remove",
                ServiceAction::Add(_) => "add",
            };
            (n.as_str(), kind)
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("a", "unchanged"),
            ("b", "update"),
            ("c", "move"),
            ("d", "remove"),
            ("e", "add")
        ]
    );
    assert_eq!(
        p.counts(),
        Counts {
            added: 1,
            changed: 2,
            removed: 1,
            unchanged: 1
        }
    );
    assert_eq!(p.listeners.len(), 2);
    assert!(p.listeners.iter().all(|(_, a)| *a == ListenerAction::Remove));
    assert!(p.restart_only.is_empty());
}

#[test]
fn listeners_are_kept_added_or_restarted() {
    let new = OLD.replace(
        "  - {listen: '127.0.0.1:8081', routes: [{service: d}]}",
        "  - {listen: '127.0.0.1:8081', routes: [{service: d}]}\n  - {listen: '127.0.0.1:8082', routes: [{service: d}]}",
    );
    let restarts = |p: &Plan| -> Vec<(u16, Option<bool>)> {
        p.listeners
            .iter()
            .map(|(a, l)| {
                let r = match l {
                    ListenerAction::Keep { restart, .. } => Some(*restart),
                    _ => None,
                };
                (a.port(), r)
            })
            .collect()
    };
    let p = plan(&config(OLD), &config(&new));
    assert_eq!(
        restarts(&p),
        [(8080, Some(false)), (8081, Some(false)), (8082, None)]
    );
    assert!(p.services.iter().all(|(_, a)| *a == ServiceAction::Unchanged));

    // A new keep-alive timeout restarts every HTTP listener.
    let p = plan(
        &config(OLD),
        &config(&format!("http_keepalive_timeout: 9s\n{OLD}")),
    );
    assert!(p.keepalive_changed);
    assert_eq!(restarts(&p), [(8080, Some(true)), (8081, Some(true))]);
}

#[test]
fn restart_only_keys_are_listed() {
    let new = format!("admin: {{listen: '127.0.0.1:9999'}}\nzookeeper: {{session_timeout: 7s}}\n{OLD}");
    let p = plan(&config(OLD), &config(&new));
    assert_eq!(p.restart_only, ["zookeeper.session_timeout", "admin.listen"]);
}
