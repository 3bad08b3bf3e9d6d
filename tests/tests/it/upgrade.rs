//! Upgrades under continuous load: a new synapse takes the running one's listening sockets
//! and routes (`--takeover` over `upgrade_socket`), the old one drains and exits. Clients
//! send TCP (line protocol) and HTTP requests through synapse all along, a new connection
//! per request and keep-alive connections; every request must be answered and no connect
//! refused. Real binaries, a real ZooKeeper, real backends.
//!
//! nerve upgrades the same way (`--takeover` resumes the running nerve's ZooKeeper session):
//! its node must never disappear, as seen by a ZooKeeper watcher and by clients going
//! through a synapse that keeps no previous backends.
//!
//! `SYNAPSE_UPGRADES` sets the number of upgrades in a row (default 100: about 35 s here).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use integration_tests::http::HttpBackend;
use integration_tests::{
    eventually, LineBackend, Load, Nerve, NerveBuilder, NerveService, Synapse, SynapseBuilder,
    SynapseService, Tally, Zk, ZkCluster,
};
use serde_json::json;
use zookeeper_client as zkc;

const WAIT: Duration = Duration::from_secs(30);
/// Two clients of each kind per protocol, one request every 10 ms each.
const PAUSE: Duration = Duration::from_millis(10);

/// One at a time: they count every request on a shared 2-core machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn upgrades() -> usize {
    std::env::var("SYNAPSE_UPGRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Backends, ZooKeeper nodes, and a synapse config with a TCP service `web` and an HTTP
/// service `api`.
struct Rig {
    tcp_load: Load,
    http_load: Load,
    _lines: [LineBackend; 2],
    _https: [HttpBackend; 2],
    _zk: ZkCluster,
    config: SynapseBuilder,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> (Rig, Synapse) {
        let zk = ZkCluster::standalone();
        let cs = zk.connect_string();
        let zkc = Zk::connect(&cs);
        let lines = [LineBackend::start("a"), LineBackend::start("b")];
        let https = [HttpBackend::start("ha"), HttpBackend::start("hb")];
        for (i, b) in lines.iter().enumerate() {
            zkc.put_backend("web", &format!("web_{i}"), b.port, "");
        }
        for (i, b) in https.iter().enumerate() {
            zkc.put_backend("api", &format!("api_{i}"), b.port, "");
        }
        let dir = tempfile::tempdir().unwrap();
        let config = SynapseBuilder::new(&cs)
            .session_timeout(Duration::from_secs(2))
            .drain_timeout(Duration::from_secs(10))
            .top(
                "upgrade_socket",
                dir.path().join("upgrade.sock").display().to_string(),
            )
            .service(SynapseService::tcp("web").connect_timeout(None))
            .service(SynapseService::http("api").connect_timeout(None));
        let synapse = config.clone().start();
        synapse.wait_routes("web", 2);
        synapse.wait_routes("api", 2);
        let rig = Rig {
            tcp_load: Load::start(synapse.port("web"), 2, 2, PAUSE),
            http_load: Load::start_http(synapse.port("api"), 2, 2, PAUSE),
            _lines: lines,
            _https: https,
            _zk: zk,
            config,
            _dir: dir,
        };
        rig.settle();
        (rig, synapse)
    }

    /// Waits for some more answers of both loads, then returns and resets their tallies.
    fn settle(&self) -> (Tally, Tally) {
        let (tcp_floor, http_floor) = (self.tcp_load.answered() + 20, self.http_load.answered() + 20);
        eventually("load answered", WAIT, || {
            (self.tcp_load.answered() >= tcp_floor && self.http_load.answered() >= http_floor).then_some(())
        });
        (self.tcp_load.take(), self.http_load.take())
    }
}

/// One upgrade: a successor takes over, the old one exits cleanly after handing over.
fn upgrade(synapse: &mut Synapse) {
    let old = synapse.upgrade();
    assert!(
        old.status.success(),
        "the old synapse exits cleanly after the handoff: {}",
        old.status
    );
    assert!(
        old.log.contains("the successor serves"),
        "the old synapse handed over:\n{}",
        old.log
    );
}

fn assert_clean(what: &str, tcp: &Tally, http: &Tally) {
    println!(
        "{what}: tcp {} answered, {} failed, {} refused; http {} answered, {} failed, {} refused",
        tcp.ok, tcp.failed, tcp.refused, http.ok, http.failed, http.refused
    );
    assert_eq!(tcp.failed, 0, "{what}: TCP requests failed: {:#?}", tcp.failures);
    assert_eq!(
        http.failed, 0,
        "{what}: HTTP requests failed: {:#?}",
        http.failures
    );
    assert_eq!(tcp.refused, 0, "{what}: TCP connects refused");
    assert_eq!(http.refused, 0, "{what}: HTTP connects refused");
}

/// N upgrades in a row under TCP and HTTP load (new connection per request and keep-alive):
/// zero failed requests, zero refused connects, zero resets; the admin API moves along.
#[test]
fn synapse_upgrades_under_load_lose_nothing() {
    let _serial = serial();
    let (rig, mut synapse) = Rig::start();
    let rounds = upgrades();
    let started = Instant::now();
    let (mut tcp_total, mut http_total) = (Tally::default(), Tally::default());
    for round in 1..=rounds {
        upgrade(&mut synapse);
        let (tcp, http) = rig.settle();
        if tcp.failed + http.failed + tcp.refused + http.refused > 0 {
            assert_clean(&format!("upgrade {round}"), &tcp, &http);
        }
        tcp_total.ok += tcp.ok;
        http_total.ok += http.ok;
    }
    // The last one routes from ZooKeeper as well as from what it was handed.
    assert_eq!(synapse.routes("web").map(|r| r.len()), Some(2));
    assert_eq!(synapse.routes("api").map(|r| r.len()), Some(2));
    println!(
        "{rounds} upgrades in {:.1?}: {} TCP and {} HTTP requests answered, none failed, none refused",
        started.elapsed(),
        tcp_total.ok,
        http_total.ok
    );
}

/// A successor whose config is invalid exits before it asks for anything; the running
/// synapse serves on, without a failed request, and a later good upgrade works.
#[test]
fn failed_upgrade_leaves_the_old_synapse_serving() {
    let _serial = serial();
    let (rig, mut synapse) = Rig::start();
    let mut bad = rig.config.clone().top("bogus_key", 1).start_takeover();
    let status = bad.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(2),
        "an invalid config exits with status 2: {}",
        bad.log()
    );
    assert!(synapse.is_running(), "the running synapse serves on");
    let (tcp, http) = rig.settle();
    assert_clean("after a refused upgrade", &tcp, &http);
    // Nothing was handed over: the upgrade socket still serves the next successor.
    upgrade(&mut synapse);
    let (tcp, http) = rig.settle();
    assert_clean("after the next good upgrade", &tcp, &http);
}

/// Two successors at once: one takes over, the other exits with a clear reason, or, if it
/// came after the first had finished, takes over from it. Either way one synapse serves at
/// the end and no request failed.
#[test]
fn concurrent_takeovers_one_wins() {
    let _serial = serial();
    let (rig, mut synapse) = Rig::start();
    let mut one = rig.config.start_takeover();
    let mut two = rig.config.start_takeover();
    let status = synapse.wait_exit(WAIT);
    assert!(status.success(), "the old synapse exits cleanly: {status}");
    // Each candidate either serves, or has exited (a loser refused, or a winner that handed
    // over to the other in turn).
    eventually("one candidate serves, the other is gone", WAIT, || {
        let (a, b) = (one.is_running(), two.is_running());
        (a != b).then_some(())
    });
    let (winner, loser) = if one.is_running() {
        (&one, &mut two)
    } else {
        (&two, &mut one)
    };
    let lost = loser.log();
    if !lost.contains("the successor serves") {
        let status = loser.wait_exit(WAIT);
        assert!(
            !status.success(),
            "a losing candidate exits with an error:\n{lost}"
        );
        println!("the losing candidate's log:\n{lost}");
    }
    assert!(winner.log().contains("takeover done"));
    let (tcp, http) = rig.settle();
    assert_clean("after two concurrent takeovers", &tcp, &http);
}

/// Counts the deletions under a path, seen by a persistent recursive watch of its own
/// session (what any reader of the path would see).
struct DeletionWatcher {
    deleted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeletionWatcher {
    fn start(connect: &str, path: &str) -> DeletionWatcher {
        let deleted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (connect, path, d, s) = (
            connect.to_string(),
            path.to_string(),
            deleted.clone(),
            stop.clone(),
        );
        let (armed_tx, armed_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = zkc::Client::connect(&connect).await.unwrap();
                let mut watcher = client.watch(&path, zkc::AddWatchMode::PersistentRecursive).await.unwrap();
                armed_tx.send(()).unwrap();
                loop {
                    tokio::select! {
                        _ = s.cancelled() => return,
                        event = watcher.changed() => {
                            if event.event_type == zkc::EventType::NodeDeleted {
                                d.lock().unwrap().push(event.path.clone());
                            }
                            if event.event_type == zkc::EventType::Session {
                                d.lock().unwrap().push(format!("watcher session event: {:?}", event.session_state));
                            }
                        }
                    }
                }
            });
        });
        armed_rx.recv_timeout(WAIT).expect("deletion watcher armed");
        DeletionWatcher {
            deleted,
            stop,
            thread: Some(thread),
        }
    }

    fn deleted(&self) -> Vec<String> {
        self.deleted.lock().unwrap().clone()
    }
}

impl Drop for DeletionWatcher {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const NERVE_PATH: &str = "/services/web";

/// nerve registering `b` as `web` of instance `a-host` (TCP check every 100 ms, rise 1),
/// also to a file reporter (`dir/web.json`), with an upgrade socket (`dir/nerve.sock`); 2 s
/// sessions.
fn nerve_config(zk: &str, b: &LineBackend, dir: &std::path::Path) -> NerveBuilder {
    let file = dir.join("web.json").display().to_string();
    NerveBuilder::new(zk)
        .instance_id("a-host")
        .session_timeout(Duration::from_secs(2))
        .top("upgrade_socket", dir.join("nerve.sock").display().to_string())
        .service(
            NerveService::tcp("web", b.port)
                .zk_path(NERVE_PATH)
                .with("reporters", json!([{"type": "file", "path": file}])),
        )
}

/// The (name, ephemeral owner) of every node under the path.
fn nodes(zkc: &Zk) -> Vec<(String, i64)> {
    zkc.children(NERVE_PATH)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| zkc.get(&format!("{NERVE_PATH}/{c}")).ok().map(|(_, o)| (c, o)))
        .collect()
}

struct NerveRig {
    load: Load,
    _backend: LineBackend,
    _synapse: Synapse,
    zkc: Zk,
    _zk: ZkCluster,
    cs: String,
    _dir: tempfile::TempDir,
}

impl NerveRig {
    fn start() -> (NerveRig, Nerve) {
        let zk = ZkCluster::standalone();
        let cs = zk.connect_string();
        let zkc = Zk::connect(&cs);
        let backend = LineBackend::start("a");
        let dir = tempfile::tempdir().unwrap();
        let nerve = nerve_config(&cs, &backend, dir.path()).start();
        // No previous backends: a moment without the node is a moment without a route.
        let synapse = SynapseBuilder::new(&cs)
            .session_timeout(Duration::from_secs(2))
            .service(
                SynapseService::tcp("web")
                    .zk_path(NERVE_PATH)
                    .connect_timeout(None)
                    .with("use_previous_backends", false),
            )
            .start();
        synapse.wait_routes("web", 1);
        let rig = NerveRig {
            load: Load::start(synapse.port("web"), 2, 2, PAUSE),
            _backend: backend,
            _synapse: synapse,
            zkc,
            _zk: zk,
            cs,
            _dir: dir,
        };
        let floor = rig.load.answered() + 20;
        eventually("load answered", WAIT, || {
            (rig.load.answered() >= floor).then_some(())
        });
        let _ = rig.load.take();
        (rig, nerve)
    }

    fn settle(&self) -> Tally {
        let floor = self.load.answered() + 20;
        eventually("load answered", WAIT, || {
            (self.load.answered() >= floor).then_some(())
        });
        self.load.take()
    }
}

fn nerve_upgrades() -> usize {
    std::env::var("NERVE_UPGRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// 20 nerve upgrades in a row under load through synapse: the node is never deleted (a
/// ZooKeeper watcher sees no deletion), keeps its owner session, and no request fails.
#[test]
fn nerve_upgrades_keep_the_node() {
    let _serial = serial();
    let (rig, mut nerve) = NerveRig::start();
    let before = eventually("one node", WAIT, || match nodes(&rig.zkc).as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    });
    let watcher = DeletionWatcher::start(&rig.cs, NERVE_PATH);
    // What a reader of the file reporter's file sees, polled every millisecond.
    let file = rig._dir.path().join("web.json");
    let stop_polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (file, stop) = (file.clone(), stop_polling.clone());
        std::thread::spawn(move || {
            let mut not_available = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    if !text.contains("\"available\"") {
                        not_available += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            not_available
        })
    };
    let rounds = nerve_upgrades();
    let started = Instant::now();
    let mut answered = 0;
    for round in 1..=rounds {
        let old = nerve.upgrade();
        assert!(
            old.status.success(),
            "the old nerve exits cleanly after the handoff: {}",
            old.status
        );
        assert!(
            old.log.contains("the successor resumed the sessions"),
            "{}",
            old.log
        );
        eventually("the new nerve resumed the session", WAIT, || {
            nerve
                .log()
                .contains("resumed the ZooKeeper session")
                .then_some(())
        });
        let t = rig.settle();
        assert_eq!(t.failed, 0, "upgrade {round}: requests failed: {:#?}", t.failures);
        assert_eq!(t.refused, 0, "upgrade {round}: connects refused");
        answered += t.ok;
        assert_eq!(
            nodes(&rig.zkc),
            vec![before.clone()],
            "upgrade {round}: the same node, same owner"
        );
        assert_eq!(
            watcher.deleted(),
            Vec::<String>::new(),
            "upgrade {round}: a reader saw a deletion"
        );
    }
    // The file reporter's file too: the old nerve leaves it to its successor, as it is.
    stop_polling.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        poller.join().unwrap(),
        0,
        "a reader of the file reporter's file saw another state"
    );
    // The last nerve still maintains the node: it goes down the usual way on SIGTERM.
    nerve.signal("TERM");
    assert!(nerve.wait_exit(WAIT).success());
    eventually("the node is deleted on SIGTERM", WAIT, || {
        nodes(&rig.zkc).is_empty().then_some(())
    });
    println!(
        "{rounds} nerve upgrades in {:.1?}: {answered} requests answered through synapse, none failed; \
         node {} owned by session {:#x} throughout, no deletion seen",
        started.elapsed(),
        before.0,
        before.1
    );
}

/// `nerve ctl park`, then a nerve started with `--takeover` after the old one has exited (a
/// restart that does not overlap, e.g. a container's): it resumes the parked session, so a
/// reader sees no deletion and the node keeps its owner. A nerve started without
/// `--takeover` discards a parked state (the old node then expires with its session).
#[test]
fn a_parked_nerve_is_resumed_by_a_later_takeover() {
    let _serial = serial();
    let (rig, mut nerve) = NerveRig::start();
    let before = eventually("one node", WAIT, || match nodes(&rig.zkc).as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    });
    let socket = rig._dir.path().join("nerve.sock");
    let parked = rig._dir.path().join("nerve.sock.parked");
    eventually("the upgrade socket", WAIT, || socket.exists().then_some(()));
    let watcher = DeletionWatcher::start(&rig.cs, NERVE_PATH);
    let admin = nerve.admin();
    let park = || {
        let out = std::process::Command::new(integration_tests::agents::binary("nerve"))
            .args(["ctl", "--admin", &format!("127.0.0.1:{admin}"), "park"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "nerve ctl park: {text}");
        text
    };
    let answer = park();
    assert!(answer.contains("parked in"), "{answer}");
    let status = nerve.wait_exit(WAIT);
    assert!(status.success(), "a parked nerve exits cleanly: {status}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&parked).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the parked state is readable by its owner only"
    );
    let log = nerve.log();
    assert!(!log.contains("password"), "no secret in the log:\n{log}");
    let new = nerve.config().clone().start_takeover();
    eventually("the new nerve resumed the parked session", WAIT, || {
        let log = new.log();
        (log.contains("resuming the sessions a parked nerve left")
            && log.contains("resumed the ZooKeeper session"))
        .then_some(())
    });
    assert!(!parked.exists(), "the parked state is used once");
    let t = rig.settle();
    assert_eq!(t.failed, 0, "requests failed: {:#?}", t.failures);
    assert_eq!(nodes(&rig.zkc), vec![before.clone()], "the same node, same owner");
    assert_eq!(watcher.deleted(), Vec::<String>::new(), "a reader saw a deletion");
    // Parked again, but the next nerve starts plain: the state is discarded.
    nerve = new;
    park();
    assert!(nerve.wait_exit(WAIT).success());
    let plain = nerve.config().clone().start();
    eventually("the plain start discards the parked state", WAIT, || {
        (plain.log().contains("is discarded") && !parked.exists()).then_some(())
    });
    eventually(
        "a node of a new session replaces the expired one",
        WAIT,
        || match nodes(&rig.zkc).as_slice() {
            [one] if one.1 != before.1 => Some(()),
            _ => None,
        },
    );
}

/// The running nerve lets its session go for a successor that never resumes it (here: the
/// test takes the offer and walks away): ZooKeeper expires the session within its timeout
/// and the node goes, as after a crash; nothing is left behind.
#[test]
fn a_nerve_successor_that_never_comes_loses_the_node_within_the_session_timeout() {
    let _serial = serial();
    let (rig, mut nerve) = NerveRig::start();
    eventually("one node", WAIT, || (nodes(&rig.zkc).len() == 1).then_some(()));
    let socket = rig._dir.path().join("nerve.sock");
    eventually("the upgrade socket", WAIT, || socket.exists().then_some(()));
    let (takeover, offer) = common::handoff::Takeover::connect(&socket, "nerve").unwrap();
    assert!(
        !format!("{offer:?}").contains("password"),
        "the offer's Debug shows no secret: {offer:?}"
    );
    let let_go = Instant::now();
    drop(takeover);
    let status = nerve.wait_exit(WAIT);
    assert!(status.success(), "{status}");
    let gone = eventually("the node expires with its session", WAIT, || {
        nodes(&rig.zkc).is_empty().then(|| let_go.elapsed())
    });
    println!("node gone {gone:.1?} after the handoff was abandoned (session timeout 2 s)");
    // 2 s of session, ZooKeeper's expiry tick and the poll: well within twice the timeout.
    assert!(
        gone < Duration::from_secs(4),
        "the node outlived its session: {gone:?}"
    );
    let log = nerve.log();
    assert!(
        !log.contains("password"),
        "nerve's log mentions no password:\n{log}"
    );
}

/// The harness handles' `upgrade()` (what other topics use): a synapse built from data is
/// upgraded twice; it serves the same port from the same routes each time, and the old
/// processes exit cleanly.
#[test]
fn harness_upgrade_keeps_serving() {
    let _serial = serial();
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let backend = LineBackend::start("a");
    zkc.put_backend("web", "web_0", backend.port, "");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("u.sock");
    let mut synapse = SynapseBuilder::new(&cs)
        .service(SynapseService::tcp("web"))
        .top("upgrade_socket", socket.display().to_string())
        .start();
    synapse.wait_routed_to("web", &[backend.port]);
    let port = synapse.port("web");
    for _ in 0..2 {
        let old = synapse.upgrade();
        assert!(
            old.status.success(),
            "the old synapse exits cleanly: {}",
            old.status
        );
        assert_eq!(synapse.port("web"), port);
        synapse.wait_routed_to("web", &[backend.port]);
        let answer = integration_tests::agents::exchange(port, b"x\n").unwrap();
        assert!(answer.starts_with("a:"), "{answer}");
    }
}

/// systemd socket activation (`LISTEN_FDS`, passed here by the harness as a `.socket` unit
/// would, keeping its own copy): synapse serves the passed socket, and restarts (SIGTERM,
/// then a new process) under load lose nothing and refuse nothing: clients that connect
/// while no synapse runs wait in the socket's queue for the next one.
#[test]
fn socket_activated_restarts_lose_nothing() {
    let _serial = serial();
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let backends = [LineBackend::start("a"), LineBackend::start("b")];
    for (i, b) in backends.iter().enumerate() {
        zkc.put_backend("web", &format!("web_{i}"), b.port, "");
    }
    // The "socket unit": bound once, held for the whole test.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().port();
    let config = SynapseBuilder::new(&cs)
        .session_timeout(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(10))
        .service(SynapseService::tcp("web").listen_on(listen).connect_timeout(None));
    let mut synapse = config.clone().start_socket_activated(&held);
    synapse.wait_routes("web", 2);
    assert!(
        synapse.log().contains("passed by the service manager"),
        "{}",
        synapse.log()
    );
    let load = Load::start(listen, 2, 2, PAUSE);
    let settle = || {
        let floor = load.answered() + 20;
        eventually("load answered", WAIT, || (load.answered() >= floor).then_some(()));
        load.take()
    };
    let _ = settle();
    let restarts = 10;
    for round in 1..=restarts {
        synapse.signal("TERM");
        assert!(synapse.wait_exit(WAIT).success());
        synapse = config.clone().start_socket_activated(&held);
        let t = settle();
        assert_eq!(t.failed, 0, "restart {round}: requests failed: {:#?}", t.failures);
        assert_eq!(t.refused, 0, "restart {round}: connects refused");
    }
    println!("{restarts} socket-activated restarts under load: no request failed, no connect refused");
}
