//! Fault injection under continuous client load: the real nerve and synapse binaries, a
//! 3-node ZooKeeper ensemble, and clients sending requests through synapse all along (a new
//! connection per request, and keep-alive connections) to backends that nerve registers.
//! Each scenario asserts zero failed requests, plus its own recovery.
//!
//! Recovery after an outage and "never two nodes" are also tested without load in
//! `recovery.rs`; here the point is what the clients see. The tests run one at a time (they
//! measure recovery times on a 2-core machine) and keep ZooKeeper timings short: the harness
//! runs tickTime 100 ms, the agents ask for 2 s sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use integration_tests::agents::{exchange, routed};
use integration_tests::{
    eventually, free_port, LineBackend, Load, Nerve, NerveBuilder, NerveService, NodeCounter, Synapse,
    SynapseBuilder, SynapseService, Tally, Zk, ZkCluster,
};

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";
/// The agents' ZooKeeper session timeout.
const SESSION: Duration = Duration::from_secs(2);
/// Target for nerve's nodes being back once the ensemble serves: 1 s. Asserted generously
/// (a loaded 2-core CI machine); the measured value is printed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(3);
/// Two clients of each kind, one request every 10 ms each: about 400 requests/s.
const PAUSE: Duration = Duration::from_millis(10);

/// One fault test at a time: they time recoveries and share 2 cores with JVMs.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// nerve for one host: registers `b` as service `web` of instance `<b.name>-host`, tcp checks
/// every 100 ms; `drain_time` on SIGTERM.
fn start_nerve(zk: &str, b: &LineBackend, drain_time: Duration) -> Nerve {
    NerveBuilder::new(zk)
        .instance_id(&format!("{}-host", b.name))
        .session_timeout(SESSION)
        .drain_time(drain_time)
        .service(NerveService::tcp("web", b.port).zk_path(PATH))
        .start()
}

/// synapse routing `web`. `keep_previous`: `use_previous_backends` (the default, true: an
/// empty path keeps the last backends); false makes a moment without any node a moment
/// without any route.
fn synapse_config(zk: &str, keep_previous: bool) -> SynapseBuilder {
    SynapseBuilder::new(zk)
        .session_timeout(SESSION)
        .drain_timeout(Duration::from_secs(10))
        .service(
            SynapseService::tcp("web")
                .zk_path(PATH)
                .with("use_previous_backends", keep_previous),
        )
}

fn addr(b: &LineBackend) -> String {
    format!("127.0.0.1:{}", b.port)
}

/// The nodes of instance `<name>-host`: (node name, ephemeral owner).
fn nodes_of(zkc: &Zk, name: &str) -> Vec<(String, i64)> {
    let prefix = format!("{name}-host_");
    zkc.children(PATH)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .filter_map(|c| zkc.get(&format!("{PATH}/{c}")).ok().map(|(_, o)| (c, o)))
        .collect()
}

/// The owner of the one node of instance `<name>-host`, once there is exactly one.
fn one_node(zkc: &Zk, name: &str) -> Option<i64> {
    match nodes_of(zkc, name).as_slice() {
        [(_, owner)] => Some(*owner),
        _ => None,
    }
}

/// Everything a scenario needs: two hosts (backend + nerve), synapse, load through it.
/// (Fields drop in order: the load stops first.)
struct Rig {
    load: Load,
    a: LineBackend,
    b: LineBackend,
    nerve_a: Nerve,
    _nerve_b: Nerve,
    synapse: Synapse,
}

impl Rig {
    /// Starts the rig with synapse's defaults (see [`synapse_config`]).
    fn start(cs: &str) -> Rig {
        Self::start_with(cs, true)
    }

    fn start_with(cs: &str, keep_previous: bool) -> Rig {
        let (a, b) = (LineBackend::start("a"), LineBackend::start("b"));
        let nerve_a = start_nerve(cs, &a, Duration::from_secs(2));
        let nerve_b = start_nerve(cs, &b, Duration::from_secs(2));
        let synapse = synapse_config(cs, keep_previous).start();
        let rig = Rig {
            load: Load::start(synapse.port("web"), 2, 2, PAUSE),
            a,
            b,
            nerve_a,
            _nerve_b: nerve_b,
            synapse,
        };
        // The load starts before synapse routes: clients wait (synapse holds connections until
        // its first sync) or retry a refused connect. That start is not under test.
        rig.wait_routes("synapse routes to both hosts", &[&rig.a, &rig.b]);
        let _ = rig.load.take();
        rig
    }

    fn wait_routes(&self, what: &str, backends: &[&LineBackend]) {
        let mut want: Vec<String> = backends.iter().map(|b| addr(b)).collect();
        want.sort();
        eventually(what, WAIT, || {
            (routed(self.synapse.admin(), "web")? == want).then_some(())
        });
    }

    /// Lets the load run until some more requests are answered (so a scenario's window is
    /// never empty), then asserts that none failed since the last check.
    #[track_caller]
    fn assert_no_failures(&self, scenario: &str, allow_refused: bool) -> Tally {
        let floor = self.load.answered() + 50;
        eventually(&format!("load answered after {scenario}"), WAIT, || {
            (self.load.answered() >= floor).then_some(())
        });
        let t = self.load.take();
        println!(
            "{scenario}: {} requests answered, {} failed, {} connects refused (at {:.1?} of load)",
            t.ok,
            t.failed,
            t.refused,
            self.load.elapsed()
        );
        assert_eq!(
            t.failed, 0,
            "{scenario}: {} requests failed at the client; first ones: {:#?}",
            t.failed, t.failures
        );
        if !allow_refused {
            assert_eq!(t.refused, 0, "{scenario}: synapse refused connections");
        }
        t
    }
}

/// A backend written by hand (not by nerve), so that a change can be made at will.
fn put_extra(zkc: &Zk, b: &LineBackend) -> String {
    let path = format!("{PATH}/extra_0000000001");
    zkc.create(
        &path,
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
    path
}

/// The leader is killed, then the server synapse is connected to, then every server for
/// 8 s (past every session timeout): zero failed requests throughout; after the outage,
/// nerve's nodes are back (one per instance) soon after the ensemble serves, and a change
/// made then reaches synapse.
#[test]
fn ensemble_failures_under_load() {
    let _serial = serial();
    let mut zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let rig = Rig::start(&cs);
    let zkc = Zk::connect(&cs);
    let c = LineBackend::start("c");

    // 1. The leader dies; the other two elect a new one.
    let leader = eventually("a leader", WAIT, || zk.leader());
    zk.kill(leader);
    eventually("a new leader", WAIT, || zk.leader().filter(|l| *l != leader));
    let extra = put_extra(&zkc, &c);
    rig.wait_routes("a change made after the leader died", &[&rig.a, &rig.b, &c]);
    zkc.delete(&extra);
    rig.wait_routes("and its removal", &[&rig.a, &rig.b]);
    rig.assert_no_failures("leader killed", false);
    zk.restart(leader);

    // 2. The server synapse is connected to dies: it moves to another one.
    let own: Vec<i64> = [one_node(&zkc, "a"), one_node(&zkc, "b")]
        .into_iter()
        .flatten()
        .chain([zkc.session_id()])
        .collect();
    let (server, _) = eventually("synapse's session in cons", WAIT, || {
        zk.sessions().into_iter().find(|(_, sid)| !own.contains(sid))
    });
    zk.kill(server);
    // Its session, or a new one: synapse replaces a session the client library is slow to
    // move (it holds no ephemeral node), so waiting for the same session id could time out.
    eventually("synapse reconnects to another server", WAIT, || {
        zk.sessions()
            .into_iter()
            .find(|(s, sid)| *s != server && !own.contains(sid))
    });
    let extra = put_extra(&zkc, &c);
    rig.wait_routes("a change made after synapse's server died", &[&rig.a, &rig.b, &c]);
    zkc.delete(&extra);
    rig.wait_routes("and its removal", &[&rig.a, &rig.b]);
    rig.assert_no_failures("synapse's server killed", false);
    zk.restart(server);

    // 3. Every server down for 8 s: the sessions (2 s) are given up; routing goes on from
    // what synapse knew.
    let old = (one_node(&zkc, "a").unwrap(), one_node(&zkc, "b").unwrap());
    drop(zkc);
    zk.kill_all();
    let down = Instant::now();
    eventually("synapse gives its session up", WAIT, || {
        rig.synapse
            .log()
            .contains("ZooKeeper session ended")
            .then_some(())
    });
    // The length of the outage under test, not a synchronisation.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(down.elapsed()));
    rig.assert_no_failures("every server down", false);
    zk.spawn_all();
    eventually("the ensemble serves again", Duration::from_secs(60), || {
        zk.serving().then_some(())
    });
    let serving = Instant::now();
    let zkc = Zk::connect(&cs);
    let back = eventually("both hosts' nodes are back under new sessions", WAIT, || {
        match (one_node(&zkc, "a"), one_node(&zkc, "b")) {
            (Some(a), Some(b)) if a != old.0 && b != old.1 => Some(serving.elapsed()),
            _ => None,
        }
    });
    let extra = put_extra(&zkc, &c);
    let changed = Instant::now();
    rig.wait_routes("a change made after the outage", &[&rig.a, &rig.b, &c]);
    let reached = changed.elapsed();
    println!(
        "full outage (8 s): nerve's nodes back {back:?} after the ensemble served; a change made \
         then reached synapse in {reached:?}"
    );
    zkc.delete(&extra);
    rig.wait_routes("and its removal", &[&rig.a, &rig.b]);
    rig.assert_no_failures("after the outage", false);
    for name in ["a", "b"] {
        assert_eq!(nodes_of(&zkc, name).len(), 1, "exactly one node for {name}");
    }
    assert!(
        back <= RECOVERY_LIMIT,
        "nerve's nodes were back {back:?} after the ensemble served (limit {RECOVERY_LIMIT:?})"
    );
}

/// On nerve's side: the server holding its session is frozen past the session timeout, then
/// nerve itself is frozen until its session expires, then it gets SIGTERM with a drain time
/// and its backend stops after it exits. Zero failed requests; never two nodes for the
/// instance; its node is back (exactly one) after each ZooKeeper fault.
#[test]
fn nerve_faults_under_load() {
    let _serial = serial();
    let mut zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let mut rig = Rig::start(&cs);
    let zkc = Zk::connect(&cs);
    let counter = NodeCounter::start(&cs, PATH, "a-host_");

    // 1. The server nerve is connected to freezes (SIGSTOP) for longer than its session.
    // Whether the session survives (nerve's client reaches another server in time) or not
    // (nerve registers under a new one), there is never more than one node.
    let owner = eventually("a's node", WAIT, || one_node(&zkc, "a"));
    let server = eventually("nerve's session in cons", WAIT, || zk.server_with_session(owner));
    let others: Vec<String> = zk
        .indices()
        .filter(|i| *i != server)
        .map(|i| format!("127.0.0.1:{}", zk.client_port(i)))
        .collect();
    let zko = Zk::connect(&others.join(","));
    zk.freeze(server);
    // The length of the fault under test (past the 2 s session timeout), not a synchronisation.
    std::thread::sleep(Duration::from_secs(4));
    let during = eventually("a has its node while the server is frozen", WAIT, || {
        one_node(&zko, "a")
    });
    zk.thaw(server);
    eventually("the thawed server serves again", WAIT, || {
        zk.mode(server).filter(|m| m == "follower" || m == "leader")
    });
    drop(zko);
    rig.wait_routes("synapse routes to both hosts", &[&rig.a, &rig.b]);
    rig.assert_no_failures("nerve's server frozen", false);
    println!(
        "frozen server: a's node {} the freeze; most nodes of a seen at once: {} ({} polls)",
        if during == owner {
            "kept its session through"
        } else {
            "was re-registered under a new session during"
        },
        counter.max(),
        counter.polls()
    );
    assert_eq!(nodes_of(&zkc, "a").len(), 1, "exactly one node for a");
    assert!(
        counter.max() <= 1,
        "never two nodes for one instance (saw {})",
        counter.max()
    );

    // 2. nerve freezes until its session expires (the forced expiry of a live process):
    // its node goes, synapse routes to b, then nerve registers again: exactly one node.
    let owner = one_node(&zkc, "a").unwrap();
    rig.nerve_a.signal("STOP");
    eventually("a's session expires and its node goes", WAIT, || {
        nodes_of(&zkc, "a").is_empty().then_some(())
    });
    rig.wait_routes("synapse routes to b only", &[&rig.b]);
    rig.nerve_a.signal("CONT");
    let thawed = Instant::now();
    let again = eventually("a's node is back", WAIT, || {
        one_node(&zkc, "a").filter(|o| *o != owner)
    });
    println!(
        "session expiry: a's node back {:?} after nerve resumed",
        thawed.elapsed()
    );
    rig.wait_routes("synapse routes to both again", &[&rig.a, &rig.b]);
    rig.assert_no_failures("nerve's session expired", false);
    assert_eq!(nodes_of(&zkc, "a").len(), 1, "exactly one node for a");
    assert_eq!(one_node(&zkc, "a"), Some(again));
    assert!(
        counter.max() <= 1,
        "never two nodes for one instance (saw {})",
        counter.max()
    );

    // 3. SIGTERM with drain_time 2 s: the node goes first, synapse stops sending new
    // connections to a, nerve exits after the drain, then the service stops accepting
    // (established connections finish).
    rig.nerve_a.signal("TERM");
    rig.wait_routes("synapse stops routing to a", &[&rig.b]);
    let status = rig.nerve_a.wait_exit(WAIT);
    assert!(status.success(), "nerve exits cleanly: {status}");
    rig.a.stop_accepting();
    rig.assert_no_failures("nerve SIGTERM with drain_time, then the service stops", false);
}

/// synapse is stopped (SIGTERM) and started again on the same ports under load, ten times:
/// clients retry a refused connect while the port is not bound, and a connection that was
/// accepted is not reset or closed without its answer.
///
/// Guards against the defect this test found: every restart, two or three connections were
/// reset about 100 ms after the SIGTERM (20 to 30 per run). The old process kept its
/// listening sockets open through the drain, so clients connecting meanwhile were queued in
/// the backlog, never accepted, and reset at exit. Sockets are now closed (after serving
/// their backlog) as soon as accepting stops: such clients are refused at once and retry.
///
/// At most 2 resets per run are tolerated, and why: a client whose handshake is half done
/// when the socket closes (its `connect` returned on the SYN-ACK, the server has not
/// processed the final ACK yet) is reset by the kernel whatever the process does. Seen: 0
/// or 1 per run of 10 restarts. Zero needs the listening socket to outlive the process:
/// systemd socket activation or `--takeover`, both tested with zero in `upgrade.rs`.
#[test]
fn synapse_restart_under_load() {
    let _serial = serial();
    // The fault is synapse's own: a standalone ZooKeeper is enough.
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let mut rig = Rig::start(&cs);
    let mut failed = Vec::new();
    for round in 1..=10 {
        let term = rig.load.elapsed();
        rig.synapse.signal("TERM");
        let status = rig.synapse.wait_exit(WAIT);
        assert!(status.success(), "synapse exits cleanly: {status}");
        // The same config, ports included.
        rig.synapse = rig.synapse.config().clone().start();
        rig.wait_routes("the new synapse routes to both hosts", &[&rig.a, &rig.b]);
        let floor = rig.load.answered() + 50;
        eventually("load answered after the restart", WAIT, || {
            (rig.load.answered() >= floor).then_some(())
        });
        let t = rig.load.take();
        println!(
            "synapse restart {round} (SIGTERM at {term:.1?} of load): {} requests answered, {} failed, \
             {} connects refused; failures: {:?}",
            t.ok, t.failed, t.refused, t.failures
        );
        failed.extend(t.failures);
    }
    assert!(
        failed.len() <= 2,
        "requests failed through synapse restarts (at most 2 handshake races expected): {failed:#?}"
    );
}

/// A leader failover is routine (about a second here, within the 2 s sessions): the agents
/// should keep their sessions, so nerve's nodes stay as they are, and synapse never goes
/// without a route even when it keeps no previous backends.
///
/// Guards against the defect this test found: nerve gave its still-valid session up about
/// 1.1 s into the election for a new one, deleting and re-creating every instance's node at
/// once (the path empty for tens of ms; with `use_previous_backends: false`, failed requests).
/// nerve now keeps a live session; only synapse, which holds no node, replaces a lagging one.
#[test]
fn leader_failover_keeps_sessions_and_routes_under_load() {
    let _serial = serial();
    let mut zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let rig = Rig::start_with(&cs, false);
    for round in 1..=3 {
        let zkc = Zk::connect(&cs);
        let before = (one_node(&zkc, "a").unwrap(), one_node(&zkc, "b").unwrap());
        drop(zkc);
        let leader = eventually("a leader", WAIT, || zk.leader());
        zk.kill(leader);
        eventually("a new leader", WAIT, || zk.leader().filter(|l| *l != leader));
        // Past the session timeout: whatever the agents do about their sessions is done by then.
        std::thread::sleep(Duration::from_secs(3));
        let zkc = Zk::connect(&cs);
        rig.wait_routes("synapse routes to both hosts", &[&rig.a, &rig.b]);
        let after = (one_node(&zkc, "a"), one_node(&zkc, "b"));
        let tally = rig.load.take();
        println!(
            "leader failover {round}: nodes owned by {before:x?} before, {after:x?} after; {} requests \
             answered, {} failed",
            tally.ok, tally.failed
        );
        assert_eq!(
            after,
            (Some(before.0), Some(before.1)),
            "failover {round}: nerve's nodes keep their sessions through a leader failover"
        );
        assert_eq!(
            tally.failed, 0,
            "failover {round}: no failed requests through a leader failover; first ones: {:#?}",
            tally.failures
        );
        zk.restart(leader);
    }
}

/// The name of the line backend answering one request through `port`.
fn answered_by(port: u16) -> Option<String> {
    let answer = exchange(port, b"probe\n").ok()?;
    Some(answer.strip_suffix(":probe\n")?.to_string())
}

/// Reloads counted with `result` (`ok` or `failed`) by `synapse`.
fn reloads(synapse: &Synapse, result: &str) -> f64 {
    synapse
        .metric("synapse_config_reloads_total", &[("result", result)])
        .unwrap_or(0.0)
}

/// synapse's config is rewritten and SIGHUP sent, eight times under load, each time changing
/// another service than the loaded one: it is added, its backends' path changed, its listen
/// port changed, it is removed; twice over. Each change takes effect (its listener answers
/// from the expected backend, or is gone), and the untouched service `web` sees zero failed
/// requests and zero refused connects, a new connection per request and keep-alive alike.
#[test]
fn synapse_reload_under_load() {
    let _serial = serial();
    let zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let mut rig = Rig::start(&cs);
    let zkc = Zk::connect(&cs);
    let (c, d) = (LineBackend::start("c"), LineBackend::start("d"));
    for (path, b) in [("/services/other", &c), ("/services/other2", &d)] {
        zkc.create(
            &format!("{path}/{}_0000000001", b.name),
            format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
        );
    }
    let (p1, p2) = (free_port(), free_port());
    let other = |path: &str, listen: u16| Some(SynapseService::tcp("other").zk_path(path).listen_on(listen));
    // (what, the other service, where it answers and from which backend).
    type Step<'a> = (
        &'static str,
        Option<SynapseService>,
        Option<(u16, &'a LineBackend)>,
    );
    let steps: [Step; 4] = [
        ("service added", other("/services/other", p1), Some((p1, &c))),
        (
            "its zk_path changed",
            other("/services/other2", p1),
            Some((p1, &d)),
        ),
        (
            "its listen port changed",
            other("/services/other2", p2),
            Some((p2, &d)),
        ),
        ("service removed", None, None),
    ];
    let mut reloaded = 0;
    for round in 1..=2 {
        for (what, other, expect) in &steps {
            let before = reloads(&rig.synapse, "ok");
            rig.synapse.reload(|c| match other {
                Some(service) => c.set_service(service.clone()),
                None => c.without("other"),
            });
            eventually(&format!("reload {round}: {what}: counted"), WAIT, || {
                (reloads(&rig.synapse, "ok") > before).then_some(())
            });
            reloaded += 1;
            match expect {
                Some((port, backend)) => {
                    eventually(&format!("reload {round}: {what}: takes effect"), WAIT, || {
                        (answered_by(*port)? == backend.name).then_some(())
                    });
                }
                None => eventually(&format!("reload {round}: {what}: takes effect"), WAIT, || {
                    let gone = routed(rig.synapse.admin(), "other").is_none();
                    let closed = [p1, p2]
                        .iter()
                        .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err());
                    (gone && closed).then_some(())
                }),
            }
            if matches!(expect, Some((port, _)) if *port == p2) {
                eventually(
                    &format!("reload {round}: {what}: the old port closes"),
                    WAIT,
                    || {
                        std::net::TcpStream::connect(("127.0.0.1", p1))
                            .is_err()
                            .then_some(())
                    },
                );
            }
            rig.assert_no_failures(&format!("reload {round}: {what}"), false);
        }
    }
    rig.wait_routes("web still routes to both hosts", &[&rig.a, &rig.b]);
    assert_eq!(reloads(&rig.synapse, "failed"), 0.0, "no reload failed");
    assert!(reloads(&rig.synapse, "ok") >= f64::from(reloaded));
}
