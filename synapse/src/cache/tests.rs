#![allow(clippy::unwrap_used)]
use super::*;

fn service(name: &str, path: &str) -> ServiceConfig {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(
        &f,
        format!("services:\n  - {{name: {name}, zk_hosts: 'zk:2181', zk_path: {path}, listen: 3306}}\n"),
    )
    .unwrap();
    crate::config::Config::load(&f).unwrap().services.remove(0)
}

fn doc(confirmed_ms: u64, path: &str) -> String {
    format!(
        r#"{{"version":1,"written_at_unix_ms":{confirmed_ms},"services":{{"web":{{"zk_hosts":"zk:2181","zk_path":"{path}","confirmed_at_unix_ms":{confirmed_ms},"members":[{{"id":"a_web_0000000001","node":{{"host":"10.0.0.1","port":80,"labels":{{"zone":"a"}}}}}},{{"id":"bad","node":{{"host":"","port":0}}}}]}}}}}}"#
    )
}

#[test]
fn a_fresh_entry_for_the_same_path_is_used_and_bad_members_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let now = SystemTime::now();
    std::fs::write(&path, doc(unix_ms(now) - 1000, "/services/web")).unwrap();
    let loaded = load(&path).unwrap();
    let web = service("web", "/services/web");
    let e = loaded.usable(&web, Duration::from_secs(60), now).unwrap();
    assert_eq!(e.members.len(), 1);
    assert_eq!(e.members[0].1.port, 80);
    assert_eq!(e.members[0].1.labels["zone"], "a");
    // Past the TTL, or for another path or service: not used.
    assert!(loaded.usable(&web, Duration::from_millis(500), now).is_none());
    assert!(loaded
        .usable(&service("web", "/services/other"), Duration::from_secs(60), now)
        .is_none());
    assert!(loaded
        .usable(&service("api", "/services/web"), Duration::from_secs(60), now)
        .is_none());
}

#[test]
fn missing_file_is_empty_and_a_bad_one_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let loaded = load(&path).unwrap();
    assert!(loaded.entries.is_empty());
    std::fs::write(&path, "{not json").unwrap();
    assert!(matches!(load(&path), Err(CacheError::Format { .. })));
    std::fs::write(&path, r#"{"version":9,"written_at_unix_ms":0,"services":{}}"#).unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert!(err.contains("version 9"), "{err}");
}

#[test]
fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    write_atomically(&path, b"one").unwrap();
    write_atomically(&path, b"two").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["state.json"]);
    // A directory that does not exist: an error naming the file, no panic.
    let err = write_atomically(&dir.path().join("no/such/state.json"), b"x").unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
}
