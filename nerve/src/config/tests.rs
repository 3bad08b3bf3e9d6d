#![allow(clippy::unwrap_used)]
use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nerve.yaml");
    std::fs::write(&f, text).unwrap();
    Config::load(&f)
}

const GOOD: &str = r#"
instance_id: host-1
services:
  - name: web
    host: 127.0.0.1
    port: 8080
    zk_hosts: [127.0.0.1:2181, 127.0.0.1:2182]
    zk_path: /services/web
    labels: {az: a}
    check_interval: 250ms
    rise: 3
    checks:
      - type: tcp
      - type: http
        uri: /ping
        expect_status: "200-204"
        timeout: 2s
"#;

#[test]
fn good_config_with_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.instance_id, "host-1");
    assert_eq!(c.admin_listen, common::admin::NERVE_DEFAULT);
    let s = &c.services[0];
    assert_eq!(s.zk_hosts, "127.0.0.1:2181,127.0.0.1:2182");
    assert_eq!(s.check_interval, Duration::from_millis(250));
    assert_eq!((s.rise.get(), s.fall.get()), (3, 2));
    assert_eq!(s.checks[0].kind, CheckKind::Tcp);
    assert_eq!(s.checks[0].timeout, Duration::from_secs(1));
    assert_eq!(
        s.checks[1].kind,
        CheckKind::Http {
            uri: "/ping".into(),
            host_header: None,
            expect_status: (200, 204)
        }
    );
    assert_eq!(s.checks[1].port, 8080);
}

#[test]
fn all_problems_reported_with_key_paths() {
    let text = r#"
services:
  - name: web
    host: 127.0.0.1
    port: 8080
    zk_hosts: 127.0.0.1:2181
    zk_path: services/web
    rise: 0
    checks:
      - type: tcp
        timeout: 2x
  - name: api
    host: 127.0.0.1
    port: 8081
    zk_hosts: 127.0.0.1:2181
    zk_path: /services/api
    colour: red
    checks: [{type: tcp}]
"#;
    let err = load(text).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"services[0].zk_path"), "{err}");
    assert!(paths.contains(&"services[0].rise"), "{err}");
    assert!(paths.contains(&"services[0].checks[0].timeout"), "{err}");
    assert!(paths.contains(&"services[1].colour"), "{err}");
    assert!(err.to_string().contains("colour"), "{err}");
    assert!(err.to_string().contains("nerve.yaml"), "{err}");
}

#[test]
fn status_ranges() {
    assert_eq!(parse_status_range(&serde_json::json!(200)).unwrap(), (200, 200));
    assert_eq!(
        parse_status_range(&serde_json::json!("200-299")).unwrap(),
        (200, 299)
    );
    assert!(parse_status_range(&serde_json::json!("299-200")).is_err());
    assert!(parse_status_range(&serde_json::json!("abc")).is_err());
    assert!(parse_status_range(&serde_json::json!([1])).is_err());
}

#[test]
fn duplicate_names_and_unknown_top_level_key() {
    let text = GOOD.to_string() + "  - name: web\n    host: h\n    port: 1\n    zk_hosts: a:1\n    zk_path: /x\n    checks: [{type: tcp}]\n";
    let err = load(&text).unwrap_err();
    assert_eq!(err.problems[0].path, "services[1].name", "{err}");
    let err = load(&format!("bogus: 1\n{GOOD}")).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

fn paths(err: &ConfigError) -> Vec<&str> {
    err.problems.iter().map(|p| p.path.as_str()).collect()
}

fn svc(name: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, {extra}host: 127.0.0.1, port: 80, zk_hosts: 'a:1', zk_path: /s/web, checks: [{{type: tcp}}]}}\n"
    )
}

#[test]
fn per_service_instance_id_overrides_the_top_level_one() {
    let c = load(&format!(
        "instance_id: host-1\nservices:\n{}{}",
        svc("web", ""),
        svc("web-admin", "instance_id: host-1-admin, ")
    ))
    .unwrap();
    assert_eq!(c.instance_id, "host-1");
    assert_eq!(c.services[0].instance_id, "host-1");
    assert_eq!(c.services[1].instance_id, "host-1-admin");
}

#[test]
fn two_services_writing_one_name_to_one_path_are_refused() {
    let err = load(&format!(
        "instance_id: host-1\nservices:\n{}{}",
        svc("web", ""),
        svc("web-admin", "")
    ))
    .unwrap_err();
    assert_eq!(paths(&err), ["services[1].instance_id"], "{err}");
    assert!(err.to_string().contains("services[0] (web)"), "{err}");
    // Same ensemble written differently, same path through a chroot: still the same place.
    let err = load(&format!(
        "instance_id: host-1\nservices:\n{}  - {{name: api, host: 127.0.0.1, port: 81, zk_hosts: ['a:1/s'], zk_path: /web, checks: [{{type: tcp}}]}}\n",
        svc("web", "")
    ))
    .unwrap_err();
    assert_eq!(paths(&err), ["services[1].instance_id"], "{err}");
    // Another path or another ensemble: fine.
    let other = "  - {name: api, host: 127.0.0.1, port: 81, zk_hosts: 'a:1', zk_path: /s/api, checks: [{type: tcp}]}\n";
    assert!(load(&format!("instance_id: h\nservices:\n{}{other}", svc("web", ""))).is_ok());
    let other = "  - {name: api, host: 127.0.0.1, port: 81, zk_hosts: 'b:1', zk_path: /s/web, checks: [{type: tcp}]}\n";
    assert!(load(&format!("instance_id: h\nservices:\n{}{other}", svc("web", ""))).is_ok());
}

#[test]
fn instance_ids_are_checked() {
    for bad in ["base64_x", "a b", "a/b", "''", "'a\\x01'", "'é'", "'a\\tb'"] {
        let err = load(&format!("instance_id: {bad}\nservices:\n{}", svc("web", ""))).unwrap_err();
        assert_eq!(paths(&err), ["instance_id"], "{bad}: {err}");
        let err = load(&format!(
            "instance_id: ok\nservices:\n{}",
            svc("web", &format!("instance_id: {bad}, "))
        ))
        .unwrap_err();
        assert_eq!(paths(&err), ["services[0].instance_id"], "{bad}: {err}");
    }
    let long = "a".repeat(254);
    let err = load(&format!("instance_id: {long}\nservices:\n{}", svc("web", ""))).unwrap_err();
    assert_eq!(paths(&err), ["instance_id"], "{err}");
    assert!(check_instance_id("i-0abc.web_1").is_ok());
    assert!(check_instance_id("xbase64_").is_ok());
}

#[test]
fn weight_is_an_8_bit_value() {
    let c = load(&format!("services:\n{}", svc("web", "weight: 255, "))).unwrap();
    assert_eq!(c.services[0].weight, Some(255));
    assert!(load(&format!("services:\n{}", svc("web", "weight: 0, "))).is_ok());
    let err = load(&format!("services:\n{}", svc("web", "weight: 256, "))).unwrap_err();
    assert_eq!(paths(&err), ["services[0].weight"], "{err}");
    assert!(err.to_string().contains("0..=255"), "{err}");
}

#[test]
fn hosts_uris_and_host_headers_are_checked() {
    let text = "services:\n  - {name: web, host: 'a b', port: 80, zk_hosts: 'a:1', zk_path: /s, checks: [{type: http, host: '-x', uri: '/a b', host_header: \"a\\nb\"}, {type: tcp, host: '10.0.0.1'}]}\n";
    let err = load(text).unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].host",
            "services[0].checks[0].uri",
            "services[0].checks[0].host_header",
            "services[0].checks[0].host",
        ],
        "{err}"
    );
}

#[test]
fn session_timeout_and_log_level_are_checked_at_load() {
    let err = load(&format!(
        "zookeeper: {{session_timeout: 1000h}}\nlog: {{level: verbose}}\nservices:\n{}",
        svc("web", "")
    ))
    .unwrap_err();
    assert_eq!(paths(&err), ["log.level", "zookeeper.session_timeout"], "{err}");
    let c = load(&format!(
        "zookeeper: {{session_timeout: 30s}}\nservices:\n{}",
        svc("web", "")
    ))
    .unwrap();
    assert_eq!(c.zk_session_timeout, Duration::from_secs(30));
}

#[test]
fn a_service_with_a_bad_required_key_is_still_checked() {
    let text = "bogus: 1\nservices:\n  - {name: web, host: 'a b', port: 99999, zk_hosts: 'a:1', zk_path: s, colour: red, checks: [{type: tcp, timeout: 2x}]}\n";
    let err = load(text).unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "bogus",
            "services[0].colour",
            "services[0].port",
            "services[0].host",
            "services[0].zk_path",
            "services[0].checks[0].timeout",
        ],
        "{err}"
    );
}

#[test]
fn haproxy_server_options_cannot_inject_lines() {
    let err = load(&format!(
        "services:\n{}",
        svc(
            "web",
            "haproxy_server_options: \"backup\\n  server evil 1.2.3.4:80\", "
        )
    ))
    .unwrap_err();
    assert_eq!(paths(&err), ["services[0].haproxy_server_options"], "{err}");
    assert!(load(&format!(
        "services:\n{}",
        svc("web", "haproxy_server_options: 'backup check inter 2s', ")
    ))
    .is_ok());
}
