#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("2").unwrap_err().contains("missing unit"));
    assert!(parse_duration("2x").unwrap_err().contains("unknown unit"));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("").is_err());
    assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
    assert!(parse_duration("24.1h").unwrap_err().contains("24h"));
    assert!(parse_duration("5000000000000000h").is_err());
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Check {
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Svc {
    name: String,
    #[serde(default)]
    checks: Vec<Check>,
}

#[test]
fn every_list_element_reports_its_own_problem() {
    let doc = serde_json::json!([
        {"name": "a", "checks": [{"timeout": "1s"}, {"timeout": "2x"}]},
        {"name": "b", "colour": "red"},
        {"name": "c"},
    ]);
    let mut p = Problems::default();
    let values: Vec<serde_json::Value> = serde_json::from_value(doc).unwrap();
    let list: Vec<Svc> = values
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| p.take(&format!("services[{i}]"), v))
        .collect();
    // The bad keys are removed (optional ones take their defaults) and the rest still checked.
    assert_eq!(list.len(), 3);
    let err = p.finish(Path::new("x.yaml"), ()).unwrap_err();
    assert_eq!(err.problems.len(), 2);
    assert_eq!(err.problems[0].path, "services[0].checks[1].timeout");
    assert!(
        err.problems[0].reason.contains("unknown unit"),
        "{}",
        err.problems[0].reason
    );
    assert_eq!(err.problems[1].path, "services[1].colour");
    assert!(err.problems[1].reason.contains("colour"));
    let text = err.to_string();
    assert!(text.contains("x.yaml: services[0].checks[1].timeout"), "{text}");
}

#[test]
fn reads_yaml_and_json_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("a.yaml");
    std::fs::write(&y, "a: 1\nb: [x]\n").unwrap();
    assert_eq!(
        read_document(&y).unwrap(),
        serde_json::json!({"a": 1, "b": ["x"]})
    );
    let j = dir.path().join("a.json");
    std::fs::write(&j, "{\"a\": 1}").unwrap();
    assert_eq!(read_document(&j).unwrap(), serde_json::json!({"a": 1}));
    let t = dir.path().join("a.toml");
    std::fs::write(&t, "a = 1").unwrap();
    assert!(read_document(&t).unwrap_err().to_string().contains("extension"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "a: [1\n").unwrap();
    assert!(read_document(&bad)
        .unwrap_err()
        .to_string()
        .contains("not valid YAML"));
}

#[test]
fn zk_hosts_and_paths() {
    assert!(check_zk_hosts("127.0.0.1:2181").is_ok());
    assert!(check_zk_hosts("a:1,b:2/chroot/x").is_ok());
    assert!(check_zk_hosts("a").is_err());
    assert!(check_zk_hosts("a:0").is_err());
    assert!(check_zk_hosts("a:1//x").is_err());
    assert!(check_zk_path("/services/web").is_ok());
    assert!(check_zk_path("services").is_err());
    assert!(check_zk_path("/a//b").is_err());
    assert!(check_zk_path("/a/").is_err());
    assert_eq!(parse_listen("8080").unwrap(), "127.0.0.1:8080".parse().unwrap());
    assert!(parse_listen("nope").is_err());
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Inner {
    port: u16,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Outer {
    name: String,
    #[serde(default)]
    inner: Option<Inner>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    zookeeper: RawZookeeperConfig,
    admin: Option<RawAdminConfig>,
    list: Vec<serde_json::Value>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

fn problems(p: Problems) -> Vec<(String, String)> {
    match p.finish(Path::new("x.yaml"), ()) {
        Ok(()) => Vec::new(),
        Err(e) => e.problems.into_iter().map(|p| (p.path, p.reason)).collect(),
    }
}

#[test]
fn take_reports_every_bad_key_of_every_level_in_one_pass() {
    let doc = serde_json::json!({
        "name": 5,
        "colour": "red",
        "inner": {"port": "x", "timeout": "2x", "extra": 1},
        "log": {"level": "loud", "style": 1},
        "zookeeper": {"session_timeout": "1000h", "flavour": 1},
        "admin": {"listen": 1, "other": 2},
        "list": [1, 2],
        "labels": {"a": "b", "c": [1], "d": 2},
    });
    let mut p = Problems::default();
    let outer: Option<Outer> = p.take("", doc);
    let got = problems(p);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "name",
        "colour",
        "inner.port",
        "inner.timeout",
        "inner.extra",
        "log.level",
        "log.style",
        "zookeeper.session_timeout",
        "zookeeper.flavour",
        "admin.listen",
        "admin.other",
        "labels.c",
        "labels.d",
    ] {
        assert_eq!(
            paths.iter().filter(|p| **p == want).count(),
            1,
            "{want} reported once: {got:?}"
        );
    }
    assert_eq!(paths.len(), 13, "{got:?}");
    assert!(
        !got.iter().any(|(_, r)| r.contains("missing field")),
        "no follow-up 'missing field' for removed keys: {got:?}"
    );
    // Stand-ins let the whole value through, so callers can go on checking the rest.
    let outer = outer.expect("deserializes once the bad keys are gone");
    assert_eq!(outer.list.len(), 2);
    assert_eq!(outer.labels.len(), 1);
}

#[test]
fn take_reports_a_missing_key_and_still_checks_the_rest() {
    let mut p = Problems::default();
    let v: Option<Outer> = p.take(
        "services[3]",
        serde_json::json!({"list": [], "bogus": 1, "inner": {"timeout": "1s"}}),
    );
    assert!(v.is_some());
    // Semantic checks of a refused or stood-in key only repeat the problem: dropped.
    p.push("services[3].name", "name is empty");
    p.push("services[3].inner.port", "port must be in 1..=65535");
    p.push("services[3].list", "still reported: not refused");
    let got = problems(p);
    assert_eq!(
        got,
        [
            (
                "services[3].bogus".to_string(),
                "unknown field `bogus`, expected one of `name`, `inner`, `log`, `zookeeper`, `admin`, `list`, `labels`".to_string()
            ),
            (
                "services[3].inner".to_string(),
                "missing field `port`".to_string()
            ),
            ("services[3]".to_string(), "missing field `name`".to_string()),
            (
                "services[3].list".to_string(),
                "still reported: not refused".to_string()
            ),
        ]
    );
}

#[test]
fn take_gives_up_on_a_value_of_the_wrong_type() {
    let mut p = Problems::default();
    let v: Option<Outer> = p.take("services[0]", serde_json::json!("web"));
    assert!(v.is_none());
    let got = problems(p);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "services[0]");
}

#[test]
fn config_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let reason = |path: &Path| read_document(path).unwrap_err().problems[0].reason.clone();
    assert!(reason(Path::new("/dev/zero")).contains("character device"));
    let link = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    assert!(reason(&link).contains("not a regular file"));
    let sub = dir.path().join("d.yaml");
    std::fs::create_dir(&sub).unwrap();
    assert!(reason(&sub).contains("a directory"));
    let fifo = dir.path().join("f.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert!(reason(&fifo).contains("a FIFO"));
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; usize::try_from(MAX_FILE_BYTES).unwrap() + 1]).unwrap();
    assert!(reason(&big).contains("4 MiB"), "{}", reason(&big));
    let at_cap = dir.path().join("cap.yaml");
    let mut text = vec![b' '; usize::try_from(MAX_FILE_BYTES).unwrap() - 4];
    text.extend_from_slice(b"a: 1");
    std::fs::write(&at_cap, text).unwrap();
    assert_eq!(read_document(&at_cap).unwrap(), serde_json::json!({"a": 1}));
    let good_link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&at_cap, &good_link).unwrap();
    assert!(read_document(&good_link).is_ok());
    let latin1 = dir.path().join("l.yaml");
    std::fs::write(&latin1, b"a: \xe9\n").unwrap();
    assert!(reason(&latin1).contains("UTF-8"));
}

#[test]
fn session_timeout_range() {
    let zk = |t: &str| {
        let mut p = Problems::default();
        let z: Option<RawZookeeperConfig> = p.take("zookeeper", serde_json::json!({"session_timeout": t}));
        (z.and_then(|z| z.session_timeout.0), problems(p))
    };
    assert_eq!(zk("1s").0, Some(Duration::from_secs(1)));
    assert_eq!(zk("5m").0, Some(Duration::from_secs(300)));
    let (_, got) = zk("1000h");
    assert_eq!(got[0].0, "zookeeper.session_timeout", "{got:?}");
    for bad in ["2h", "999ms", "0s", "301s"] {
        let (_, got) = zk(bad);
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert_eq!(got[0].0, "zookeeper.session_timeout");
        assert!(got[0].1.contains("1s to 5m"), "{got:?}");
    }
    let mut p = Problems::default();
    let shared =
        RawShared::<RawZookeeperConfig>::take(&mut p, &serde_json::json!({})).validate(&mut p, SYNAPSE_LIKE);
    assert_eq!(shared.zk_session_timeout, DEFAULT_SESSION_TIMEOUT);
}

const SYNAPSE_LIKE: SharedDefaults = SharedDefaults {
    admin_listen: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3422),
    read_only: Some(true),
};

crate::zookeeper_section! {
    /// A section with an agent's own key, as nerve's.
    struct WithAuth {
        auth: Option<String>,
    }
}

#[test]
fn shared_keys_are_the_fields_of_raw_shared() {
    let mut p = Problems::default();
    let _: Option<RawShared<RawZookeeperConfig>> = p.take("", serde_json::json!({"x": 1}));
    let want = format!(
        "unknown field `x`, expected one of {}",
        SHARED_KEYS.map(|k| format!("`{k}`")).join(", ")
    );
    assert_eq!(problems(p), [("x".to_string(), want)]);
}

#[test]
fn shared_keys_are_read_from_the_whole_document_at_their_paths() {
    let doc = serde_json::json!({
        "services": [{"anything": "the agent's"}],
        "zookeeper": {"session_timeout": "3s", "splay": "1s", "auth": "x", "flavour": 1},
        "admin": {"listen": "nope"},
        "log": {"level": "verbose"},
        "upgrade_socket": "relative.sock",
    });
    let mut p = Problems::default();
    let raw = RawShared::<WithAuth>::take(&mut p, &doc);
    assert_eq!(raw.zookeeper.auth.as_deref(), Some("x"));
    let shared = raw.validate(&mut p, SYNAPSE_LIKE);
    assert_eq!(shared.zk_session_timeout, Duration::from_secs(3));
    assert_eq!(shared.zk_session.splay, Duration::from_secs(1));
    assert!(shared.zk_session.read_only, "the agent's default");
    assert_eq!(shared.admin_listen, SYNAPSE_LIKE.admin_listen);
    assert_eq!(shared.upgrade_socket, None);
    let got = problems(p);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["log.level", "zookeeper.flavour", "admin.listen", "upgrade_socket"],
        "{got:?}"
    );
    // The agent's own key sits where it was declared, after session_timeout.
    assert_eq!(
        got[1].1,
        "unknown field `flavour`, expected one of `session_timeout`, `auth`, `splay`, \
         `read_only`, `follow_reconfig`, `tls`"
    );
}

#[test]
fn a_writing_agent_refuses_read_only_sessions() {
    let mut p = Problems::default();
    let doc = serde_json::json!({"zookeeper": {"read_only": true}});
    let shared = RawShared::<WithAuth>::take(&mut p, &doc).validate(
        &mut p,
        SharedDefaults {
            read_only: None,
            ..SYNAPSE_LIKE
        },
    );
    assert!(!shared.zk_session.read_only);
    let got = problems(p);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "zookeeper.read_only");
}

#[test]
fn log_levels() {
    for good in [
        "info",
        "DEBUG",
        "warn,synapse=debug",
        "common::registry=trace,info",
        "off",
        "info,",
    ] {
        assert_eq!(check_log_level(good), Ok(()), "{good}");
    }
    for bad in ["", " ", "verbose", "inf", "info,x=loud", "debug,[{", "a=b=c"] {
        assert!(check_log_level(bad).is_err(), "{bad:?}");
    }
}

/// Found by `text_checks_never_panic`: tracing-subscriber's directive parser slices inside a
/// multibyte character (it panicked on this value of `log.level`).
#[test]
fn a_log_level_with_multibyte_characters_is_refused_not_a_panic() {
    let err = check_log_level("\u{2000}\u{1e800}=").unwrap_err();
    assert!(err.contains("ASCII"), "{err}");
    assert!(check_log_level("synapse=débug").is_err());
}

#[test]
fn listen_addresses() {
    assert!(parse_listen("0").unwrap_err().contains("port 0"));
    assert!(parse_listen("127.0.0.1:0").unwrap_err().contains("port 0"));
    assert!(parse_listen("[::]:0").is_err());
    assert_eq!(parse_listen("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
    let conflict = |a: &str, b: &str| {
        let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(listen_conflict(a, b), listen_conflict(b, a), "symmetric");
        listen_conflict(a, b)
    };
    for (a, b) in [
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("0.0.0.0:80", "127.0.0.1:80"),
        ("0.0.0.0:80", "10.1.2.3:80"),
        ("[::]:80", "127.0.0.1:80"),
        ("[::]:80", "0.0.0.0:80"),
        ("[::]:80", "[::1]:80"),
        ("[::ffff:127.0.0.1]:80", "127.0.0.1:80"),
        ("0.0.0.0:80", "[::ffff:10.0.0.1]:80"),
    ] {
        assert!(conflict(a, b), "{a} vs {b}");
    }
    for (a, b) in [
        ("127.0.0.1:80", "127.0.0.1:81"),
        ("127.0.0.1:80", "127.0.0.2:80"),
        ("0.0.0.0:80", "[::1]:80"),
        ("0.0.0.0:80", "0.0.0.0:81"),
        ("[::1]:80", "127.0.0.1:80"),
    ] {
        assert!(!conflict(a, b), "{a} vs {b}");
    }
}

#[test]
fn zk_paths_refuse_what_zookeeper_refuses() {
    for bad in [
        "/a\u{0}b",
        "/a\u{1}",
        "/a\u{1f}",
        "/a\tb",
        "/a\nb",
        "/a\u{7f}",
        "/a\u{85}",
        "/a\u{9f}",
        "/a\u{e000}",
        "/a\u{f8ff}",
        "/a\u{fff0}",
        "/a\u{ffff}",
        "/a\u{1f600}",
    ] {
        assert!(check_zk_path(bad).unwrap_err().contains("refuses"), "{bad:?}");
        assert!(check_zk_hosts(&format!("h:1{bad}")).is_err(), "chroot {bad:?}");
    }
    for good in [
        "/a b",
        "/é/ü",
        "/\u{a0}",
        "/a\u{d7ff}",
        "/\u{f900}",
        "/\u{ffef}",
        "/a-b_c.d:e",
    ] {
        assert_eq!(check_zk_path(good), Ok(()), "{good:?}");
    }
    assert!(check_zk_hosts("h:1/a\u{1}").unwrap_err().contains("chroot"));
    assert!(check_zk_hosts("bad host:1").is_err());
    assert!(check_zk_hosts("[::1]:2181,10.0.0.1:2181,zk-1.example:2181").is_ok());
    assert!(check_zk_hosts("[nope]:2181").is_err());
}

#[test]
fn zk_location_keys() {
    assert_eq!(
        zk_location_key("a:1,b:2", "/s/web"),
        zk_location_key("B:2,a:1", "/s/web")
    );
    assert_eq!(
        zk_location_key("a:1/services", "/web"),
        zk_location_key("a:1", "/services/web")
    );
    assert_ne!(zk_location_key("a:1", "/s/web"), zk_location_key("a:2", "/s/web"));
    assert_eq!(zk_location_key("a:1/x", "/"), zk_location_key("a:1", "/x"));
}

#[test]
fn names() {
    assert!(check_name("web-1.a_b").is_ok());
    assert!(check_name("").is_err());
    assert!(check_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    assert!(check_name(&"a".repeat(MAX_NAME_BYTES + 1)).is_err());
    assert!(check_name("a b").is_err());
    assert!(check_name("a/b").is_err());
}

// ---- properties (proptest; bounded: a few hundred cases each, about a second in all) ----

mod props {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;

    fn bounded(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            // Failures print the shrunk input; nothing is written into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Any JSON value, a few levels deep, biased towards what the `Outer` struct reads.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (0u32..70_000).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[0-9.]{1,5}(ms|s|m|h|x)?".prop_map(Value::from),
            prop_oneof![Just("info"), Just("debug,x=trace"), Just("loud"), Just("json")]
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            let keys = prop_oneof![
                Just("name".to_owned()),
                Just("inner".to_owned()),
                Just("port".to_owned()),
                Just("timeout".to_owned()),
                Just("log".to_owned()),
                Just("level".to_owned()),
                Just("format".to_owned()),
                Just("zookeeper".to_owned()),
                Just("session_timeout".to_owned()),
                Just("admin".to_owned()),
                Just("listen".to_owned()),
                Just("list".to_owned()),
                Just("labels".to_owned()),
                any::<String>(),
            ];
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map(keys, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(bounded(256))]

        #[test]
        fn text_checks_never_panic(text in any::<String>()) {
            let _ = parse_duration(&text);
            let _ = parse_listen(&text);
            let _ = check_zk_hosts(&text);
            let _ = check_zk_path(&text);
            let _ = check_name(&text);
            let _ = check_log_level(&text);
            let _ = zk_location_key(&text, &text);
        }

        #[test]
        fn durations_within_24h_round_trip(ms in 0u64..=24 * 3600 * 1000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
            prop_assert_eq!(parse_duration(&format!(" {}s ", ms / 1000)), Ok(Duration::from_secs(ms / 1000)));
        }

        #[test]
        fn durations_past_24h_are_refused(extra_ms in 1u64..u64::MAX / 2) {
            let ms = (24 * 3600 * 1000u64).saturating_add(extra_ms);
            let text = format!("{ms}ms");
            prop_assert!(parse_duration(&text).is_err(), "{} accepted", text);
        }

        #[test]
        fn listen_ports_round_trip(port in 1u16..=u16::MAX) {
            let want: SocketAddr = ([127, 0, 0, 1], port).into();
            prop_assert_eq!(parse_listen(&port.to_string()), Ok(want));
            prop_assert_eq!(parse_listen(&format!("127.0.0.1:{port}")), Ok(want));
        }

        /// `take` agrees with plain serde: it records nothing exactly when the value
        /// deserializes as is (then gives the same value), and it always terminates.
        #[test]
        fn take_agrees_with_serde_and_never_panics(value in json()) {
            let direct = serde_json::from_value::<Outer>(value.clone());
            let mut p = Problems::default();
            let taken: Option<Outer> = p.take("svc", value);
            let got = problems(p);
            match direct {
                Ok(want) => {
                    prop_assert!(got.is_empty(), "serde accepts it, take reports {:?}", got);
                    prop_assert_eq!(format!("{:?}", taken), format!("{:?}", Some(want)));
                }
                Err(e) => {
                    prop_assert!(!got.is_empty(), "serde refuses it ({}), take reports nothing", e);
                    for (path, _) in &got {
                        prop_assert!(path.starts_with("svc"), "problem outside the value: {}", path);
                    }
                }
            }
        }

        #[test]
        fn read_document_never_panics(content in vec(any::<u8>(), 0..512), json in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join(if json { "c.json" } else { "c.yaml" });
            std::fs::write(&file, &content).unwrap();
            if let Err(e) = read_document(&file) {
                prop_assert!(!e.problems.is_empty());
            }
        }
    }
}

#[test]
fn a_refused_path_covers_its_keys_and_elements_only() {
    let mut p = Problems::default();
    p.refuse("services[1]", "bad service");
    p.refuse("", "bad document");
    p.push("services[1].port", "dropped: under services[1]");
    p.push("services[1][0]", "dropped: under services[1]");
    p.push("services[10].port", "kept: services[10] is another element");
    p.push("services[1]x", "kept: another key");
    p.push("services", "kept: the root refusal covers only the root");
    p.push("", "dropped: the root itself");
    let got: Vec<String> = problems(p).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        got,
        [
            "bad service",
            "bad document",
            "kept: services[10] is another element",
            "kept: another key",
            "kept: the root refusal covers only the root",
        ]
    );
}

#[test]
fn a_document_that_is_not_a_mapping_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for (text, found) in [
        ("", "an empty document"),
        ("[1, 2]", "a list"),
        ("hello", "a string"),
        ("3", "a number"),
    ] {
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, text).unwrap();
        let err = load(&file, |_, _| Some(())).unwrap_err();
        assert_eq!(
            err.problems,
            [Problem {
                path: String::new(),
                reason: format!("expected a mapping of keys (`key: value`), found {found}"),
            }],
            "{text:?}"
        );
    }
}
