#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn node(host: &str, port: u16) -> Node {
    Node {
        host: host.to_owned(),
        port,
        name: None,
        weight: None,
        available: true,
        unavailable_reason: None,
        haproxy_server_options: None,
        labels: BTreeMap::new(),
        shard: None,
    }
}

fn full_node() -> Node {
    Node {
        name: Some("i-0abc_def".to_owned()),
        weight: Some(25),
        haproxy_server_options: Some("backup check inter 2s".to_owned()),
        labels: BTreeMap::from([
            ("az".to_owned(), "us-east-1a".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ]),
        ..node("10.1.2.3", 8080)
    }
}

fn dec(data: &str) -> Result<Node, DecodeError> {
    decode("i-abc_0000000001", data.as_bytes())
}

fn path_name(json: &str, seq: &str) -> String {
    let enc = URL_SAFE.encode(json);
    format!("base64_{}_{enc}{seq}", enc.len())
}

// ---- encode ----

#[test]
fn encode_minimal_is_compact_and_ordered() {
    let bytes = encode(&node("h1", 80));
    assert_eq!(bytes, br#"{"host":"h1","port":80,"available":true}"#);
}

#[test]
fn encode_full_has_deterministic_key_order() {
    let text = String::from_utf8(encode(&full_node())).unwrap();
    assert_eq!(
        text,
        r#"{"host":"10.1.2.3","port":8080,"name":"i-0abc_def","weight":25,"haproxy_server_options":"backup check inter 2s","labels":{"az":"us-east-1a","env":"prod"},"available":true}"#
    );
}

#[test]
fn encode_unavailable_writes_available_false_and_reason() {
    let n = Node {
        available: false,
        unavailable_reason: Some("draining".to_owned()),
        ..node("h", 1)
    };
    let text = String::from_utf8(encode(&n)).unwrap();
    assert_eq!(
        text,
        r#"{"host":"h","port":1,"available":false,"unavailable_reason":"draining"}"#
    );
    assert_eq!(decode("x", text.as_bytes()).unwrap(), n);
}

#[test]
fn encode_available_omits_reason() {
    let n = Node {
        unavailable_reason: Some("stale".to_owned()),
        ..node("h", 1)
    };
    assert_eq!(encode(&n), br#"{"host":"h","port":1,"available":true}"#);
}

/// go-synapse switches a server back on in HAProxy only when it reads `"available": true`:
/// a healthy node must say so, or a backend that went down and came back stays disabled.
#[test]
fn encode_available_writes_available_true_like_go_nerve() {
    let v: serde_json::Value = serde_json::from_slice(&encode(&full_node())).unwrap();
    assert_eq!(v["available"], serde_json::Value::Bool(true), "{v}");
    assert!(v.get("unavailable_reason").is_none(), "{v}");
}

#[test]
fn encode_does_not_write_shard() {
    let n = Node {
        shard: Some(4),
        ..node("h", 1)
    };
    assert_eq!(encode(&n), br#"{"host":"h","port":1,"available":true}"#);
}

#[test]
fn encode_escapes_strings() {
    let n = Node {
        name: Some("a\"b\\c\u{1}é".to_owned()),
        ..node("h", 1)
    };
    let back = decode("x", &encode(&n)).unwrap();
    assert_eq!(back, n);
}

// ---- airbnb nerve ----

#[test]
fn airbnb_round_trip() {
    let n = full_node();
    assert_eq!(decode("i-0abc_0000000007", &encode(&n)).unwrap(), n);
    let minimal = node("db.internal", 5432);
    assert_eq!(decode("x", &encode(&minimal)).unwrap(), minimal);
}

#[test]
fn airbnb_real_payload() {
    let n = dec(r#"{"host":"10.0.0.5","port":3000,"name":"i-0f00","weight":100,"haproxy_server_options":"backup","labels":{"region":"eu"}}"#).unwrap();
    assert_eq!(n.host, "10.0.0.5");
    assert_eq!(n.port, 3000);
    assert_eq!(n.name.as_deref(), Some("i-0f00"));
    assert_eq!(n.weight, Some(100));
    assert_eq!(n.haproxy_server_options.as_deref(), Some("backup"));
    assert_eq!(n.labels.get("region").map(String::as_str), Some("eu"));
    assert!(n.available);
    assert_eq!(n.shard, None);
}

#[test]
fn only_host_and_port_required() {
    assert_eq!(dec(r#"{"host":"h","port":9}"#).unwrap(), node("h", 9));
}

#[test]
fn nulls_are_treated_as_missing() {
    let n = dec(r#"{"host":"h","port":9,"name":null,"weight":null,"labels":null,"available":null,"unavailable_reason":null,"haproxy_server_options":null}"#).unwrap();
    assert_eq!(n, node("h", 9));
    assert_eq!(
        dec(r#"{"host":null,"port":9}"#).unwrap_err(),
        DecodeError::MissingField("host")
    );
    assert_eq!(
        dec(r#"{"host":"h","port":null}"#).unwrap_err(),
        DecodeError::MissingField("port")
    );
}

#[test]
fn unknown_keys_ignored() {
    let n =
        dec(r#"{"host":"h","port":9,"zk_path":"/x","extra":{"deep":[1,2,{"a":null}]},"shard":3}"#).unwrap();
    assert_eq!(n, node("h", 9));
}

#[test]
fn whitespace_around_json_is_fine() {
    assert_eq!(dec(" \n{\"host\":\"h\",\"port\":9}\n ").unwrap(), node("h", 9));
}

#[test]
fn labels_with_non_string_values() {
    let n = dec(r#"{"host":"h","port":9,"labels":{"s":"x","n":42,"f":1.5,"b":true,"z":null,"a":[1,"2"],"o":{"k":"v"}}}"#).unwrap();
    let got: Vec<(&str, &str)> = n.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("a", r#"[1,"2"]"#),
            ("b", "true"),
            ("f", "1.5"),
            ("n", "42"),
            ("o", r#"{"k":"v"}"#),
            ("s", "x"),
            ("z", "null"),
        ]
    );
}

#[test]
fn labels_must_be_object() {
    let err = dec(r#"{"host":"h","port":9,"labels":["a"]}"#).unwrap_err();
    assert!(
        matches!(err, DecodeError::WrongType { field: "labels", .. }),
        "{err:?}"
    );
}

#[test]
fn string_fields_must_be_strings() {
    for key in ["name", "haproxy_server_options", "unavailable_reason"] {
        let err = dec(&format!(r#"{{"host":"h","port":9,"{key}":5}}"#)).unwrap_err();
        assert!(
            matches!(err, DecodeError::WrongType { field, .. } if field == key),
            "{key}: {err:?}"
        );
    }
    let err = dec(r#"{"host":7,"port":9}"#).unwrap_err();
    assert!(
        matches!(err, DecodeError::WrongType { field: "host", .. }),
        "{err:?}"
    );
}

// ---- go-nerve ----

#[test]
fn go_nerve_port_as_string_unavailable_with_reason() {
    let n = dec(r#"{"host":"10.0.0.9","port":"8080","name":"api","weight":"7","available":false,"unavailable_reason":"maintenance"}"#).unwrap();
    assert_eq!(n.port, 8080);
    assert_eq!(n.weight, Some(7));
    assert!(!n.available);
    assert_eq!(n.unavailable_reason.as_deref(), Some("maintenance"));
    assert_eq!(n.name.as_deref(), Some("api"));
}

#[test]
fn go_nerve_missing_available_means_true() {
    let n = dec(r#"{"host":"h","port":"443"}"#).unwrap();
    assert!(n.available);
    assert_eq!(n.unavailable_reason, None);
    let n = dec(r#"{"host":"h","port":443,"available":true}"#).unwrap();
    assert!(n.available);
}

#[test]
fn available_must_be_bool() {
    let err = dec(r#"{"host":"h","port":1,"available":"false"}"#).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::WrongType {
                field: "available",
                ..
            }
        ),
        "{err:?}"
    );
}

// ---- validation ----

#[test]
fn port_zero_rejected() {
    assert_eq!(
        dec(r#"{"host":"h","port":0}"#).unwrap_err(),
        DecodeError::BadPort("0".to_owned())
    );
    assert_eq!(
        dec(r#"{"host":"h","port":"0"}"#).unwrap_err(),
        DecodeError::BadPort("\"0\"".to_owned())
    );
}

#[test]
fn port_out_of_range_rejected() {
    assert_eq!(
        dec(r#"{"host":"h","port":70000}"#).unwrap_err(),
        DecodeError::BadPort("70000".to_owned())
    );
    assert!(matches!(
        dec(r#"{"host":"h","port":"65536"}"#),
        Err(DecodeError::BadPort(_))
    ));
    assert!(matches!(
        dec(r#"{"host":"h","port":-1}"#),
        Err(DecodeError::BadPort(_))
    ));
    assert!(matches!(
        dec(r#"{"host":"h","port":99999999999999999999999}"#),
        Err(DecodeError::BadPort(_))
    ));
    assert_eq!(dec(r#"{"host":"h","port":65535}"#).unwrap().port, 65535);
    assert_eq!(dec(r#"{"host":"h","port":1}"#).unwrap().port, 1);
}

#[test]
fn port_not_a_number_rejected() {
    let err = dec(r#"{"host":"h","port":"x"}"#).unwrap_err();
    assert_eq!(err, DecodeError::BadPort("\"x\"".to_owned()));
    assert_eq!(err.to_string(), r#"port "x" is not a number in 1..=65535"#);
    for bad in [
        r#""""#,
        r#"" 80""#,
        r#""+80""#,
        r#""80.0""#,
        "80.5",
        "80.0",
        "true",
        "[80]",
        "{}",
    ] {
        let err = dec(&format!(r#"{{"host":"h","port":{bad}}}"#)).unwrap_err();
        assert!(matches!(err, DecodeError::BadPort(_)), "{bad}: {err:?}");
    }
}

#[test]
fn missing_port_and_host() {
    assert_eq!(
        dec(r#"{"host":"h"}"#).unwrap_err(),
        DecodeError::MissingField("port")
    );
    assert_eq!(
        dec(r#"{"port":1}"#).unwrap_err(),
        DecodeError::MissingField("host")
    );
    assert_eq!(dec("{}").unwrap_err(), DecodeError::MissingField("host"));
}

#[test]
fn empty_or_spaced_host_rejected() {
    let err = dec(r#"{"host":"","port":1}"#).unwrap_err();
    assert_eq!(err, DecodeError::BadHost(String::new()));
    assert_eq!(
        err.to_string(),
        r#"host "" is not an IP address or a valid host name"#
    );
    for bad in [" h", "h ", "a b", "a\tb", "a\nb", "a\u{a0}b"] {
        let json = serde_json::json!({"host": bad, "port": 1}).to_string();
        assert_eq!(
            dec(&json).unwrap_err(),
            DecodeError::BadHost(bad.to_owned()),
            "{bad:?}"
        );
    }
}

#[test]
fn hosts_must_be_ip_addresses_or_host_names() {
    let good = [
        "10.0.0.1",
        "::1",
        "fd00::1:2",
        "::ffff:10.0.0.1",
        "localhost",
        "h",
        "web-1.prod.example.com",
        "web-1.prod.example.com.",
        "db_replica-3.internal",
        "1a.example",
        "x1",
        "i-0abc123",
    ];
    for host in good {
        assert_eq!(check_host(host), Ok(()), "{host}");
        let json = serde_json::json!({"host": host, "port": 1}).to_string();
        assert_eq!(dec(&json).unwrap().host, host);
    }
    let label63 = "a".repeat(63);
    let name253 = [label63.as_str(); 4].join(".")[..253].to_string();
    assert_eq!(check_host(&name253), Ok(()));
    assert_eq!(check_host(&format!("{name253}.")), Ok(()));
    let bad = [
        String::new(),
        "x".repeat(10_000),
        format!("{name253}a"),
        format!("{}.example", "a".repeat(64)),
        "[::1]".to_owned(),
        "fe80::1%eth0".to_owned(),
        "1:2:3".to_owned(),
        "10.0.0.256".to_owned(),
        "10.0.0".to_owned(),
        "1234".to_owned(),
        "-web.example".to_owned(),
        "web-.example".to_owned(),
        "a..b".to_owned(),
        ".a".to_owned(),
        "a.b..".to_owned(),
        ".".to_owned(),
        "a/b".to_owned(),
        "a:80".to_owned(),
        "héllo".to_owned(),
        "a\u{0}b".to_owned(),
        "a\u{7f}".to_owned(),
        "tab\there".to_owned(),
    ];
    for host in &bad {
        assert!(check_host(host).is_err(), "{host:?}");
        let json = serde_json::json!({"host": host, "port": 1}).to_string();
        assert!(matches!(dec(&json), Err(DecodeError::BadHost(_))), "{host:?}");
    }
    // The 10 KB host is quoted shortened, and refused in every dialect.
    let long = "x".repeat(10_000);
    let json = serde_json::json!({"serviceEndpoint": {"host": long, "port": 1}}).to_string();
    let Err(DecodeError::BadHost(quoted)) = decode("member_1", json.as_bytes()) else {
        panic!("expected BadHost")
    };
    assert!(quoted.chars().count() <= MAX_QUOTED_CHARS + 1);
    let name = path_name(&serde_json::json!({"host": "a b", "port": 1}).to_string(), "_1");
    assert!(matches!(decode(&name, b""), Err(DecodeError::BadHost(_))));
}

#[test]
fn weight_validation() {
    assert_eq!(
        dec(r#"{"host":"h","port":1,"weight":0}"#).unwrap().weight,
        Some(0)
    );
    assert_eq!(
        dec(r#"{"host":"h","port":1,"weight":4294967295}"#)
            .unwrap()
            .weight,
        Some(u32::MAX)
    );
    for bad in [
        "-1",
        "1.5",
        "4294967296",
        r#""x""#,
        r#""-3""#,
        r#""""#,
        "true",
        "[]",
    ] {
        let err = dec(&format!(r#"{{"host":"h","port":1,"weight":{bad}}}"#)).unwrap_err();
        assert_eq!(err, DecodeError::BadWeight(bad.to_owned()), "{bad}");
    }
    let err = dec(r#"{"host":"h","port":1,"weight":-1}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "weight -1 is not a non-negative integer that fits in 32 bits"
    );
}

#[test]
fn long_values_are_shortened_in_errors() {
    let long = "x".repeat(10_000);
    let json = serde_json::json!({"host": "h", "port": long}).to_string();
    let DecodeError::BadPort(quoted) = dec(&json).unwrap_err() else {
        panic!("expected BadPort")
    };
    assert!(quoted.chars().count() <= MAX_QUOTED_CHARS + 1, "{}", quoted.len());
    assert!(quoted.ends_with('…'));
}

// ---- malformed input ----

#[test]
fn empty_data_rejected() {
    assert_eq!(decode("member_0000000001", b"").unwrap_err(), DecodeError::Empty);
    assert_eq!(decode("x", b"  \n\t").unwrap_err(), DecodeError::Empty);
    assert_eq!(DecodeError::Empty.to_string(), "node data is empty");
}

#[test]
fn not_utf8_rejected() {
    assert_eq!(
        decode("x", b"{\"host\":\"\xff\",\"port\":1}").unwrap_err(),
        DecodeError::NotUtf8
    );
}

#[test]
fn malformed_json_rejected() {
    for bad in [
        r#"{"host":"h","port":1"#,
        "{host:h}",
        "not json",
        r#"{"host":"h","port":1}}"#,
        "{,}",
    ] {
        let err = dec(bad).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{bad}: {err:?}");
        assert!(
            err.to_string().starts_with("node data is not valid JSON: "),
            "{err}"
        );
    }
}

#[test]
fn json_non_objects_rejected() {
    assert_eq!(
        dec(r#"[{"host":"h","port":1}]"#).unwrap_err(),
        DecodeError::NotAnObject("an array")
    );
    assert_eq!(dec(r#""h:1""#).unwrap_err(), DecodeError::NotAnObject("a string"));
    assert_eq!(dec("42").unwrap_err(), DecodeError::NotAnObject("a number"));
    assert_eq!(dec("null").unwrap_err(), DecodeError::NotAnObject("null"));
    assert_eq!(dec("true").unwrap_err(), DecodeError::NotAnObject("a boolean"));
}

#[test]
fn deeply_nested_json_does_not_overflow() {
    let deep = format!(
        r#"{{"host":"h","port":1,"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(dec(&deep), Err(DecodeError::Json(_))));
}

// ---- serversets ----

const SERVERSET_ALIVE_JSON: &str = r#"{"serviceEndpoint":{"host":"10.2.3.4","port":31337},"additionalEndpoints":{"http":{"host":"10.2.3.4","port":31338},"health":{"host":"10.2.3.4","port":31339}},"status":"ALIVE","shard":2}"#;

#[test]
fn serverset_alive() {
    let n = decode("member_0000000042", SERVERSET_ALIVE_JSON.as_bytes()).unwrap();
    assert_eq!(
        n,
        Node {
            shard: Some(2),
            ..node("10.2.3.4", 31337)
        }
    );
}

#[test]
fn serverset_dead() {
    let json = r#"{"serviceEndpoint":{"host":"h","port":80},"additionalEndpoints":{},"status":"DEAD"}"#;
    let n = decode("member_0000000001", json.as_bytes()).unwrap();
    assert!(!n.available);
    assert_eq!(n.unavailable_reason.as_deref(), Some("serverset status DEAD"));
    assert_eq!(n.shard, None);
    assert_eq!(n.name, None);
}

#[test]
fn serverset_missing_status_is_alive() {
    let n = decode("member_1", br#"{"serviceEndpoint":{"host":"h","port":"80"}}"#).unwrap();
    assert_eq!(n, node("h", 80));
}

#[test]
fn serverset_with_additional_endpoints_and_extras() {
    let json = r#"{"serviceEndpoint":{"host":"h","port":80},"additionalEndpoints":{"aurora":{"host":"h","port":81},"weird":"not-an-endpoint"},"status":"ALIVE","memberId":"abc","shard":null}"#;
    assert_eq!(decode("member_1", json.as_bytes()).unwrap(), node("h", 80));
}

#[test]
fn serverset_validation() {
    let cases: [(&str, DecodeError); 5] = [
        (
            r#"{"serviceEndpoint":{"port":80}}"#,
            DecodeError::MissingField("serviceEndpoint.host"),
        ),
        (
            r#"{"serviceEndpoint":{"host":"h"}}"#,
            DecodeError::MissingField("serviceEndpoint.port"),
        ),
        (
            r#"{"serviceEndpoint":{"host":"h","port":0}}"#,
            DecodeError::BadPort("0".to_owned()),
        ),
        (
            r#"{"serviceEndpoint":{"host":"","port":1}}"#,
            DecodeError::BadHost(String::new()),
        ),
        (
            r#"{"serviceEndpoint":"h:1"}"#,
            DecodeError::WrongType {
                field: "serviceEndpoint",
                expected: "an object",
                found: "\"h:1\"".to_owned(),
            },
        ),
    ];
    for (json, want) in cases {
        assert_eq!(decode("member_1", json.as_bytes()).unwrap_err(), want, "{json}");
    }
    let err = decode(
        "member_1",
        br#"{"serviceEndpoint":{"host":"h","port":1},"shard":"2"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::WrongType { field: "shard", .. }),
        "{err:?}"
    );
    let err = decode(
        "member_1",
        br#"{"serviceEndpoint":{"host":"h","port":1},"status":1}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::WrongType { field: "status", .. }),
        "{err:?}"
    );
}

#[test]
fn serverset_negative_shard() {
    let n = decode(
        "member_1",
        br#"{"serviceEndpoint":{"host":"h","port":1},"shard":-3}"#,
    )
    .unwrap();
    assert_eq!(n.shard, Some(-3));
}

// ---- path encoding ----

#[test]
fn path_encoded_name_with_empty_data() {
    let json = r#"{"host":"10.9.8.7","port":8443,"name":"web-1","labels":{"az":"b"}}"#;
    let n = decode(&path_name(json, "_0000000003"), b"").unwrap();
    assert_eq!(n.host, "10.9.8.7");
    assert_eq!(n.port, 8443);
    assert_eq!(n.name.as_deref(), Some("web-1"));
    assert_eq!(n.labels.get("az").map(String::as_str), Some("b"));
}

#[test]
fn path_encoded_name_ignores_data() {
    let name = path_name(r#"{"host":"a","port":1}"#, "_0000000001");
    assert_eq!(
        decode(&name, b"{\"host\":\"b\",\"port\":2}").unwrap(),
        node("a", 1)
    );
    assert_eq!(decode(&name, b"\xff garbage").unwrap(), node("a", 1));
}

#[test]
fn path_encoded_without_seq_and_as_full_path() {
    let name = path_name(r#"{"host":"a","port":1}"#, "");
    assert_eq!(decode(&name, b"").unwrap(), node("a", 1));
    let full = format!("/services/web/{name}_0000000009");
    assert_eq!(decode(&full, b"").unwrap(), node("a", 1));
}

#[test]
fn path_encoded_unpadded_accepted() {
    // 21 bytes of JSON -> base64 with one `=` of padding; strip it.
    let json = r#"{"host":"a","port":12}"#;
    let padded = URL_SAFE.encode(json);
    assert!(padded.ends_with('='), "test needs padded input: {padded}");
    let unpadded = padded.trim_end_matches('=');
    let name = format!("base64_{}_{unpadded}_0000000001", unpadded.len());
    assert_eq!(decode(&name, b"").unwrap(), node("a", 12));
}

#[test]
fn path_encoded_segment_with_underscore_and_dash() {
    // Characters chosen so that the URL-safe encoding contains both `_` and `-`.
    let n = Node {
        name: Some("??>>~~??>>".to_owned()),
        ..node("h", 1)
    };
    let prefix = encode_path_name(&n);
    let segment = prefix
        .trim_start_matches("base64_")
        .split_once('_')
        .map(|(_, s)| s)
        .unwrap();
    assert!(segment.contains('_') && segment.contains('-'), "{segment}");
    assert_eq!(decode(&format!("{prefix}0000000001"), b"").unwrap(), n);
}

#[test]
fn encode_path_name_round_trip() {
    for n in [
        full_node(),
        node("h", 1),
        Node {
            available: false,
            ..node("h", 2)
        },
    ] {
        let prefix = encode_path_name(&n);
        assert!(prefix.starts_with("base64_") && prefix.ends_with('_'), "{prefix}");
        assert_eq!(decode(&format!("{prefix}0000000001"), b"").unwrap(), n);
    }
}

#[test]
fn encode_path_name_matches_airbnb_format() {
    let prefix = encode_path_name(&node("h", 1));
    let enc = URL_SAFE.encode(br#"{"host":"h","port":1,"available":true}"#);
    assert_eq!(prefix, format!("base64_{}_{enc}_", enc.len()));
}

#[test]
fn path_encoded_bad_len() {
    let json = r#"{"host":"a","port":1}"#;
    let enc = URL_SAFE.encode(json);
    let n = enc.len();
    let bad = [
        format!("base64_{}_{enc}_0000000001", n - 1),
        format!("base64_{}_{enc}_0000000001", n + 1),
        format!("base64_{}_{enc}_0000000001", n + 1000),
        format!("base64_99999999999999999999999_{enc}_0000000001"),
        format!("base64_x_{enc}_0000000001"),
        format!("base64__{enc}_0000000001"),
        format!("base64_-1_{enc}_0000000001"),
        "base64_12".to_owned(),
        "base64_".to_owned(),
    ];
    for name in bad {
        let err = decode(&name, br#"{"host":"h","port":1}"#).unwrap_err();
        assert!(matches!(err, DecodeError::BadPathEncoding(_)), "{name}: {err:?}");
    }
}

#[test]
fn path_encoded_bad_seq_and_base64() {
    let json = r#"{"host":"a","port":1}"#;
    for seq in ["_", "_12a", "_ 1", "x"] {
        let err = decode(&path_name(json, seq), b"").unwrap_err();
        assert!(matches!(err, DecodeError::BadPathEncoding(_)), "{seq}: {err:?}");
    }
    for name in [
        "base64_4_ab+c_1",
        "base64_4_a===_1",
        "base64_1_a_1",
        "base64_2_é_1",
    ] {
        let err = decode(name, b"").unwrap_err();
        assert!(matches!(err, DecodeError::BadPathEncoding(_)), "{name}: {err:?}");
    }
}

#[test]
fn path_encoded_payload_is_validated() {
    let err = decode(&path_name(r#"{"host":"a","port":0}"#, "_1"), b"").unwrap_err();
    assert_eq!(err, DecodeError::BadPort("0".to_owned()));
    let err = decode(&path_name("[1]", "_1"), b"").unwrap_err();
    assert_eq!(err, DecodeError::NotAnObject("an array"));
    let err = decode(&path_name("", "_1"), b"").unwrap_err();
    assert_eq!(err, DecodeError::Empty);
    let name = format!("base64_4_{}_1", URL_SAFE.encode([0xff, 0xfe, 0xfd]));
    assert_eq!(decode(&name, b"").unwrap_err(), DecodeError::NotUtf8);
}

#[test]
fn non_path_names_use_data() {
    for name in [
        "",
        "member_0000000001",
        "i-abc_0000000001",
        "base64",
        "xbase64_4_abcd_1",
    ] {
        assert_eq!(
            decode(name, br#"{"host":"h","port":1}"#).unwrap(),
            node("h", 1),
            "{name}"
        );
    }
}

// ---- never panics ----

/// A tiny deterministic LCG (Knuth's MMIX constants); good enough to shuffle bytes around.
struct Lcg(u64);

impl Lcg {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64()).unwrap() % n.max(1)
    }

    fn byte(&mut self) -> u8 {
        u8::try_from(self.next_u64() & 0xff).unwrap()
    }
}

const INTERESTING: &[u8] = b"{}[]\":,_-=0123456789 \\nulltruefalsebase64_hostportALIVE\xff\xc3\xa9";

fn mutate(rng: &mut Lcg, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if pos < out.len() => {
                out.remove(pos);
            }
            1 if pos < out.len() => out[pos] = rng.byte(),
            2 => out.insert(pos, INTERESTING[rng.below(INTERESTING.len())]),
            3 => out.truncate(pos),
            _ => {
                let from = rng.below(out.len());
                let chunk: Vec<u8> = out.iter().skip(from).take(rng.below(8)).copied().collect();
                for (i, b) in chunk.into_iter().enumerate() {
                    out.insert((pos + i).min(out.len()), b);
                }
            }
        }
    }
    out
}

#[test]
fn decode_never_panics_on_random_and_mutated_input() {
    let mut rng = Lcg(0x5eed_cafe_f00d_d00d);
    let seeds: Vec<Vec<u8>> = vec![
        encode(&full_node()),
        encode(&Node {
            available: false,
            unavailable_reason: Some("r".to_owned()),
            ..node("h", 1)
        }),
        br#"{"host":"h","port":"8080","weight":"3","available":false}"#.to_vec(),
        SERVERSET_ALIVE_JSON.as_bytes().to_vec(),
        br#"{"serviceEndpoint":{"host":"h","port":80},"status":"DEAD","shard":1}"#.to_vec(),
        br#"{"host":"h","port":1,"labels":{"a":[1,{"b":null}],"c":1.5e300}}"#.to_vec(),
    ];
    let names: Vec<String> = vec![
        "member_0000000001".to_owned(),
        format!("{}0000000001", encode_path_name(&full_node())),
        format!("{}0000000002", encode_path_name(&node("h", 1))),
    ];
    let mut decoded_ok = 0usize;
    let mut total = 0usize;

    // Pure noise.
    for _ in 0..400 {
        let len = rng.below(64);
        let data: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        let _ = decode("member_1", &data);
        let name = String::from_utf8_lossy(&data);
        let _ = decode(&format!("base64_{name}"), &data);
        total += 2;
    }

    // Noise built from JSON-ish bytes (more likely to get past the parser).
    for _ in 0..400 {
        let len = rng.below(48);
        let data: Vec<u8> = (0..len)
            .map(|_| INTERESTING[rng.below(INTERESTING.len())])
            .collect();
        let _ = decode("x", &data);
        total += 1;
    }

    // Mutated valid payloads.
    for i in 0..1500 {
        let seed = &seeds[i % seeds.len()];
        let data = mutate(&mut rng, seed);
        if decode("member_0000000001", &data).is_ok() {
            decoded_ok += 1;
        }
        total += 1;
    }

    // Mutated valid path-encoded names (data empty).
    for i in 0..1500 {
        let seed = names[i % names.len()].as_bytes();
        let name = String::from_utf8_lossy(&mutate(&mut rng, seed)).into_owned();
        if decode(&name, b"").is_ok() {
            decoded_ok += 1;
        }
        total += 1;
    }

    assert!(total >= 3000);
    // Some mutations are harmless (e.g. changing a digit), so some inputs still decode.
    assert!(
        decoded_ok > 0,
        "no mutated input decoded; the mutator is too destructive"
    );
}

#[test]
fn errors_display_human_readable() {
    let cases = [
        (DecodeError::NotUtf8, "node data is not valid UTF-8"),
        (
            DecodeError::NotAnObject("an array"),
            "node data must be a JSON object, found an array",
        ),
        (
            DecodeError::MissingField("host"),
            "required field `host` is missing",
        ),
        (
            DecodeError::BadPort("70000".to_owned()),
            "port 70000 is not a number in 1..=65535",
        ),
        (
            DecodeError::BadHost("a b".to_owned()),
            r#"host "a b" is not an IP address or a valid host name"#,
        ),
        (
            DecodeError::WrongType {
                field: "labels",
                expected: "an object",
                found: "[]".to_owned(),
            },
            "field `labels` must be an object, found []",
        ),
        (
            DecodeError::BadPathEncoding("x".to_owned()),
            "bad path-encoded child name: x",
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.to_string(), want);
    }
}

// ---- properties (proptest; bounded: a few hundred cases each, well under a second) ----

mod props {
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    /// Hosts `check_host` accepts: IPv4, IPv6, and names whose last label is not all digits.
    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<Ipv4Addr>().prop_map(|a| a.to_string()),
            any::<Ipv6Addr>().prop_map(|a| a.to_string()),
            "([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,14}[a-zA-Z0-9_])?\\.){0,3}[a-zA-Z_]([a-zA-Z0-9_-]{0,14}[a-zA-Z0-9_])?\\.?",
        ]
    }

    /// Any node `encode` can write (`shard` is a serverset concept and is never written).
    fn valid_node() -> impl Strategy<Value = Node> {
        (
            host(),
            1..=u16::MAX,
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            btree_map(any::<String>(), any::<String>(), 0..4),
        )
            .prop_map(
                |(host, port, name, weight, available, reason, options, labels)| Node {
                    host,
                    port,
                    name,
                    weight,
                    available,
                    // encode writes a reason only for unavailable nodes.
                    unavailable_reason: if available { None } else { reason },
                    haproxy_server_options: options,
                    labels,
                    shard: None,
                },
            )
    }

    /// Any JSON value, a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (0u32..70_000).prop_map(Value::from),
            "[0-9]{0,6}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            host().prop_map(Value::from),
            Just(Value::from("ALIVE")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map(any::<String>(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A value for `key`: mostly of the right type (so that many objects decode), sometimes
    /// anything at all.
    fn value_for(key: &'static str) -> BoxedStrategy<Value> {
        let right: BoxedStrategy<Value> = match key {
            "host" => host().prop_map(Value::from).boxed(),
            "port" => prop_oneof![
                (0u32..70_000).prop_map(Value::from),
                "[0-9]{1,6}".prop_map(Value::from)
            ]
            .boxed(),
            "weight" | "shard" => prop_oneof![
                any::<i64>().prop_map(Value::from),
                (0u64..1000).prop_map(Value::from),
                "[0-9]{1,11}".prop_map(Value::from)
            ]
            .boxed(),
            "available" => any::<bool>().prop_map(Value::Bool).boxed(),
            "labels" => btree_map(any::<String>(), json(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed(),
            "status" => prop_oneof![Just("ALIVE".to_owned()), any::<String>()]
                .prop_map(Value::from)
                .boxed(),
            _ => any::<String>().prop_map(Value::from).boxed(),
        };
        prop_oneof![4 => right, 1 => json()].boxed()
    }

    /// Objects with the keys every dialect reads, each absent, of its type, or of any type;
    /// serverset-shaped (a `serviceEndpoint` with host and port) about a third of the time.
    fn payload_object() -> impl Strategy<Value = Value> {
        const KEYS: &[&str] = &[
            "host",
            "port",
            "name",
            "weight",
            "available",
            "unavailable_reason",
            "haproxy_server_options",
            "labels",
            "status",
            "shard",
        ];
        let fields: Vec<_> = KEYS
            .iter()
            .map(|&k| proptest::option::weighted(0.7, value_for(k)).prop_map(move |v| (k, v)))
            .collect();
        let endpoint = prop_oneof![
            2 => Just(None),
            1 => (value_for("host"), value_for("port"))
                .prop_map(|(h, p)| Some(serde_json::json!({"host": h, "port": p}))),
            1 => json().prop_map(Some),
        ];
        (fields, endpoint).prop_map(|(fields, endpoint)| {
            let mut m = Map::new();
            for (k, v) in fields {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            if let Some(e) = endpoint {
                m.insert("serviceEndpoint".into(), e);
            }
            Value::Object(m)
        })
    }

    /// What a decoded node looks like after `encode` and `decode` again.
    fn as_encoded(node: &Node) -> Node {
        Node {
            shard: None,
            unavailable_reason: if node.available {
                None
            } else {
                node.unavailable_reason.clone()
            },
            ..node.clone()
        }
    }

    proptest! {
        #![proptest_config(bounded(256))]

        #[test]
        fn decode_never_panics_on_arbitrary_names_and_bytes(
            name in any::<String>(),
            data in vec(any::<u8>(), 0..256),
        ) {
            let _ = decode(&name, &data);
            let _ = decode(&format!("base64_{name}"), &data);
        }

        #[test]
        fn decode_never_panics_on_path_encoded_lookalikes(
            len in 0usize..200,
            segment in "[A-Za-z0-9_=-]{0,120}",
            seq in "(_[0-9]{0,10})?[0-9a-z_]{0,3}",
        ) {
            let _ = decode(&format!("base64_{len}_{segment}{seq}"), b"");
        }

        #[test]
        fn valid_nodes_round_trip_through_data_and_path_names(node in valid_node()) {
            prop_assert_eq!(check_host(&node.host), Ok(()));
            prop_assert_eq!(decode("member_0000000001", &encode(&node)), Ok(node.clone()));
            let name = format!("{}0000000042", encode_path_name(&node));
            prop_assert_eq!(decode(&name, b"ignored"), Ok(node.clone()));
            prop_assert_eq!(decode(&format!("/services/web/{name}"), b""), Ok(node));
        }

        #[test]
        fn arbitrary_json_never_panics(value in json()) {
            let data = serde_json::to_vec(&value).unwrap();
            if let Ok(node) = decode("member_0000000001", &data) {
                prop_assert_eq!(decode("x", &encode(&node)), Ok(as_encoded(&node)));
            }
        }

        #[test]
        fn check_host_never_panics_and_accepts_generated_hosts(text in any::<String>(), good in host()) {
            let _ = check_host(&text);
            prop_assert_eq!(check_host(&good), Ok(()));
        }
    }

    #[test]
    fn payload_shaped_json_never_panics_and_what_decodes_round_trips() {
        let decoded = std::cell::Cell::new(0u32);
        let mut runner = proptest::test_runner::TestRunner::new(bounded(256));
        let result = runner.run(&payload_object(), |obj| {
            let data = serde_json::to_vec(&obj).unwrap();
            if let Ok(node) = decode("member_0000000001", &data) {
                decoded.set(decoded.get() + 1);
                prop_assert_eq!(check_host(&node.host), Ok(()));
                prop_assert!(node.port >= 1);
                prop_assert_eq!(decode("x", &encode(&node)), Ok(as_encoded(&node)));
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // Not vacuous: a good share of the generated objects are accepted.
        assert!(
            decoded.get() >= 10,
            "only {} of 256 objects decoded",
            decoded.get()
        );
    }
}
