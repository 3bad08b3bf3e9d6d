#![allow(clippy::unwrap_used)]
use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("synapse.yaml");
    std::fs::write(&f, text).unwrap();
    Config::load(&f)
}

#[test]
fn defaults_and_bare_port() {
    let c = load("services:\n  - name: web\n    zk_hosts: 127.0.0.1:2181\n    zk_path: /services/web\n    listen: 3306\n")
            .unwrap();
    let s = &c.services[0];
    assert_eq!(s.listen, "127.0.0.1:3306".parse().unwrap());
    assert_eq!(s.mode, Mode::Tcp);
    assert_eq!(s.connect_timeout, Duration::from_secs(1));
    assert_eq!(s.connect_attempts.get(), 3);
    assert!(s.use_previous_backends);
    assert_eq!(c.admin_listen, common::admin::SYNAPSE_DEFAULT);
}

#[test]
fn problems_with_key_paths() {
    let err = load(concat!(
        "services:\n",
        "  - {name: web, zk_hosts: nohost, zk_path: /services/web, listen: 3306}\n",
        "  - {name: web, zk_hosts: 'a:1', zk_path: /s, listen: 3306, mode: udp}\n",
        "  - {name: api, zk_hosts: 'a:1', zk_path: /s, listen: 3307, connect_timeout: 1x}\n",
    ))
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "services[0].zk_hosts",
            "services[1].mode",
            "services[1].name",
            "services[1].listen",
            "services[2].connect_timeout"
        ],
        "{err}"
    );
}

#[test]
fn connection_settings_defaults_top_level_and_per_service() {
    let c = load(concat!(
        "services:\n",
        "  - {name: a, zk_hosts: 'h:1', zk_path: /a, listen: 3306}\n",
    ))
    .unwrap();
    let s = &c.services[0];
    assert_eq!(s.first_sync_timeout, Duration::from_secs(5));
    assert_eq!(s.idle_timeout, Duration::from_secs(3600));
    assert_eq!(s.tcp_keepalive, Duration::from_secs(60));

    let c = load(concat!(
        "first_sync_timeout: 30s\nidle_timeout: 10m\ntcp_keepalive: 0s\n",
        "services:\n",
        "  - {name: a, zk_hosts: 'h:1', zk_path: /a, listen: 3306}\n",
        "  - {name: b, zk_hosts: 'h:1', zk_path: /b, listen: 3307, first_sync_timeout: 0s, \
         idle_timeout: 0s, tcp_keepalive: 20s}\n",
    ))
    .unwrap();
    let (a, b) = (&c.services[0], &c.services[1]);
    assert_eq!(
        (a.first_sync_timeout, a.idle_timeout, a.tcp_keepalive),
        (Duration::from_secs(30), Duration::from_secs(600), Duration::ZERO)
    );
    assert_eq!(
        (b.first_sync_timeout, b.idle_timeout, b.tcp_keepalive),
        (Duration::ZERO, Duration::ZERO, Duration::from_secs(20))
    );

    let err = load(concat!(
        "idle_timeout: forever\n",
        "services:\n",
        "  - {name: a, zk_hosts: 'h:1', zk_path: /a, listen: 3306, tcp_keepalive: 1x}\n",
    ))
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["idle_timeout"], "{err}");
}
