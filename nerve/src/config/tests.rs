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
