//! The maintenance API on nerve's admin port and `nerve ctl`, against a real ZooKeeper and
//! the real binary: disable (with `?wait`), enable, force, weight, global disable, survival
//! across a restart through the state file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::agents::binary;
use integration_tests::{eventually, free_port, Agent, Backend, Zk, ZkCluster};

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";

fn request(port: u16, method: &str, path: &str) -> (u16, serde_json::Value) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, serde_json::Value::Null);
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn ctl(admin: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("nerve"))
        .arg("ctl")
        .args(args)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn conf(cs: &str, admin: u16, port: u16, flag: &Path, state: &Path, extra: &str) -> String {
    format!(
        "instance_id: host-1\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nstate_file: \"{}\"\nservices:\n\
         - {{name: web, host: 127.0.0.1, port: {port}, zk_hosts: \"{cs}\", zk_path: {PATH}, \
         check_interval: 100ms, rise: 1, fall: 1, write_burst: 100, max_writes_per_second: 100, {extra}\
         checks: [{{type: exec, name: flag, command: [test, -f, \"{}\"]}}]}}\n",
        state.display(),
        flag.display()
    )
}

fn payloads(zkc: &Zk) -> Vec<serde_json::Value> {
    zkc.children(PATH)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| zkc.get(&format!("{PATH}/{c}")).ok())
        .map(|(d, _)| serde_json::from_slice(&d).unwrap())
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    let state = dir.path().join("state.json");
    (dir, flag, state)
}

#[test]
fn disable_enable_force_weight_and_restart() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag, state) = setup();
    let admin = free_port();
    let config = conf(&cs, admin, b.port, &flag, &state, "");
    let nerve = Agent::start("nerve", &config);
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (payloads(&zkc).len() == 1).then_some(()));

    // Mutations by PUT/POST only.
    assert_eq!(request(admin, "GET", "/services/web/disable").0, 405);
    assert_eq!(request(admin, "POST", "/services/nope/disable").0, 404);
    assert_eq!(request(admin, "POST", "/services/web/weight/256").0, 400);

    // disable?wait answers once ZooKeeper no longer holds the node.
    let (code, body) = request(admin, "POST", "/services/web/disable?wait=10s");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reconciled"], true, "{body}");
    assert!(payloads(&zkc).is_empty(), "gone when the answer comes");
    let (_, status) = request(admin, "GET", "/status");
    assert_eq!(status["services"][0]["maintenance"]["disabled"], true, "{status}");
    let m = |name: &str| integration_tests::agents::metric(admin, name);
    assert_eq!(
        m("nerve_service_maintenance{service=\"web\",state=\"disabled\"}"),
        Some(1.0)
    );
    assert_eq!(m("nerve_service_weight{service=\"web\"}"), Some(0.0));
    assert!(m("nerve_desired_to_write_seconds_count{service=\"web\"}").unwrap() >= 2.0);

    // weight/N while disabled: kept for later.
    let (ok, _) = ctl(admin, &["weight", "web", "7"]);
    assert!(ok);
    // Restart: the state file keeps it disabled (never registered, not even briefly).
    drop(nerve);
    eventually("the killed nerve's node... there was none", WAIT, || {
        payloads(&zkc).is_empty().then_some(())
    });
    let nerve = Agent::start("nerve", &config);
    eventually("restarted nerve serves", WAIT, || {
        let (code, s) = request(admin, "GET", "/status");
        (code != 0 && s["services"][0]["checks"][0]["runs"].as_u64()? >= 3).then_some(())
    });
    assert!(payloads(&zkc).is_empty(), "still disabled after a restart");

    let (ok, out) = ctl(admin, &["enable", "web"]);
    assert!(ok, "{out}");
    let p = eventually("registered with the operator's weight", WAIT, || {
        payloads(&zkc).into_iter().next()
    });
    assert_eq!(p["weight"], 7, "{p}");
    assert_eq!(
        integration_tests::agents::metric(admin, "nerve_service_weight{service=\"web\"}"),
        Some(7.0)
    );

    // enable --force registers even when the checks fail.
    std::fs::remove_file(&flag).unwrap();
    eventually("deregistered on check failure", WAIT, || {
        payloads(&zkc).is_empty().then_some(())
    });
    let (ok, out) = ctl(admin, &["enable", "web", "--force"]);
    assert!(ok, "{out}");
    eventually("forced in", WAIT, || (payloads(&zkc).len() == 1).then_some(()));
    let (ok, _) = ctl(admin, &["enable", "web"]);
    assert!(ok);
    eventually("not forced any more", WAIT, || {
        payloads(&zkc).is_empty().then_some(())
    });
    std::fs::write(&flag, "").unwrap();
    eventually("back", WAIT, || (payloads(&zkc).len() == 1).then_some(()));

    // Global disable: with expose_unavailable it would stay unavailable; here it goes.
    let (ok, out) = ctl(admin, &["disable", "--wait", "10s"]);
    assert!(ok, "{out}");
    assert!(payloads(&zkc).is_empty());
    let (_, status) = request(admin, "GET", "/status");
    assert_eq!(status["disabled"], true, "{status}");
    let (ok, _) = ctl(admin, &["enable"]);
    assert!(ok);
    eventually("back after the global enable", WAIT, || {
        (payloads(&zkc).len() == 1).then_some(())
    });
    drop(nerve);
}

#[test]
fn disable_with_expose_unavailable_keeps_the_node_unavailable() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag, state) = setup();
    let admin = free_port();
    let _nerve = Agent::start(
        "nerve",
        &conf(&cs, admin, b.port, &flag, &state, "expose_unavailable: true, "),
    );
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (payloads(&zkc).len() == 1).then_some(()));
    let (code, body) = request(admin, "PUT", "/services/web/disable?wait=10s");
    assert_eq!(code, 200, "{body}");
    let p = payloads(&zkc);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["available"], false, "{p:?}");
    assert_eq!(p[0]["unavailable_reason"], "disabled by operator");
}
