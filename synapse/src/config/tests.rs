#![allow(clippy::unwrap_used)]
use super::*;
use crate::balance::{HashOn, Policy};
use crate::filter::{Locality, MinLocal};
use crate::outlier::OutlierConfig;
use crate::router::HostMatch;

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
    assert_eq!(s.listen, Some("127.0.0.1:3306".parse().unwrap()));
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
    assert_eq!(paths, ["idle_timeout", "services[0].tcp_keepalive"], "{err}");
}

fn svc(name: &str, listen: &str) -> String {
    format!("  - {{name: {name}, zk_hosts: 'a:1', zk_path: /s, listen: '{listen}'}}\n")
}

#[test]
fn overlapping_listen_addresses_are_refused() {
    let refused = [
        (
            svc("a", "0.0.0.0:4000") + &svc("b", "127.0.0.1:4000"),
            "services[1].listen",
        ),
        (
            svc("a", "127.0.0.1:4000") + &svc("b", "0.0.0.0:4000"),
            "services[1].listen",
        ),
        (
            svc("a", "10.0.0.1:4000") + &svc("b", "[::]:4000"),
            "services[1].listen",
        ),
        (
            svc("a", "4000") + &svc("b", "127.0.0.1:4000"),
            "services[1].listen",
        ),
        (svc("a", "3422"), "services[0].listen"),
        (svc("a", "0.0.0.0:3422"), "services[0].listen"),
        (svc("a", "127.0.0.1:0"), "services[0].listen"),
        (svc("a", "0"), "services[0].listen"),
    ];
    for (services, key) in refused {
        let err = load(&format!("services:\n{services}")).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, [key], "{services}: {err}");
    }
    let err = load(&format!(
        "admin: {{listen: '0'}}\nservices:\n{}",
        svc("a", "4000")
    ))
    .unwrap_err();
    assert_eq!(err.problems[0].path, "admin.listen", "{err}");
    let err = load(&format!(
        "admin: {{listen: '[::]:4000'}}\nservices:\n{}",
        svc("a", "4000")
    ))
    .unwrap_err();
    assert_eq!(err.problems[0].path, "services[0].listen", "{err}");
    assert!(err.to_string().contains("admin"), "{err}");
    // Same port on distinct addresses, or distinct families without a dual-stack wildcard.
    assert!(load(&format!(
        "services:\n{}{}{}",
        svc("a", "127.0.0.1:4000"),
        svc("b", "127.0.0.2:4000"),
        svc("c", "[::1]:4000")
    ))
    .is_ok());
}

#[test]
fn session_timeout_log_level_and_zk_chars_are_checked_at_load() {
    let err = load(concat!(
        "zookeeper: {session_timeout: 500ms}\nlog: {level: 'info,x=loud'}\nservices:\n",
        "  - {name: web, zk_hosts: \"a:1/r\\x7f\", zk_path: \"/s\\x00\", listen: 4000}\n",
    ))
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "log.level",
            "zookeeper.session_timeout",
            "services[0].zk_hosts",
            "services[0].zk_path"
        ],
        "{err}"
    );
}

fn one(extra: &str) -> String {
    format!("services:\n  - {{name: a, zk_hosts: 'h:1', zk_path: /a, listen: 3306{extra}}}\n")
}

fn problem_paths(text: &str) -> Vec<String> {
    let err = load(text).unwrap_err();
    err.problems.iter().map(|p| p.path.clone()).collect()
}

#[test]
fn balancing_defaults() {
    let c = load(&one("")).unwrap();
    let s = &c.services[0];
    assert_eq!(s.balance, Policy::RoundRobin);
    assert_eq!(s.default_weight, 255);
    assert_eq!(s.outlier, OutlierConfig::default());
    assert_eq!(
        (
            s.outlier.consecutive_failures,
            s.outlier.base_ejection,
            s.outlier.max_ejection,
            s.outlier.max_ejected_percent,
            s.outlier.panic_threshold_percent
        ),
        (5, Duration::from_secs(1), Duration::from_secs(30), 50, 50)
    );
    assert_eq!(s.removal_grace, Duration::from_secs(300));
}

#[test]
fn every_policy_parses() {
    for (text, want) in [
        ("round_robin", Policy::RoundRobin),
        ("least_conn", Policy::LeastConn),
        ("random", Policy::Random),
        ("p2c_ewma", Policy::P2cEwma),
        ("peak_ewma", Policy::P2cEwma),
    ] {
        let c = load(&one(&format!(", balance: {text}"))).unwrap();
        assert_eq!(c.services[0].balance, want, "{text}");
    }
    let c = load(&one(", balance: hash, hash_on: client_ip")).unwrap();
    assert_eq!(c.services[0].balance, Policy::Hash(HashOn::ClientIp));
}

#[test]
fn balance_problems_name_their_key() {
    let cases = [
        (
            ", balance: fastest",
            "services[0].balance",
            "unknown balance policy",
        ),
        (", balance: hash", "services[0].balance", "needs hash_on"),
        (
            ", balance: random, hash_on: client_ip",
            "services[0].balance",
            "only used with balance: hash",
        ),
        (
            ", balance: hash, hash_on: 'ip'",
            "services[0].hash_on",
            "bad hash_on",
        ),
        (
            ", balance: hash, hash_on: 'header:X-User'",
            "services[0].hash_on",
            "mode tcp",
        ),
        (
            ", balance: hash, hash_on: 'cookie:session'",
            "services[0].hash_on",
            "mode tcp",
        ),
        (", default_weight: -1", "services[0].default_weight", ""),
    ];
    for (extra, key, words) in cases {
        let err = load(&one(extra)).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, [key], "{extra}: {err}");
        assert!(err.to_string().contains(words), "{extra}: {err}");
    }
}

#[test]
fn outlier_and_removal_grace_top_level_defaults_and_overrides() {
    let c = load(concat!(
        "default_weight: 10\nremoval_grace: 0s\n",
        "outlier: {consecutive_failures: 2, max_ejection: 1m, panic_threshold_percent: 0}\n",
        "services:\n",
        "  - {name: a, zk_hosts: 'h:1', zk_path: /a, listen: 3306}\n",
        "  - {name: b, zk_hosts: 'h:1', zk_path: /b, listen: 3307, default_weight: 1, \
         removal_grace: 24h, outlier: {consecutive_failures: 0, base_ejection: 2s}}\n",
    ))
    .unwrap();
    let (a, b) = (&c.services[0], &c.services[1]);
    assert_eq!((a.default_weight, a.removal_grace), (10, Duration::ZERO));
    assert_eq!(
        a.outlier,
        OutlierConfig {
            consecutive_failures: 2,
            max_ejection: Duration::from_secs(60),
            panic_threshold_percent: 0,
            ..OutlierConfig::default()
        }
    );
    assert_eq!(
        (b.default_weight, b.removal_grace),
        (1, Duration::from_secs(86_400))
    );
    assert_eq!(
        b.outlier,
        OutlierConfig {
            consecutive_failures: 0,
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(60),
            panic_threshold_percent: 0,
            ..OutlierConfig::default()
        },
        "key by key over the top-level block"
    );
}

#[test]
fn outlier_problems_name_their_key_once() {
    let paths = problem_paths(&one(
        ", outlier: {base_ejection: 0s, max_ejected_percent: 101, panic_threshold_percent: 200, \
         interval: 1s}",
    ));
    assert_eq!(
        paths,
        [
            "services[0].outlier.interval",
            "services[0].outlier.base_ejection",
            "services[0].outlier.max_ejected_percent",
            "services[0].outlier.panic_threshold_percent"
        ]
    );
    let paths = problem_paths(&one(", outlier: {base_ejection: 1m, max_ejection: 10s}"));
    assert_eq!(paths, ["services[0].outlier.max_ejection"]);
    // A service's base above the top-level max: the service's key is the one to blame.
    let paths = problem_paths(&format!(
        "outlier: {{max_ejection: 10s}}\n{}",
        one(", outlier: {base_ejection: 1m}")
    ));
    assert_eq!(paths, ["services[0].outlier.base_ejection"]);
    // A bad top-level block is reported once, at the top level, not per service.
    let paths = problem_paths(&format!(
        "outlier: {{max_ejected_percent: 150}}\nservices:\n{}{}",
        svc("a", "4000"),
        svc("b", "4001")
    ));
    assert_eq!(paths, ["outlier.max_ejected_percent"]);
    let paths = problem_paths(&one(", removal_grace: soon"));
    assert_eq!(paths, ["services[0].removal_grace"]);
}

#[test]
fn membership_defaults() {
    let c = load(&one("")).unwrap();
    let s = &c.services[0];
    assert_eq!(s.debounce, DEFAULT_DEBOUNCE);
    assert_eq!(s.debounce_max, DEFAULT_DEBOUNCE_MAX);
    assert!(s.label_filters.is_empty());
    assert_eq!(s.locality, None);
    assert!(s.default_servers.is_empty());
    assert!(!s.keep_default_servers);
    assert_eq!(s.max_connections, None);
    assert_eq!((c.state_file, c.file_output), (None, None));
}

#[test]
fn membership_keys_parse_with_airbnb_names() {
    let c = load(concat!(
        "debounce: 0s\nmax_connections: 100\n",
        "locality: {value: eu-1a}\n",
        "state_file_path: /var/lib/synapse/state.json\nstate_file_ttl: 1h\n",
        "file_output: {output_directory: /run/synapse/services}\n",
        "services:\n",
        "  - name: a\n    zk_hosts: 'h:1'\n    zk_path: /a\n    listen: 3306\n",
        "    label_filters:\n",
        "      - {label: az, condition: equals, value: eu-1a}\n",
        "      - {label: env, op: in, values: [prod, canary]}\n",
        "      - {label: tier, condition: not-equals, value: 1}\n",
        "      - {label: env, condition: not_in, values: [dev]}\n",
        "    default_servers:\n",
        "      - {name: fallback, host: db.example.internal, port: 3306, labels: {zone: eu-1b}}\n",
        "      - {host: 10.0.0.9, port: 3306, weight: 0}\n",
        "    keep_default_servers: true\n",
        "    debounce: 50ms\n    debounce_max: 1s\n    max_connections: 2\n",
        "  - {name: b, zk_hosts: 'h:1', zk_path: /b, listen: 3307, locality: false, \
         debounce_max: 100ms}\n",
        "  - {name: c, zk_hosts: 'h:1', zk_path: /c, listen: 3308, \
         locality: {label: az, value: x, min_local: '30%'}}\n",
    ))
    .unwrap();
    let (a, b, cc) = (&c.services[0], &c.services[1], &c.services[2]);
    assert_eq!(
        a.label_filters
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["az=eu-1a", "env in [canary,prod]", "tier!=1", "env not in [dev]"]
    );
    assert_eq!(
        a.default_servers
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["default:fallback", "default:10.0.0.9:3306"]
    );
    assert_eq!(a.default_servers[0].node.labels["zone"], "eu-1b");
    assert_eq!(a.default_servers[1].node.weight, Some(0));
    assert!(a.keep_default_servers);
    assert_eq!(
        (a.debounce, a.debounce_max),
        (Duration::from_millis(50), Duration::from_secs(1))
    );
    assert_eq!(a.max_connections.map(|n| n.get()), Some(2));
    assert_eq!(
        a.locality,
        Some(Locality {
            label: "zone".into(),
            value: "eu-1a".into(),
            min_local: MinLocal::Count(1)
        }),
        "the top-level locality is the default"
    );
    assert_eq!(b.locality, None, "locality: false turns it off");
    assert_eq!(
        (b.debounce, b.debounce_max),
        (Duration::ZERO, Duration::from_millis(100))
    );
    assert_eq!(b.max_connections.map(|n| n.get()), Some(100));
    assert_eq!(
        cc.locality.as_ref().map(|l| l.min_local),
        Some(MinLocal::Percent(30))
    );
    let f = c.state_file.unwrap();
    assert_eq!(f.path, PathBuf::from("/var/lib/synapse/state.json"));
    assert_eq!(f.ttl, Duration::from_secs(3600));
    assert_eq!(c.file_output.unwrap().dir, PathBuf::from("/run/synapse/services"));
    let c = load(&format!(
        "file_output: {{dir: /tmp/x}}\nstate_file: /s.json\n{}",
        one("")
    ))
    .unwrap();
    assert_eq!(c.file_output.unwrap().dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.state_file.unwrap().ttl, DEFAULT_STATE_FILE_TTL);
}

#[test]
fn membership_problems_name_their_key() {
    let cases = [
        (
            ", label_filters: [{label: az, condition: like, value: x}]",
            "services[0].label_filters[0].condition",
            "unknown condition",
        ),
        (
            ", label_filters: [{label: az, condition: in, value: x}]",
            "services[0].label_filters[0].values",
            "values",
        ),
        (
            ", label_filters: [{label: az, condition: equals, values: [x]}]",
            "services[0].label_filters[0].value",
            "one `value`",
        ),
        (
            ", label_filters: [{label: az, condition: equals, value: x, extra: 1}]",
            "services[0].label_filters[0].extra",
            "unknown field",
        ),
        (
            ", locality: {value: a, min_local: lots}",
            "services[0].locality.min_local",
            "percentage",
        ),
        (
            ", locality: {value: a, min_local: '150%'}",
            "services[0].locality.min_local",
            "percentage",
        ),
        (", locality: true", "services[0].locality", "false"),
        (
            ", locality: {label: zone}",
            "services[0].locality",
            "missing field `value`",
        ),
        (
            ", default_servers: [{host: 'bad host', port: 1}]",
            "services[0].default_servers[0].host",
            "bad host",
        ),
        (
            ", default_servers: [{host: h, port: 0}]",
            "services[0].default_servers[0].port",
            "port 0",
        ),
        (
            ", default_servers: [{host: h, port: 1}, {host: h, port: 1}]",
            "services[0].default_servers[1].name",
            "duplicate",
        ),
        (
            ", keep_default_servers: true",
            "services[0].keep_default_servers",
            "without default_servers",
        ),
        (
            ", max_connections: 0",
            "services[0].max_connections",
            "at least 1",
        ),
        (
            ", debounce: 1s, debounce_max: 10ms",
            "services[0].debounce_max",
            "less than debounce",
        ),
        (", debounce: soon", "services[0].debounce", "invalid duration"),
    ];
    for (extra, key, words) in cases {
        let err = load(&one(extra)).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, [key], "{extra}: {err}");
        assert!(err.to_string().contains(words), "{extra}: {err}");
    }
    let top = [
        ("state_file_ttl: 1h\n", "state_file_ttl", "without a state_file"),
        (
            "state_file: /s.json\nstate_file_ttl: 0s\n",
            "state_file_ttl",
            "more than 0",
        ),
        ("file_output: {}\n", "file_output", "output_directory"),
        (
            "file_output: {dir: /o}\nstate_file: /o/state.json\n",
            "state_file",
            "file_output",
        ),
        ("locality: false\n", "locality", "map"),
        (
            "debounce: 1s\ndebounce_max: 10ms\n",
            "debounce_max",
            "less than debounce",
        ),
    ];
    for (head, key, words) in top {
        let err = load(&format!("{head}{}", one(""))).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, [key], "{head}: {err}");
        assert!(err.to_string().contains(words), "{head}: {err}");
    }
}

fn http_svc(name: &str, extra: &str) -> String {
    format!("  - {{name: {name}, mode: http, zk_hosts: 'h:1', zk_path: /{name}{extra}}}\n")
}

#[test]
fn http_mode_defaults_and_keys() {
    let c = load(&format!(
        "services:\n{}{}",
        http_svc("a", ", listen: 4000"),
        http_svc(
            "b",
            ", listen: 4001, request_timeout: 0s, try_timeout: 2s, retry_budget: {percent: 5}, \
             pool_max_idle: 0, pool_idle_timeout: 5s, balance: hash, hash_on: 'header:X-User'"
        )
    ))
    .unwrap();
    let (a, b) = (&c.services[0], &c.services[1]);
    assert_eq!(a.mode, Mode::Http);
    assert_eq!(a.http, HttpConfig::default());
    assert_eq!(
        (
            a.http.request_timeout,
            a.http.try_timeout,
            a.http.retry_budget,
            a.http.pool_max_idle,
            a.http.pool_idle_timeout
        ),
        (
            Duration::from_secs(60),
            Duration::ZERO,
            RetryBudgetConfig {
                percent: 20,
                min_per_second: 10
            },
            64,
            Duration::from_secs(30)
        )
    );
    assert_eq!(c.http_keepalive_timeout, Duration::from_secs(60));
    assert!(c.http_listeners.is_empty());
    assert_eq!(
        b.http,
        HttpConfig {
            request_timeout: Duration::ZERO,
            try_timeout: Duration::from_secs(2),
            retry_budget: RetryBudgetConfig {
                percent: 5,
                min_per_second: 10
            },
            pool_max_idle: 0,
            pool_idle_timeout: Duration::from_secs(5),
            backend_protocol: BackendProtocol::Http1,
        }
    );
    assert_eq!(b.balance, Policy::Hash(HashOn::Header("x-user".into())));
}

#[test]
fn http_key_problems() {
    // HTTP keys in tcp mode.
    let paths = problem_paths(&one(", request_timeout: 1s, retry_budget: {percent: 1}"));
    assert_eq!(paths, ["services[0].request_timeout", "services[0].retry_budget"]);
    let paths = problem_paths(&format!(
        "services:\n{}",
        http_svc(
            "a",
            ", listen: 4000, request_timeout: 1s, try_timeout: 2s, pool_idle_timeout: 0s, \
             retry_budget: {percent: 101, every: 1}"
        )
    ));
    assert_eq!(
        paths,
        [
            "services[0].retry_budget.every",
            "services[0].try_timeout",
            "services[0].retry_budget.percent",
            "services[0].pool_idle_timeout"
        ]
    );
    let err = load(&one(", mode: udp")).unwrap_err();
    assert!(err.to_string().contains("expected tcp or http"), "{err}");
}

#[test]
fn http_listeners_route_to_http_services() {
    let c = load(&format!(
        "http_keepalive_timeout: 5s\nidle_timeout: 10m\n\
         http_listeners:\n  - listen: 8080\n    routes:\n\
         \x20     - {{host: API.local, path_prefix: /v1, service: api}}\n\
         \x20     - {{host: '*.web.local', service: web}}\n\
         \x20     - {{service: web}}\n\
         services:\n{}{}",
        http_svc("api", ", listen: 4000"),
        http_svc("web", "")
    ))
    .unwrap();
    assert_eq!(c.http_keepalive_timeout, Duration::from_secs(5));
    let l = &c.http_listeners[0];
    assert_eq!(l.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(l.idle_timeout, Duration::from_secs(600));
    assert_eq!(
        l.routes,
        [
            RouteConfig {
                host: Some(HostMatch::Exact("api.local".into())),
                path_prefix: "/v1".into(),
                service: "api".into(),
                backend_protocol: None
            },
            RouteConfig {
                host: Some(HostMatch::Wildcard(".web.local".into())),
                path_prefix: String::new(),
                service: "web".into(),
                backend_protocol: None
            },
            RouteConfig {
                host: None,
                path_prefix: String::new(),
                service: "web".into(),
                backend_protocol: None
            },
        ]
    );
    assert_eq!(
        c.services[1].listen, None,
        "reached through the shared listener only"
    );
}

#[test]
fn http_listener_problems() {
    let paths = problem_paths(&format!(
        "http_listeners:\n\
         \x20 - listen: 4000\n    routes:\n\
         \x20     - {{host: 'a.local:80', service: api}}\n\
         \x20     - {{path_prefix: v1, service: api}}\n\
         \x20     - {{service: nope}}\n\
         \x20     - {{path_prefix: /db, service: db}}\n\
         \x20     - {{host: b.local, path_prefix: /, service: api}}\n\
         \x20     - {{host: b.local, service: api}}\n\
         \x20 - {{listen: 3422, routes: []}}\n\
         \x20 - {{listen: 4001, routes: [{{service: api, weight: 1}}]}}\n\
         services:\n{}{}{}",
        http_svc("api", ", listen: 4001"),
        http_svc("lonely", ""),
        "  - {name: db, zk_hosts: 'h:1', zk_path: /db, listen: 5432}\n"
    ));
    assert_eq!(
        paths,
        [
            "http_listeners[0].routes[0].host",
            "http_listeners[0].routes[1].path_prefix",
            "http_listeners[0].routes[2].service",
            "http_listeners[0].routes[3].service",
            "http_listeners[0].routes[5]",
            "http_listeners[1].listen",
            "http_listeners[1].routes",
            "http_listeners[2].listen",
            "http_listeners[2].routes[0].weight",
            "services[1].listen",
        ]
    );
}

#[test]
fn worker_threads_default_to_one() {
    let c = load(&one("")).unwrap();
    assert_eq!(c.worker_threads, 1);
    let c = load(&format!("worker_threads: 0\n{}", one(""))).unwrap();
    assert_eq!(c.worker_threads, 0);
    let paths = problem_paths(&format!("worker_threads: 5000\n{}", one("")));
    assert_eq!(paths, ["worker_threads"]);
}

/// The index answers what a scan of the earlier addresses with `listen_conflict` would:
/// the first conflicting one, wildcards and IPv4-mapped addresses included.
#[test]
fn listen_index_finds_the_first_conflict_like_a_scan() {
    let addrs: Vec<SocketAddr> = [
        "127.0.0.1:80",
        "127.0.0.2:80",
        "[::1]:80",
        "[::ffff:127.0.0.3]:80",
        "0.0.0.0:80",
        "[::]:80",
        "127.0.0.1:81",
        "[::]:82",
        "0.0.0.0:83",
        "[fe80::1]:83",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    // Every order of insertion of every pair, then every prefix of the list as "earlier".
    for earlier_len in 0..=addrs.len() {
        for rotate in 0..addrs.len() {
            let mut list = addrs.clone();
            list.rotate_left(rotate);
            let (earlier, later) = list.split_at(earlier_len);
            let mut index = ListenIndex::default();
            for (n, a) in earlier.iter().enumerate() {
                index.insert(*a, n);
            }
            for a in later {
                let scan = earlier
                    .iter()
                    .enumerate()
                    .find(|(_, e)| cc::listen_conflict(**e, *a))
                    .map(|(n, e)| (*e, n));
                assert_eq!(index.conflict(*a), scan, "{a} after {earlier:?}");
            }
        }
    }
}

/// CPU time of this thread (not wall time: other work on the machine does not count).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// `n` services: each with its own name and listen port, and as many `mode: http` services
/// without a listen address, routed by host through one shared listener.
fn many_services(n: usize) -> serde_json::Value {
    let mut services = Vec::new();
    let mut routes = Vec::new();
    for i in 0..n {
        services.push(
            serde_json::json!({"name": format!("tcp{i}"), "zk_hosts": "127.0.0.1:2181",
            "zk_path": format!("/services/tcp{i}"), "listen": format!("127.0.0.1:{}", 10_000 + i)}),
        );
        services.push(
            serde_json::json!({"name": format!("http{i}"), "zk_hosts": "127.0.0.1:2181",
            "zk_path": format!("/services/http{i}"), "mode": "http"}),
        );
        routes.push(serde_json::json!({"host": format!("h{i}.example"), "service": format!("http{i}")}));
    }
    serde_json::json!({"services": services,
        "http_listeners": [{"listen": "127.0.0.1:9000", "routes": routes}]})
}

/// Validation time grows linearly with the services (it was quadratic: every service was
/// compared with every earlier one; 20,000 took 9.9 s). Counted in CPU time of this thread,
/// as a ratio between 8n and n services: linear work gives about 8 whatever the build or the
/// machine's speed, quadratic work about 64 once it dominates. The bound (20) sits between;
/// a slow moment of a shared machine can only spoil one attempt, so the best of three counts.
#[test]
fn validation_is_linear_in_the_services() {
    let n = 1_000;
    let (small, large) = (many_services(n), many_services(8 * n));
    let time = |doc: &serde_json::Value| {
        let start = thread_cpu();
        let mut p = Problems::default();
        let c = Config::from_value(doc.clone(), &mut p).unwrap();
        let spent = thread_cpu() - start;
        assert_eq!(c.services.len() % (2 * n), 0);
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
fn backend_protocol_per_service_and_per_route() {
    let c = load(&format!(
        "http_listeners:\n  - listen: 8080\n    routes:\n\
         \x20     - {{path_prefix: /grpc, service: web, backend_protocol: h2c}}\n\
         \x20     - {{service: web}}\n\
         services:\n{}{}{}",
        http_svc("web", ", listen: 4000"),
        http_svc("g", ", listen: 4001, backend_protocol: h2c"),
        http_svc("a", ", listen: 4002, backend_protocol: auto"),
    ))
    .unwrap();
    let protocols: Vec<_> = c.services.iter().map(|s| s.http.backend_protocol).collect();
    assert_eq!(
        protocols,
        [
            BackendProtocol::Http1,
            BackendProtocol::H2c,
            BackendProtocol::Auto
        ]
    );
    let routes: Vec<_> = c.http_listeners[0]
        .routes
        .iter()
        .map(|r| r.backend_protocol)
        .collect();
    assert_eq!(routes, [Some(BackendProtocol::H2c), None]);
    for b in [
        BackendProtocol::Http1,
        BackendProtocol::H2c,
        BackendProtocol::Auto,
    ] {
        assert_eq!(BackendProtocol::parse(b.as_str()), Ok(b));
    }

    let err = load(&format!(
        "http_listeners:\n  - {{listen: 8080, routes: [{{service: web, backend_protocol: h3}}]}}\n\
         services:\n{}{}",
        http_svc("web", ", backend_protocol: http2"),
        "  - {name: t, zk_hosts: 'h:1', zk_path: /t, listen: 4001, backend_protocol: h2c}\n",
    ))
    .unwrap_err();
    let problems: Vec<(&str, &str)> = err
        .problems
        .iter()
        .map(|p| (p.path.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(
        problems,
        [
            (
                "services[0].backend_protocol",
                "unknown backend_protocol \"http2\": expected http1, h2c or auto"
            ),
            ("services[1].backend_protocol", "only used in mode: http"),
            (
                "http_listeners[0].routes[0].backend_protocol",
                "unknown backend_protocol \"h3\": expected http1, h2c or auto"
            ),
        ]
    );
}

#[test]
fn zookeeper_fleet_keys_default_to_read_only_and_splay() {
    let service = "services:\n  - {name: web, zk_hosts: 'a:1', zk_path: /s/web, listen: 3000}\n";
    let c = load(service).unwrap();
    assert!(c.zk_session.read_only && c.zk_session.follow_reconfig);
    assert_eq!(c.zk_session.splay, common::config::DEFAULT_SPLAY);
    let c = load(&format!("zookeeper: {{read_only: false, splay: 0s}}\n{service}")).unwrap();
    assert!(!c.zk_session.read_only);
    assert_eq!(c.zk_session.splay, Duration::ZERO);
    let err = load(&format!(
        "zookeeper: {{tls: {{ca_file: /nonexistent/ca.pem}}, readonly: true}}\n{service}"
    ))
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["zookeeper.readonly", "zookeeper.tls"], "{err}");
}
