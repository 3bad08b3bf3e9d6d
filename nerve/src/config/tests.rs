#![allow(clippy::unwrap_used)]
use super::*;
use checks::parse_status_range;

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
    let [Reporter::Zookeeper(z)] = s.reporters.as_slice() else {
        panic!("{:?}", s.reporters)
    };
    assert_eq!(z.zk_hosts, "127.0.0.1:2181,127.0.0.1:2182");
    assert_eq!(z.node_type, NodeType::EphemeralSequential);
    assert!(!z.use_path_encoding && z.zk_auth.is_none());
    assert_eq!((s.max_writes_per_second, s.write_burst), (1.0, 5));
    assert_eq!(s.check_interval, Duration::from_millis(250));
    assert_eq!((s.rise.get(), s.fall.get()), (3, 2));
    assert_eq!(
        s.checks[0].kind,
        CheckKind::Tcp {
            send: None,
            expect: None
        }
    );
    assert_eq!(s.checks[0].timeout, Duration::from_secs(1));
    assert_eq!(
        s.checks[1].kind,
        CheckKind::Http(HttpCheck {
            method: HttpMethod::Get,
            uri: "/ping".into(),
            headers: vec![("Host".into(), "127.0.0.1:8080".into())],
            expect_status: StatusSet(vec![(200, 204)]),
            expect_body: None,
            tls: None,
        })
    );
    assert_eq!(s.checks[1].port, 8080);
    // The service's interval, rise and fall are its checks' defaults.
    assert_eq!(
        (
            s.checks[1].interval,
            s.checks[1].rise.get(),
            s.checks[1].fall.get()
        ),
        (Duration::from_millis(250), 3, 2)
    );
    assert_eq!(
        (s.checks[0].name.as_str(), s.checks[1].name.as_str()),
        ("0_tcp", "1_http")
    );
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
    assert_eq!(c.services[0].weight, 255);
    let c = load(&format!("services:\n{}", svc("web", ""))).unwrap();
    assert_eq!(c.services[0].weight, 255, "default");
    assert!(!c.services[0].expose_unavailable);
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
            "services[0].checks[0].host",
            "services[0].checks[0].uri",
            "services[0].checks[0].host_header",
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

/// A service with `checks` (a YAML flow list) on 127.0.0.1:80.
fn with_checks(checks: &str) -> String {
    format!(
        "services:\n  - {{name: web, host: 127.0.0.1, port: 80, zk_hosts: 'a:1', zk_path: /s/web, checks: {checks}}}\n"
    )
}

fn checks_of(checks: &str) -> Vec<CheckConfig> {
    let c = load(&with_checks(checks)).unwrap_or_else(|e| panic!("{e}"));
    c.services.into_iter().next().unwrap().checks
}

#[test]
fn each_check_has_its_own_name_interval_timeout_rise_and_fall() {
    let checks = checks_of(
        "[{type: tcp, name: port-open, interval: 5s, timeout: 300ms, rise: 4, fall: 1}, {type: tcp, port: 81}]",
    );
    let a = &checks[0];
    assert_eq!(a.name, "port-open");
    assert_eq!(
        (a.interval, a.timeout, a.rise.get(), a.fall.get()),
        (Duration::from_secs(5), Duration::from_millis(300), 4, 1)
    );
    let b = &checks[1];
    assert_eq!(b.name, "1_tcp");
    assert_eq!(
        (b.interval, b.timeout, b.rise.get(), b.fall.get(), b.port),
        (Duration::from_secs(1), Duration::from_secs(1), 2, 2, 81)
    );
    let err = load(&with_checks(
        "[{type: tcp, name: a}, {type: tcp, name: a}, {type: tcp, name: 'a b', rise: 0, fall: 0, interval: 1ms, timeout: 0s}, {type: tcp, name: a}]",
    ))
    .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].checks[1].name",
            "services[0].checks[2].timeout",
            "services[0].checks[2].interval",
            "services[0].checks[2].rise",
            "services[0].checks[2].fall",
            "services[0].checks[2].name",
            "services[0].checks[3].name",
        ],
        "{err}"
    );
    // A name may not take the generated name of another check either.
    let err = load(&with_checks("[{type: tcp}, {type: tcp, name: 0_tcp}]")).unwrap_err();
    assert_eq!(paths(&err), ["services[0].checks[1].name"], "{err}");
}

#[test]
fn tcp_send_and_expect_take_text_or_hex() {
    let checks = checks_of(
        r#"[{type: tcp, send: "PING\r\n", expect: "+PONG"}, {type: tcp, send: {hex: "00 ff"}, expect: {hex: "0A"}}]"#,
    );
    assert_eq!(
        checks[0].kind,
        CheckKind::Tcp {
            send: Some(b"PING\r\n".to_vec()),
            expect: Some(b"+PONG".to_vec())
        }
    );
    assert_eq!(
        checks[1].kind,
        CheckKind::Tcp {
            send: Some(vec![0, 255]),
            expect: Some(vec![10])
        }
    );
    let err = load(&with_checks(
        r#"[{type: tcp, send: "", expect: {hex: "abc"}}, {type: tcp, send: {hex: "zz"}, expect: 3}, {type: tcp, send: {text: a}}]"#,
    ))
    .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].checks[0].send",
            "services[0].checks[0].expect.hex",
            "services[0].checks[1].send.hex",
            "services[0].checks[1].expect",
            "services[0].checks[2].send",
        ],
        "{err}"
    );
}

#[test]
fn http_options_and_their_defaults() {
    let checks = checks_of(
        r#"[{type: http, method: head, uri: "/ready?full=1", headers: {Host: web.example, X-Probe: nerve}, expect_status: [200, "300-302"]},
            {type: https, expect_body: '"ok"', host_header: api.example, tls_server_name: api.example},
            {type: http, expect_status: "200-399"}]"#,
    );
    let CheckKind::Http(h) = &checks[0].kind else {
        panic!("{:?}", checks[0].kind)
    };
    assert_eq!(h.method, HttpMethod::Head);
    assert_eq!(h.uri, "/ready?full=1");
    assert_eq!(
        h.headers,
        [
            ("Host".to_string(), "web.example".to_string()),
            ("X-Probe".to_string(), "nerve".to_string())
        ]
    );
    assert_eq!(h.expect_status, StatusSet(vec![(200, 200), (300, 302)]));
    assert!(h.expect_status.contains(301) && !h.expect_status.contains(303));
    assert_eq!(h.expect_status.to_string(), "200, 300-302");
    assert_eq!(h.tls, None);
    let CheckKind::Http(h) = &checks[1].kind else {
        panic!()
    };
    assert_eq!(checks[1].kind.label(), "https");
    assert_eq!(h.method, HttpMethod::Get);
    assert_eq!(h.uri, "/health");
    assert_eq!(h.expect_body.as_deref(), Some("\"ok\""));
    assert_eq!(h.headers, [("Host".to_string(), "api.example".to_string())]);
    let tls = h.tls.as_ref().unwrap();
    assert!(!tls.skip_verify, "verification is on by default");
    assert_eq!(tls.server_name, "api.example");
    assert!(tls.ca_certs.is_empty());
    let CheckKind::Http(h) = &checks[2].kind else {
        panic!()
    };
    assert_eq!(h.expect_status, StatusSet::default(), "today's range form");
}

#[test]
fn http_problems_are_reported_with_key_paths() {
    let err = load(&with_checks(
        r#"[{type: http, method: POST, expect_status: [200, "5xx"], headers: {Host: a, "bad name": x, Connection: keep-alive}, host_header: b},
            {type: http, method: HEAD, expect_body: x},
            {type: http, expect_status: [], expect_body: ""}]"#,
    ))
    .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].checks[0].method",
            "services[0].checks[0].headers.Connection",
            "services[0].checks[0].headers.Host",
            "services[0].checks[0].headers.bad name",
            "services[0].checks[0].expect_status",
            "services[0].checks[1].expect_body",
            "services[0].checks[2].expect_body",
            "services[0].checks[2].expect_status",
        ],
        "{err}"
    );
}

#[test]
fn keys_of_another_check_type_are_refused_by_name() {
    let err = load(&with_checks(
        "[{type: tcp, uri: /x, command: [a]}, {type: http, send: a, password: p}, {type: exec, command: [/bin/true], host_header: h}, {type: redis, service: s}, {type: grpc, tls_skip_verify: true}, {type: ftp}]",
    ))
    .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].checks[0].uri",
            "services[0].checks[0].command",
            "services[0].checks[1].send",
            "services[0].checks[1].password",
            "services[0].checks[2].host_header",
            "services[0].checks[3].service",
            "services[0].checks[4].tls_skip_verify",
            "services[0].checks[5].type",
        ],
        "{err}"
    );
    assert!(err.to_string().contains("only http, https"), "{err}");
    assert!(err.to_string().contains("tls: true"), "{err}");
}

#[test]
fn tls_ca_file_is_read_and_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no pem here\n").unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load(&with_checks(&format!(
        "[{{type: https, tls_ca_file: '{}'}}, {{type: https, tls_ca_file: '{}'}}, {{type: grpc, tls: true, tls_ca_file: '{}'}}, {{type: https, tls_server_name: 'a b'}}]",
        missing.display(),
        empty.display(),
        garbage.display()
    )))
    .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].checks[0].tls_ca_file",
            "services[0].checks[1].tls_ca_file",
            "services[0].checks[2].tls_ca_file",
            "services[0].checks[3].tls_server_name",
        ],
        "{err}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn exec_commands_env_and_shell() {
    let checks = checks_of(
        r#"[{type: exec, command: [/usr/bin/check, --fast], env: {MODE: strict, NERVE_PORT: "9"}},
            {type: exec, shell: true, command: "test -f /tmp/ready && exit 0"},
            {type: exec, shell: true, command: ["echo hi"], port: 81}]"#,
    );
    let CheckKind::Exec(e) = &checks[0].kind else {
        panic!()
    };
    assert_eq!(e.argv, ["/usr/bin/check", "--fast"]);
    assert_eq!(e.env["MODE"], "strict");
    assert_eq!(e.env["NERVE_SERVICE"], "web");
    assert_eq!(e.env["NERVE_HOST"], "127.0.0.1");
    assert_eq!(e.env["NERVE_PORT"], "9", "configured variables win");
    let CheckKind::Exec(e) = &checks[1].kind else {
        panic!()
    };
    assert_eq!(e.argv, ["sh", "-c", "test -f /tmp/ready && exit 0"]);
    let CheckKind::Exec(e) = &checks[2].kind else {
        panic!()
    };
    assert_eq!(e.argv, ["sh", "-c", "echo hi"]);
    assert_eq!(e.env["NERVE_PORT"], "81");

    let err = load(&with_checks(
        r#"[{type: exec}, {type: exec, command: "check --fast"}, {type: exec, command: []}, {type: exec, command: [a, 1]},
            {type: exec, shell: true, command: [a, b]}, {type: exec, command: [a], env: {"A=B": x}}]"#,
    ))
    .unwrap_err();
    assert_eq!(
        paths(&err),
        [
            "services[0].checks[0].command",
            "services[0].checks[1].command",
            "services[0].checks[2].command",
            "services[0].checks[3].command",
            "services[0].checks[4].command",
            "services[0].checks[5].env.A=B",
        ],
        "{err}"
    );
    assert!(err.to_string().contains("shell: true"), "{err}");
}

#[test]
fn redis_and_grpc_options() {
    let checks = checks_of(
        "[{type: redis, password: secret}, {type: redis, username: nerve, password: s}, {type: grpc}, {type: grpc, service: web.v1.Web, tls: true, tls_skip_verify: true}]",
    );
    assert_eq!(
        checks[0].kind,
        CheckKind::Redis {
            username: None,
            password: Some("secret".into())
        }
    );
    assert_eq!(
        checks[2].kind,
        CheckKind::Grpc {
            service: String::new(),
            tls: None
        }
    );
    let CheckKind::Grpc { service, tls } = &checks[3].kind else {
        panic!()
    };
    assert_eq!(service, "web.v1.Web");
    let tls = tls.as_ref().unwrap();
    assert!(tls.skip_verify);
    assert_eq!(tls.server_name, "127.0.0.1");
    let err = load(&with_checks("[{type: redis, username: u}]")).unwrap_err();
    assert_eq!(paths(&err), ["services[0].checks[0].username"], "{err}");
}

#[test]
fn reporters_list_and_the_service_level_shorthand() {
    let text = "zookeeper: {auth: {scheme: digest, credentials: 'u:p'}}\nservices:\n  - {name: web, host: 127.0.0.1, port: 80, \
        zk_hosts: 'a:1', zk_path: /s/web, node_type: ephemeral, max_writes_per_second: 2.5, write_burst: 1, \
        reporters: [{type: zookeeper, zk_hosts: 'b:1', zk_path: /s/web, use_path_encoding: true, zk_auth: {scheme: digest, credentials: 'v:q'}}, \
        {type: file, path: /tmp/web.json}, {type: console}], checks: [{type: tcp}]}\n";
    let c = load(text).unwrap();
    let s = &c.services[0];
    assert_eq!(s.reporters.len(), 4);
    let Reporter::Zookeeper(a) = &s.reporters[0] else {
        panic!()
    };
    assert_eq!(
        (a.zk_hosts.as_str(), a.node_type, a.use_path_encoding),
        ("a:1", NodeType::Ephemeral, false)
    );
    assert_eq!(a.zk_auth.as_ref().unwrap().credentials, "u:p");
    let Reporter::Zookeeper(b) = &s.reporters[1] else {
        panic!()
    };
    assert_eq!(
        (b.zk_hosts.as_str(), b.node_type, b.use_path_encoding),
        ("b:1", NodeType::Ephemeral, true)
    );
    assert_eq!(b.zk_auth.as_ref().unwrap().credentials, "v:q");
    assert_eq!(
        s.reporters[2],
        Reporter::File {
            path: "/tmp/web.json".into()
        }
    );
    assert_eq!(s.reporters[3], Reporter::Console);
    assert_eq!((s.max_writes_per_second, s.write_burst), (2.5, 1));
    assert!(
        !format!("{:?}", a.zk_auth).contains(":p"),
        "credentials never in Debug"
    );

    // Only reporters: no shorthand needed.
    assert!(load("services:\n  - {name: web, host: 127.0.0.1, port: 80, reporters: [{type: console}], checks: [{type: tcp}]}\n").is_ok());
    let err = load("services:\n  - {name: web, host: 127.0.0.1, port: 80, write_burst: 0, \
        reporters: [{type: file}, {type: carrier-pigeon}, {type: console, path: /x}, {type: zookeeper, zk_hosts: 'a:1'}, \
        {type: zookeeper, zk_hosts: 'a:1', zk_path: /s, digest: 1}], checks: [{type: tcp}]}\n").unwrap_err();
    let mut got = paths(&err);
    got.sort();
    assert_eq!(
        got,
        [
            "services[0].reporters[0].path",
            "services[0].reporters[1].type",
            "services[0].reporters[2].path",
            "services[0].reporters[3]",
            "services[0].reporters[4].digest",
            "services[0].write_burst",
        ],
        "{err}"
    );
}

#[test]
fn hooks_defaults_and_problems() {
    let c = load(&format!(
        "services:\n{}",
        svc(
            "web",
            "hooks: {pre_available: {command: [warm, up]}, on_disable: {command: 'echo bye', shell: true}, \
             drained: {command: [idle], env: {A: b}}, min_disable_time: 3s}, "
        )
    ))
    .unwrap();
    let h = &c.services[0].hooks;
    let pre = h.pre_available.as_ref().unwrap();
    assert_eq!(pre.command.argv, ["warm", "up"]);
    assert_eq!(pre.timeout, Duration::from_secs(10));
    assert_eq!(pre.command.env["NERVE_HOOK"], "pre_available");
    assert_eq!(pre.command.env["NERVE_SERVICE"], "web");
    let off = h.on_disable.as_ref().unwrap();
    assert_eq!(off.command.argv, ["sh", "-c", "echo bye"]);
    assert_eq!(off.timeout, Duration::from_secs(30));
    let d = h.drained.as_ref().unwrap();
    assert_eq!(d.hook.command.env["A"], "b");
    assert_eq!(
        (d.hook.timeout, d.interval, d.max_wait),
        (
            Duration::from_secs(5),
            Duration::from_secs(1),
            Duration::from_secs(60)
        )
    );
    assert_eq!(h.min_disable_time, Duration::from_secs(3));
    assert_eq!(
        load(&format!("services:\n{}", svc("web", ""))).unwrap().services[0].hooks,
        Hooks::default()
    );

    let err = load(&format!(
        "services:\n{}",
        svc(
            "web",
            "hooks: {pre_available: {timeout: 1s}, on_disable: {command: [x], interval: 1s}, \
             drained: {command: 'no shell'}, bogus: 1}, "
        )
    ))
    .unwrap_err();
    let p = paths(&err);
    for key in [
        "services[0].hooks.pre_available.command",
        "services[0].hooks.on_disable.interval",
        "services[0].hooks.drained.command",
        "services[0].hooks.bogus",
    ] {
        assert!(p.contains(&key), "{key} in {err}");
    }
}

/// CPU time of this thread (not wall time: other work on the machine does not count).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// `n` services, each with its own name and ZooKeeper path, one tcp check each.
fn many_services(n: usize) -> serde_json::Value {
    let services: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"name": format!("s{i}"), "host": "127.0.0.1", "port": 8080,
                "zk_hosts": "127.0.0.1:2181", "zk_path": format!("/services/s{i}"),
                "checks": [{"type": "tcp"}]})
        })
        .collect();
    serde_json::json!({"instance_id": "host-1", "services": services})
}

/// Validation time grows linearly with the services (it was quadratic: every service was
/// compared with every earlier one, its ZooKeeper locations recomputed each time). Counted
/// in CPU time of this thread, as a ratio between 8n and n services: linear work gives about
/// 8 whatever the build or the machine's speed, quadratic work about 64 once it dominates.
/// The bound (20) sits between; a slow moment of a shared machine can only spoil one
/// attempt, so the best of three counts.
#[test]
fn validation_is_linear_in_the_services() {
    let n = 1_000;
    let (small, large) = (many_services(n), many_services(8 * n));
    let time = |doc: &serde_json::Value| {
        let start = thread_cpu();
        let mut p = Problems::default();
        let c = Config::from_value(doc.clone(), &mut p).unwrap();
        let spent = thread_cpu() - start;
        assert_eq!(c.services.len() % n, 0);
        if let Err(e) = p.finish(Path::new("generated"), ()) {
            panic!("{e}");
        }
        spent
    };
    let mut ratios = Vec::new();
    for _ in 0..3 {
        let (a, b) = (time(&small), time(&large));
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-6);
        eprintln!(
            "validating {n} services: {a:?} CPU; {}: {b:?} ({ratio:.1}×)",
            8 * n
        );
        if ratio < 20.0 {
            return;
        }
        ratios.push(ratio);
    }
    panic!("8× the services took {ratios:.1?}× the CPU time: validation is not linear");
}

#[test]
fn same_instance_on_the_same_path_is_refused_with_the_first_holder() {
    let err = load(concat!(
        "instance_id: host-1\nservices:\n",
        "  - {name: a, host: 127.0.0.1, port: 1, zk_hosts: \"127.0.0.1:2181\", zk_path: /s/x, checks: [{type: tcp}]}\n",
        "  - {name: b, host: 127.0.0.1, port: 2, zk_hosts: \"127.0.0.1:2181\", zk_path: /s/y, checks: [{type: tcp}]}\n",
        "  - {name: c, host: 127.0.0.1, port: 3, zk_hosts: \"127.0.0.1:2181\", zk_path: /s/x, checks: [{type: tcp}]}\n",
        "  - {name: a, host: 127.0.0.1, port: 4, zk_hosts: \"127.0.0.1:2181\", zk_path: /s/y, checks: [{type: tcp}]}\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("services[2].instance_id"), "{err}");
    assert!(err.contains("services[0] (a) already registers"), "{err}");
    assert!(
        err.contains("services[3].name: duplicate service name \"a\""),
        "{err}"
    );
    assert!(err.contains("services[1] (b) already registers"), "{err}");
}

#[test]
fn zookeeper_fleet_keys_read_only_is_refused_tls_is_read_at_load() {
    let service = "services:\n  - {name: web, host: 127.0.0.1, port: 80, zk_hosts: 'a:1', zk_path: /s/web, checks: [{type: tcp}]}\n";
    let c = load(&format!(
        "zookeeper: {{splay: 2s, follow_reconfig: false}}\n{service}"
    ))
    .unwrap();
    assert_eq!(c.zk_session.splay, Duration::from_secs(2));
    assert!(!c.zk_session.follow_reconfig && !c.zk_session.read_only);
    let c = load(service).unwrap();
    assert_eq!(c.zk_session.splay, common::config::DEFAULT_SPLAY);
    assert!(c.zk_session.follow_reconfig);
    let err = load(&format!(
        "zookeeper: {{read_only: true, splay: soon, tls: {{ca_file: /nonexistent/ca.pem, cert_file: /x}}, tls_ca: 1}}\n{service}"
    ))
    .unwrap_err();
    let mut got = paths(&err);
    got.sort();
    assert_eq!(
        got,
        [
            "zookeeper.read_only",
            "zookeeper.splay",
            "zookeeper.tls.key_file",
            "zookeeper.tls_ca"
        ],
        "{err}"
    );
}
