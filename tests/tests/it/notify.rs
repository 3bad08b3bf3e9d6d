//! systemd's side of the `NOTIFY_SOCKET` protocol, played against the real binaries: the test
//! binds the datagram socket systemd would, starts nerve or synapse with `NOTIFY_SOCKET` (and
//! `WATCHDOG_USEC`) set, and reads what they send.
//!
//! READY=1 must wait for the agent's first reconcile (nerve) or first sync (synapse): the
//! agents start while ZooKeeper is down, and READY=1 may only come once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::agents::http_get;
use integration_tests::agents::Agent;
use integration_tests::{
    free_port, Backend, NerveBuilder, NerveService, SynapseBuilder, SynapseService, ZkCluster,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
/// Asked of the agents: a ping every 150 ms.
const WATCHDOG_USEC: &str = "300000";

/// The service manager's end of `NOTIFY_SOCKET`. Like systemd, it reads all the time (a
/// thread), whatever the test is doing.
struct Systemd {
    messages: mpsc::Receiver<String>,
    /// The value for `NOTIFY_SOCKET`.
    address: String,
    _dir: Option<tempfile::TempDir>,
    /// Every message taken from `messages` so far, in order.
    seen: Vec<String>,
}

impl Systemd {
    fn serve(socket: UnixDatagram, address: String, dir: Option<tempfile::TempDir>) -> Systemd {
        let (tx, rx) = mpsc::channel();
        // Ends when the test drops the receiver (the next message fails to send).
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    return;
                }
            }
        });
        Systemd {
            messages: rx,
            address,
            _dir: dir,
            seen: Vec::new(),
        }
    }

    /// A socket in the file system, like `/run/systemd/notify`.
    fn path() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Systemd::serve(socket, path.to_str().unwrap().to_string(), Some(dir))
    }

    /// An abstract socket (`@name`), as systemd's own manager socket is.
    fn abstract_name() -> Systemd {
        let name = format!("nerve-synapse-test-notify-{}-{}", std::process::id(), free_port());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Systemd::serve(socket, format!("@{name}"), None)
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("NOTIFY_SOCKET", self.address.as_str()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ]
    }

    /// Receives messages until one has the assignment `line` (e.g. `READY=1`); returns it.
    /// Panics, listing what came, if none does within [`WAIT`].
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line} within {WAIT:?}; received: {:#?}",
                self.seen
            );
            let Ok(msg) = self.messages.recv_timeout(left) else {
                continue;
            };
            self.seen.push(msg.clone());
            if has(&msg, line) {
                return msg;
            }
        }
    }

    /// Waits for `n` more watchdog pings: proof that time passed with the agent running and
    /// talking to us.
    fn pings(&mut self, n: usize) {
        for _ in 0..n {
            self.wait_for("WATCHDOG=1");
        }
    }

    fn any(&self, line: &str) -> bool {
        self.seen.iter().any(|m| has(m, line))
    }
}

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn status_of(msg: &str) -> &str {
    msg.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or("")
}

/// `new_config` (the file's text) + SIGHUP → RELOADING=1 (with MONOTONIC_USEC) → READY=1 only
/// once the reload is applied (`applied` holds at once); SIGTERM → STOPPING=1 and a clean exit.
fn reload_then_stop(agent: &mut Agent, systemd: &mut Systemd, new_config: &str, applied: impl Fn() -> bool) {
    agent.rewrite_config(new_config);
    agent.signal("HUP");
    let reloading = systemd.wait_for("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading:?}");
    let ready = systemd.wait_for("READY=1");
    assert!(applied(), "READY=1 before the reload was applied: {ready:?}");
    assert_eq!(status_of(&ready), "running: config reloaded", "{ready:?}");

    agent.signal("TERM");
    let stopping = systemd.wait_for("STOPPING=1");
    assert!(status_of(&stopping).starts_with("stopping"), "{stopping:?}");
    assert!(agent.wait_exit(WAIT).success());
}

#[test]
fn synapse_is_ready_only_after_its_first_sync() {
    let mut zk = ZkCluster::standalone();
    let connect = zk.connect_string();
    zk.kill(0);
    let mut systemd = Systemd::abstract_name();
    let mut synapse = systemd
        .env()
        .iter()
        .fold(
            SynapseBuilder::new(&connect)
                .session_timeout(Duration::from_secs(4))
                .service(SynapseService::tcp("web").connect_timeout(None)),
            |b, (k, v)| b.env(k, v),
        )
        .start();
    let admin = synapse.admin();

    // Running (watchdog pings come), but ZooKeeper is down: no first sync, so not ready.
    systemd.pings(5);
    assert!(
        !systemd.any("READY=1"),
        "READY=1 before the first sync: {:#?}",
        systemd.seen
    );
    assert!(
        systemd
            .seen
            .iter()
            .any(|m| status_of(m) == "waiting for first sync of: web"),
        "{:#?}",
        systemd.seen
    );
    assert_eq!(http_get(admin, "/ready").unwrap().0, 503);

    zk.restart(0);
    let ready = systemd.wait_for("READY=1");
    // The sync happened before READY=1 was sent.
    assert_eq!(http_get(admin, "/ready").unwrap().0, 200);
    assert_eq!(status_of(&ready), "ready: first sync done for 1 service(s)");
    // Pings go on once ready.
    systemd.pings(2);

    // The reload adds a service: READY=1 says it is routed.
    let reloaded = synapse
        .config()
        .clone()
        .service(SynapseService::tcp("api").connect_timeout(None))
        .text();
    let has_api = || http_get(admin, "/services").is_ok_and(|(_, body)| body.contains("\"api\""));
    assert!(!has_api());
    reload_then_stop(synapse.agent_mut(), &mut systemd, &reloaded, has_api);
}

#[test]
fn nerve_is_ready_only_after_its_first_reconcile() {
    let mut zk = ZkCluster::standalone();
    let connect = zk.connect_string();
    zk.kill(0);
    let backend = Backend::start("app");
    let mut systemd = Systemd::path();
    let mut nerve = systemd
        .env()
        .iter()
        .fold(
            NerveBuilder::new(&connect)
                .instance_id("notify-host")
                .session_timeout(Duration::from_secs(4))
                .service(NerveService::tcp("app", backend.port).fall(1)),
            |b, (k, v)| b.env(k, v),
        )
        .start();
    let admin = nerve.admin();

    // Healthy and running, but ZooKeeper is down: nothing reconciled, so not ready.
    systemd.pings(5);
    assert!(
        !systemd.any("READY=1"),
        "READY=1 before the first reconcile: {:#?}",
        systemd.seen
    );
    assert!(
        systemd
            .seen
            .iter()
            .any(|m| status_of(m) == "waiting for first reconcile of: app"),
        "{:#?}",
        systemd.seen
    );

    zk.restart(0);
    let ready = systemd.wait_for("READY=1");
    assert_eq!(status_of(&ready), "ready: first reconcile done for 1 service(s)");
    // ZooKeeper matched nerve's state when it said so: the last reconcile did not fail.
    let (_, status) = http_get(admin, "/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["services"][0]["last_zk_error"].is_null(), "{status}");

    // The reload adds a service: READY=1 says it runs.
    let reloaded = nerve
        .config()
        .clone()
        .service(NerveService::tcp("api", backend.port).checks(vec![json!({"type": "tcp"})]))
        .text();
    let has_api = || http_get(admin, "/status").is_ok_and(|(_, body)| body.contains("\"api\""));
    assert!(!has_api());
    reload_then_stop(nerve.agent_mut(), &mut systemd, &reloaded, has_api);
}

#[test]
fn no_watchdog_pings_for_another_process() {
    // WATCHDOG_PID names someone else (inherited from a parent, say): no pings, still ready.
    let zk = ZkCluster::standalone();
    let mut systemd = Systemd::path();
    let mut env = systemd.env().to_vec();
    env.push(("WATCHDOG_PID", "1"));
    let _synapse = env
        .iter()
        .fold(
            SynapseBuilder::new(&zk.connect_string())
                .service(SynapseService::tcp("web").connect_timeout(None)),
            |b, (k, v)| b.env(k, v),
        )
        .start();
    systemd.wait_for("READY=1");
    assert!(!systemd.any("WATCHDOG=1"), "{:#?}", systemd.seen);
}

#[test]
fn stopping_before_ready_never_says_ready() {
    // ZooKeeper never answers: nerve is stopped while it still waits for its first reconcile.
    let mut zk = ZkCluster::standalone();
    let connect = zk.connect_string();
    zk.kill(0);
    let mut systemd = Systemd::path();
    let mut nerve = systemd
        .env()
        .iter()
        .fold(
            NerveBuilder::new(&connect)
                .instance_id("h")
                .service(NerveService::tcp("app", free_port()).checks(vec![json!({"type": "tcp"})])),
            |b, (k, v)| b.env(k, v),
        )
        .start();
    systemd.pings(2);
    nerve.signal("TERM");
    systemd.wait_for("STOPPING=1");
    assert!(nerve.wait_exit(WAIT).success());
    // Everything it sent was sent by now (it has exited): none of it is READY=1. (A message
    // still between the socket and the reader thread is in the channel within moments.)
    while let Ok(msg) = systemd.messages.recv_timeout(Duration::from_millis(500)) {
        systemd.seen.push(msg);
    }
    assert!(!systemd.any("READY=1"), "{:#?}", systemd.seen);
}
