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
use integration_tests::{eventually, Backend, NerveBuilder, NerveService, Zk, ZkCluster};
use serde_json::json;

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

/// nerve of instance `host-1` keeping its operator state in `state`, with service `web`
/// on `port` (healthy while `flag` exists) under [`PATH`].
fn conf(
    cs: &str,
    port: u16,
    flag: &Path,
    state: &Path,
    web: impl FnOnce(NerveService) -> NerveService,
) -> NerveBuilder {
    let service = NerveService::tcp("web", port)
        .zk_path(PATH)
        .fall(1)
        .with("write_burst", 100)
        .with("max_writes_per_second", 100)
        .checks(vec![json!({
            "type": "exec", "name": "flag",
            "command": ["test", "-f", flag.display().to_string()]
        })]);
    NerveBuilder::new(cs)
        .instance_id("host-1")
        .top("state_file", state.display().to_string())
        .service(web(service))
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
    let config = conf(&cs, b.port, &flag, &state, |s| s);
    let nerve = config.clone().start();
    let admin = nerve.admin();
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
    assert_eq!(
        nerve.metric(
            "nerve_service_maintenance",
            &[("service", "web"), ("state", "disabled")]
        ),
        Some(1.0)
    );
    let web = [("service", "web")];
    assert_eq!(nerve.metric("nerve_service_weight", &web), Some(0.0));
    assert!(
        nerve
            .metric("nerve_desired_to_write_seconds_count", &web)
            .unwrap()
            >= 2.0
    );

    // weight/N while disabled: kept for later.
    let (ok, _) = ctl(admin, &["weight", "web", "7"]);
    assert!(ok);
    // Restart: the state file keeps it disabled (never registered, not even briefly).
    drop(nerve);
    eventually("the killed nerve's node... there was none", WAIT, || {
        payloads(&zkc).is_empty().then_some(())
    });
    // The same config, admin port included.
    let nerve = config.start();
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
    let nerve = conf(&cs, b.port, &flag, &state, |s| s.with("expose_unavailable", true)).start();
    let admin = nerve.admin();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (payloads(&zkc).len() == 1).then_some(()));
    let (code, body) = request(admin, "PUT", "/services/web/disable?wait=10s");
    assert_eq!(code, 200, "{body}");
    let p = payloads(&zkc);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["available"], false, "{p:?}");
    assert_eq!(p[0]["unavailable_reason"], "disabled by operator");
}
