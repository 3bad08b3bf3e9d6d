#![allow(clippy::unwrap_used)]
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
    assert_eq!(list.len(), 1);
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
