//! Upgrades under continuous load: a new synapse takes the running one's listening sockets
//! and routes (`--takeover` over `upgrade_socket`), the old one drains and exits. Clients
//! send TCP (line protocol) and HTTP requests through synapse all along, a new connection
//! per request and keep-alive connections; every request must be answered and no connect
//! refused. Real binaries, a real ZooKeeper, real backends.
//!
//! `SYNAPSE_UPGRADES` sets the number of upgrades in a row (default 20 here to keep CI
//! short; the 100 were run by hand: `SYNAPSE_UPGRADES=100 cargo test -p
//! integration-tests --test upgrade -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use integration_tests::agents::routed;
use integration_tests::http::HttpBackend;
use integration_tests::{eventually, free_port, Agent, LineBackend, Load, Tally, Zk, ZkCluster};

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
        .unwrap_or(20)
}

/// Backends, ZooKeeper nodes, and a synapse config with a TCP service `web` and an HTTP
/// service `api`.
struct Rig {
    tcp_load: Load,
    http_load: Load,
    _lines: [LineBackend; 2],
    _https: [HttpBackend; 2],
    _zk: ZkCluster,
    config: String,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> (Rig, Agent) {
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
        let socket = dir.path().join("upgrade.sock");
        let (admin, web, api) = (free_port(), free_port(), free_port());
        let config = config(&cs, admin, web, api, &socket);
        let synapse = Agent::start("synapse", &config);
        for service in ["web", "api"] {
            eventually(&format!("synapse routes {service}"), WAIT, || {
                (routed(admin, service)?.len() == 2).then_some(())
            });
        }
        let rig = Rig {
            tcp_load: Load::start(web, 2, 2, PAUSE),
            http_load: Load::start_http(api, 2, 2, PAUSE),
            _lines: lines,
            _https: https,
            _zk: zk,
            config,
            admin,
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

    /// One upgrade: a successor takes over, the old one exits cleanly.
    fn upgrade(&self, old: &mut Agent) -> Agent {
        let new = Agent::start_with_args("synapse", &self.config, &["--takeover"]);
        let status = old.wait_exit(WAIT);
        assert!(status.success(), "the old synapse exits cleanly after the handoff: {status}");
        assert!(
            old.log().contains("the successor serves"),
            "the old synapse handed over:\n{}",
            old.log()
        );
        eventually("the new synapse confirms the takeover", WAIT, || {
            new.log().contains("takeover done").then_some(())
        });
        new
    }
}

fn config(zk: &str, admin: u16, web: u16, api: u16, socket: &Path) -> String {
    format!(
        "admin: {{listen: \"127.0.0.1:{admin}\"}}\nzookeeper: {{session_timeout: 2s}}\n\
         drain_timeout: 10s\nupgrade_socket: {}\nservices:\n  \
         - {{name: web, zk_hosts: \"{zk}\", zk_path: /services/web, listen: {web}}}\n  \
         - {{name: api, mode: http, zk_hosts: \"{zk}\", zk_path: /services/api, listen: {api}}}\n",
        socket.display()
    )
}

fn assert_clean(what: &str, tcp: &Tally, http: &Tally) {
    println!(
        "{what}: tcp {} answered, {} failed, {} refused; http {} answered, {} failed, {} refused",
        tcp.ok, tcp.failed, tcp.refused, http.ok, http.failed, http.refused
    );
    assert_eq!(tcp.failed, 0, "{what}: TCP requests failed: {:#?}", tcp.failures);
    assert_eq!(http.failed, 0, "{what}: HTTP requests failed: {:#?}", http.failures);
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
        let new = rig.upgrade(&mut synapse);
        synapse = new;
        let (tcp, http) = rig.settle();
        if tcp.failed + http.failed + tcp.refused + http.refused > 0 {
            assert_clean(&format!("upgrade {round}"), &tcp, &http);
        }
        tcp_total.ok += tcp.ok;
        http_total.ok += http.ok;
    }
    // The last one routes from ZooKeeper as well as from what it was handed.
    assert_eq!(routed(rig.admin, "web").map(|r| r.len()), Some(2));
    assert_eq!(routed(rig.admin, "api").map(|r| r.len()), Some(2));
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
    let mut bad = Agent::start_with_args(
        "synapse",
        &format!("{}bogus_key: 1\n", rig.config),
        &["--takeover"],
    );
    let status = bad.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "an invalid config exits with status 2: {}", bad.log());
    assert!(synapse.is_running(), "the running synapse serves on");
    let (tcp, http) = rig.settle();
    assert_clean("after a refused upgrade", &tcp, &http);
    // Nothing was handed over: the upgrade socket still serves the next successor.
    let _new = rig.upgrade(&mut synapse);
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
    let mut one = Agent::start_with_args("synapse", &rig.config, &["--takeover"]);
    let mut two = Agent::start_with_args("synapse", &rig.config, &["--takeover"]);
    let status = synapse.wait_exit(WAIT);
    assert!(status.success(), "the old synapse exits cleanly: {status}");
    // Each candidate either serves, or has exited (a loser refused, or a winner that handed
    // over to the other in turn).
    eventually("one candidate serves, the other is gone", WAIT, || {
        let (a, b) = (one.is_running(), two.is_running());
        (a != b).then_some(())
    });
    let (winner, loser) = if one.is_running() { (&one, &mut two) } else { (&two, &mut one) };
    let lost = loser.log();
    if !lost.contains("the successor serves") {
        let status = loser.wait_exit(WAIT);
        assert!(!status.success(), "a losing candidate exits with an error:\n{lost}");
        println!("the losing candidate's log:\n{lost}");
    }
    assert!(winner.log().contains("takeover done"));
    let (tcp, http) = rig.settle();
    assert_clean("after two concurrent takeovers", &tcp, &http);
}
