//! nerve's hooks (pre_available, on_disable, drained, min_disable_time) and SIGTERM's order
//! with `expose_unavailable` (unavailable, drain, delete, exit), against a real ZooKeeper
//! and the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::agents::metric;
use integration_tests::{consistently, eventually, Backend, NerveBuilder, NerveService, Zk, ZkCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";

/// nerve of instance `host-1`.
fn nerve(cs: &str) -> NerveBuilder {
    NerveBuilder::new(cs).instance_id("host-1")
}

/// Service `web` on `port` under [`PATH`]: tcp check every 100 ms, rise 1, fall 1, writes
/// not rate-limited in practice.
fn web(port: u16) -> NerveService {
    NerveService::tcp("web", port)
        .zk_path(PATH)
        .fall(1)
        .with("write_burst", 100)
        .with("max_writes_per_second", 100)
        .checks(vec![json!({"type": "tcp"})])
}

/// A hook running `command` with `sh -c`, plus `more` keys.
fn shell_hook(command: String, more: serde_json::Value) -> serde_json::Value {
    let mut hook = json!({"command": command, "shell": true});
    if let (Some(h), Some(m)) = (hook.as_object_mut(), more.as_object()) {
        h.extend(m.clone());
    }
    hook
}

fn payloads(zkc: &Zk) -> Vec<serde_json::Value> {
    zkc.children(PATH)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| zkc.get(&format!("{PATH}/{c}")).ok())
        .map(|(d, _)| serde_json::from_slice(&d).unwrap())
        .collect()
}

fn request(port: u16, method: &str, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
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

/// What a ZooKeeper reader sees of the node, in order, each state once when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Available,
    Unavailable,
    Gone,
}

/// Polls the node every few milliseconds from its own session, recording each change.
struct Watcher {
    seen: Arc<Mutex<Vec<(Seen, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(cs: &str) -> Watcher {
        let (seen, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (s, st, cs) = (seen.clone(), stop.clone(), cs.to_string());
        let thread = std::thread::spawn(move || {
            let zkc = Zk::connect(&cs);
            while !st.load(Ordering::Relaxed) {
                let now = match payloads(&zkc).first() {
                    None => Seen::Gone,
                    Some(p) if p["available"] == true => Seen::Available,
                    Some(_) => Seen::Unavailable,
                };
                let mut seen = s.lock().unwrap();
                if seen.last().map(|(s, _)| *s) != Some(now) {
                    seen.push((now, Instant::now()));
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<(Seen, Instant)> {
        self.seen.lock().unwrap().clone()
    }

    fn states(&self) -> Vec<Seen> {
        self.seen().into_iter().map(|(s, _)| s).collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SIGTERM with `expose_unavailable`: the node is first marked `"available": false`, stays so
/// for the drain, then nerve deletes it itself (not its session closing), then exits.
#[test]
fn sigterm_with_expose_unavailable_marks_unavailable_drains_deletes_then_exits() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let drain = Duration::from_secs(2);
    let mut nerve = nerve(&cs)
        .drain_time(drain)
        .service(web(b.port).with("expose_unavailable", true))
        .start();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || {
        (payloads(&zkc).first()?["available"] == true).then_some(())
    });
    let watcher = Watcher::start(&cs);
    eventually("the watcher sees the node", WAIT, || {
        (watcher.states() == [Seen::Available]).then_some(())
    });

    nerve.signal("TERM");
    let p = eventually("marked unavailable on SIGTERM", WAIT, || {
        payloads(&zkc)
            .into_iter()
            .next()
            .filter(|p| p["available"] == false)
    });
    assert_eq!(p["unavailable_reason"], "shutting down", "{p}");
    assert!(nerve.is_running(), "still draining");
    let status = nerve.wait_exit(WAIT);
    assert!(status.success(), "clean exit: {status:?}\n{}", nerve.log());
    eventually("the watcher sees the node go", WAIT, || {
        (watcher.states().last() == Some(&Seen::Gone)).then_some(())
    });
    let seen = watcher.seen();
    let states: Vec<Seen> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        states,
        [Seen::Available, Seen::Unavailable, Seen::Gone],
        "{seen:?}"
    );
    let unavailable_for = seen[2].1 - seen[1].1;
    assert!(
        unavailable_for >= drain - Duration::from_millis(100),
        "unavailable for the drain before being deleted: {unavailable_for:?}"
    );
    // Deleted by nerve before it exited, not by the session closing with the process.
    let log = nerve.log();
    let deleted = log.find("deregistered on shutdown").expect(&log);
    let stopped = log.find("nerve stopped").expect(&log);
    assert!(deleted < stopped, "{log}");
}

fn tail(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

/// `pre_available` failing keeps a healthy service unavailable (with the hook's error as the
/// reason), retried at each evaluation, counted; once it passes the service registers.
#[test]
fn pre_available_failure_holds_the_service_back_and_is_retried() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (runs, allow) = (dir.path().join("runs"), dir.path().join("allow"));
    let pre_available = shell_hook(
        format!(
            "echo \"$NERVE_HOOK\" >> {}; test -f {}",
            runs.display(),
            allow.display()
        ),
        json!({"timeout": "5s"}),
    );
    let nerve = nerve(&cs)
        .service(
            web(b.port)
                .with("expose_unavailable", true)
                .with("hooks", json!({ "pre_available": pre_available })),
        )
        .start();
    let admin = nerve.admin();
    let zkc = Zk::connect(&cs);
    let p = eventually("held back, unavailable, with the hook's error", WAIT, || {
        payloads(&zkc).into_iter().next().filter(|p| {
            p["unavailable_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("pre_available hook failed: command exited with status 1"))
        })
    });
    assert_eq!(p["available"], false, "{p}");
    eventually("retried at the next evaluations", WAIT, || {
        (tail(&runs).lines().count() >= 3).then_some(())
    });
    assert!(
        tail(&runs).lines().all(|l| l == "pre_available"),
        "{}",
        tail(&runs)
    );
    let fails = metric(
        admin,
        "nerve_hook_runs_total{hook=\"pre_available\",result=\"fail\",service=\"web\"}",
    );
    assert!(fails.unwrap_or(0.0) >= 3.0, "{fails:?}");
    assert_eq!(payloads(&zkc)[0]["available"], false);

    std::fs::write(&allow, "").unwrap();
    eventually("available once the hook passes", WAIT, || {
        (payloads(&zkc).first()?["available"] == true).then_some(())
    });
    // It ran before the change, not at each check run once available.
    let runs_then = tail(&runs).lines().count();
    consistently(
        "the hook not run while available",
        Duration::from_millis(500),
        || match tail(&runs).lines().count() {
            n if n == runs_then => Ok(()),
            n => Err(format!("{n} runs, {runs_then} before")),
        },
    );
}

/// An operator's disable: the node goes, then `on_disable` runs, then `drained` is polled
/// until it passes; `disable?wait` answers only then, and no earlier than
/// `min_disable_time`.
#[test]
fn disable_runs_on_disable_then_waits_for_drained_and_min_disable_time() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (log, drained) = (dir.path().join("log"), dir.path().join("drained"));
    let hooks = json!({
        "on_disable": shell_hook(format!("echo on_disable >> {}", log.display()), json!({})),
        "drained": shell_hook(
            format!("echo drained >> {}; test -f {}", log.display(), drained.display()),
            json!({"interval": "50ms"}),
        ),
        "min_disable_time": "3s",
    });
    let nerve = nerve(&cs).service(web(b.port).with("hooks", hooks)).start();
    let admin = nerve.admin();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (payloads(&zkc).len() == 1).then_some(()));

    let asked = Instant::now();
    let answer = std::thread::spawn(move || {
        let r = request(admin, "PUT", "/services/web/disable?wait=60s");
        (r, asked.elapsed())
    });
    eventually("drained polled", WAIT, || {
        (tail(&log).matches("drained").count() >= 2).then_some(())
    });
    assert!(payloads(&zkc).is_empty(), "the node went first");
    assert!(tail(&log).starts_with("on_disable\ndrained\n"), "{}", tail(&log));
    assert!(!answer.is_finished(), "disable?wait waits for drained");
    let (_, status) = request(admin, "GET", "/status");
    assert_eq!(
        status["services"][0]["disable_sequence"]["phase"], "running",
        "{status}"
    );
    std::fs::write(&drained, "").unwrap();
    let ((code, body), took) = answer.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reconciled"], true, "{body}");
    assert!(took >= Duration::from_secs(3), "min_disable_time: {took:?}");
    let (_, status) = request(admin, "GET", "/status");
    assert_eq!(
        status["services"][0]["disable_sequence"],
        serde_json::json!({"phase": "done", "drained": true}),
        "{status}"
    );
    let on_disable = tail(&log).matches("on_disable").count();
    assert_eq!(on_disable, 1, "{}", tail(&log));

    // Enabled again: registered again, and the hooks stay quiet.
    let (code, _) = request(admin, "PUT", "/services/web/enable");
    assert_eq!(code, 200);
    eventually("registered again", WAIT, || {
        (payloads(&zkc).len() == 1).then_some(())
    });
    assert_eq!(tail(&log).matches("on_disable").count(), 1);
}

/// SIGTERM runs the same sequence: the node goes, `on_disable` runs, nerve waits for
/// `drained` before it exits.
#[test]
fn sigterm_waits_for_drained() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (log, drained) = (dir.path().join("log"), dir.path().join("drained"));
    let hooks = json!({
        "on_disable": shell_hook(format!("echo on_disable >> {}", log.display()), json!({})),
        "drained": shell_hook(
            format!("echo drained >> {}; test -f {}", log.display(), drained.display()),
            json!({"interval": "50ms"}),
        ),
    });
    let mut nerve = nerve(&cs).service(web(b.port).with("hooks", hooks)).start();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (payloads(&zkc).len() == 1).then_some(()));
    nerve.signal("TERM");
    eventually("drained polled", WAIT, || {
        (tail(&log).matches("drained").count() >= 3).then_some(())
    });
    assert!(payloads(&zkc).is_empty(), "deregistered first");
    assert!(tail(&log).starts_with("on_disable\n"), "{}", tail(&log));
    assert!(nerve.is_running(), "waits for drained");
    std::fs::write(&drained, "").unwrap();
    let status = nerve.wait_exit(WAIT);
    assert!(status.success(), "{status:?}\n{}", nerve.log());
}

/// A service removed by a reload goes down as on SIGTERM: marked unavailable first
/// (`expose_unavailable`), its disable sequence runs (`on_disable`, `min_disable_time`), then
/// its node is deleted; nerve keeps running.
#[test]
fn a_service_removed_by_reload_goes_down_through_its_disable_sequence() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let hooks = json!({
        "on_disable": shell_hook(format!("echo on_disable >> {}", log.display()), json!({})),
        "min_disable_time": "1s",
    });
    let mut nerve = nerve(&cs)
        .service(web(b.port).with("expose_unavailable", true).with("hooks", hooks))
        .service(NerveService::tcp("other", b.port).checks(vec![json!({"type": "tcp"})]))
        .start();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || {
        (payloads(&zkc).first()?["available"] == true).then_some(())
    });
    let watcher = Watcher::start(&cs);
    eventually("the watcher sees the node", WAIT, || {
        (watcher.states() == [Seen::Available]).then_some(())
    });

    nerve.reload(|c| c.without("web"));
    eventually("the watcher sees the node go", WAIT, || {
        (watcher.states().last() == Some(&Seen::Gone)).then_some(())
    });
    let seen = watcher.seen();
    let states: Vec<Seen> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        states,
        [Seen::Available, Seen::Unavailable, Seen::Gone],
        "{seen:?}"
    );
    let unavailable_for = seen[2].1 - seen[1].1;
    assert!(
        unavailable_for >= Duration::from_millis(900),
        "unavailable for min_disable_time before being deleted: {unavailable_for:?}"
    );
    assert_eq!(tail(&log), "on_disable\n");
    assert!(nerve.is_running(), "{}", nerve.log());
    assert_eq!(
        zkc.children("/services/other").unwrap_or_default().len(),
        1,
        "the other service stays"
    );
}
