//! A fleet on one ensemble, against real ZooKeeper servers: what a re-list costs, the splay
//! spreading a fleet's re-lists, observers and read-only sessions in a minority partition,
//! ZooKeeper over TLS, and following a dynamic reconfiguration under load.
//!
//! The in-process tests run on a multi-threaded runtime because the harness blocks (process
//! management, four-letter words): the clients' background tasks keep running meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::registry::{self, Registry, RegistryOptions, Session, WatchUpdate};
use integration_tests::agents::routed;
use integration_tests::zk::{ZkOptions, ZkTlsFiles};
use integration_tests::{
    consistently_async, eventually, free_port, Agent, Backend, LineBackend, Load, Zk, ZkCluster,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zkc;

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";

fn payload(port: u16) -> Vec<u8> {
    format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}").into_bytes()
}

fn registry(options: RegistryOptions, cancel: &CancellationToken) -> Registry {
    Registry::new(options, cancel.clone())
}

/// Members of a watched path as a consumer sees them (ids, sorted).
struct View {
    rx: mpsc::Receiver<WatchUpdate>,
    members: std::collections::BTreeSet<String>,
    resets: usize,
}

impl View {
    fn new(rx: mpsc::Receiver<WatchUpdate>) -> View {
        View {
            rx,
            members: Default::default(),
            resets: 0,
        }
    }

    fn drain(&mut self) {
        while let Ok(u) = self.rx.try_recv() {
            match u {
                WatchUpdate::Reset(all) => {
                    self.resets += 1;
                    self.members = all.into_iter().map(|m| m.id).collect();
                }
                WatchUpdate::Upsert(m) => {
                    self.members.insert(m.id);
                }
                WatchUpdate::Remove(id) => {
                    self.members.remove(&id);
                }
                WatchUpdate::Invalid { .. } => {}
            }
        }
    }

    fn has(&mut self, want: &[&str]) -> bool {
        self.drain();
        self.members.iter().map(String::as_str).eq(want.iter().copied())
    }
}

async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn writer(cs: &str) -> Zk {
    let zk = Zk::connect(cs);
    zk.create("/services", b"");
    zk.create(PATH, b"");
    zk
}

/// An async writer for the in-process tests (the blocking [`Zk`] has its own runtime).
struct Writer(zkc::Client);

impl Writer {
    async fn connect(cs: &str) -> Writer {
        let client = zkc::Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(cs)
            .await
            .expect("test client connects");
        let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
        client.mkdir(PATH, &opts).await.expect("mkdir");
        Writer(client)
    }

    async fn create(&self, path: &str, data: &[u8]) {
        let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
        self.0.create(path, data, &opts).await.expect("create");
    }

    async fn set(&self, path: &str, data: &[u8]) {
        self.0.set_data(path, data, None).await.expect("set");
    }

    async fn delete(&self, path: &str) {
        self.0.delete(path, None).await.expect("delete");
    }
}

/// A reconnection of the same session costs each watcher one listing when nothing changed
/// (it used to re-read every child); a new child costs a listing and a read, a deleted child
/// a listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_that_finds_nothing_changed_costs_one_request() {
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let w = Writer::connect(&cs).await;
    for i in 0..10 {
        w.create(&format!("{PATH}/n_{i:010}"), &payload(1000 + i)).await;
    }
    drop(w);
    let cancel = CancellationToken::new();
    let reg = registry(
        RegistryOptions {
            session_timeout: Duration::from_secs(20),
            ..Default::default()
        },
        &cancel,
    );
    let session = reg.session(&cs);
    let mut view = View::new(registry::watch(session.clone(), PATH.into(), cancel.clone()));
    let ten: Vec<String> = (0..10).map(|i| format!("n_{i:010}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    until("the first listing", WAIT, || view.has(&ten)).await;
    assert_eq!(session.requests(), 11, "first sync: one listing and ten reads");

    // Same session, new connection: the server restarts well within the session timeout.
    let before = session.requests();
    let epoch = session.status().connection_epoch;
    zk.kill(0);
    zk.restart(0);
    until("a reconnection and its re-list", WAIT, || {
        view.drain();
        session.status().connection_epoch > epoch && view.resets >= 2
    })
    .await;
    assert_eq!(
        session.requests() - before,
        1,
        "a reconnection that finds nothing changed costs one getChildren"
    );

    let w = Writer::connect(&cs).await;
    let before = session.requests();
    w.create(&format!("{PATH}/n_new"), &payload(2000)).await;
    let mut eleven = ten.clone();
    eleven.push("n_new");
    until("the new child", WAIT, || view.has(&eleven)).await;
    assert_eq!(
        session.requests() - before,
        2,
        "a new child: a listing and a read"
    );

    let before = session.requests();
    w.delete(&format!("{PATH}/n_new")).await;
    until("the deletion", WAIT, || view.has(&ten)).await;
    // No late extra request either.
    consistently_async(
        "a deleted child costs a listing",
        Duration::from_millis(300),
        || {
            let n = session.requests() - before;
            if n == 1 {
                Ok(())
            } else {
                Err(n)
            }
        },
    )
    .await;

    let before = session.requests();
    w.set(&format!("{PATH}/n_{:010}", 3), &payload(3000)).await;
    until("the data change is read", WAIT, || session.requests() > before).await;
    consistently_async(
        "a changed child costs one read",
        Duration::from_millis(300),
        || {
            let n = session.requests() - before;
            if n == 1 {
                Ok(())
            } else {
                Err(n)
            }
        },
    )
    .await;
    cancel.cancel();
}

/// Re-lists per 100 ms window of `sessions`, sampled from their request counters while `f`
/// runs until every session re-listed once more than `base`.
async fn relists_per_window(sessions: &[Arc<Session>], base: &[u64], timeout: Duration) -> Vec<u64> {
    let mut windows = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut last: u64 = base.iter().sum();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: u64 = sessions.iter().map(|s| s.requests()).sum();
        windows.push(now - last);
        last = now;
        let done = sessions.iter().zip(base).all(|(s, b)| s.requests() > *b);
        if done {
            return windows;
        }
        assert!(
            Instant::now() < deadline,
            "not every session re-listed within {timeout:?}: {windows:?}"
        );
    }
}

/// 40 watchers of one path; the server restarts (sessions survive): with a 3 s splay the
/// re-lists are spread over seconds, not taken in the same 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_splay_spreads_a_fleet_s_relists() {
    const N: usize = 40;
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let w = Writer::connect(&cs).await;
    w.create(&format!("{PATH}/n_1"), &payload(1)).await;
    drop(w);
    let cancel = CancellationToken::new();
    let mut sessions = Vec::new();
    let mut views = Vec::new();
    for _ in 0..N {
        // One registry each: N processes.
        let reg = registry(
            RegistryOptions {
                session_timeout: Duration::from_secs(20),
                splay: Duration::from_secs(3),
                ..Default::default()
            },
            &cancel,
        );
        let s = reg.session(&cs);
        views.push(View::new(registry::watch(s.clone(), PATH.into(), cancel.clone())));
        sessions.push(s);
    }
    for v in &mut views {
        until("every watcher's first listing", WAIT, || v.has(&["n_1"])).await;
    }
    let base: Vec<u64> = sessions.iter().map(|s| s.requests()).collect();
    zk.kill(0);
    zk.restart(0);
    let restarted = Instant::now();
    let windows = relists_per_window(&sessions, &base, WAIT).await;
    let took = restarted.elapsed();
    let peak = windows.iter().copied().max().unwrap_or(0);
    println!("re-lists per 100 ms after the restart: {windows:?} (peak {peak}, all within {took:?})");
    assert!(
        peak <= (N / 4) as u64,
        "the splay spreads the re-lists: at most a quarter of the fleet in one 100 ms window, saw {peak}: {windows:?}"
    );
    let busy = windows.iter().filter(|w| **w > 0).count();
    assert!(busy >= 8, "re-lists spread over at least 8 windows: {windows:?}");
    for v in &mut views {
        assert!(v.has(&["n_1"]));
    }
    cancel.cancel();
}

/// An ensemble with an observer, every server allowed to serve read-only: a session that
/// accepts read-only servers and knows only the observer keeps reading membership once the
/// observer is cut off from its quorum (two of three participants gone), and a new one can
/// still be established there; a read-write-only session cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_keeps_serving_membership_reads_in_a_minority_partition() {
    let mut zk = ZkCluster::start_with(
        3,
        ZkOptions {
            observers: 1,
            read_only: true,
            ..Default::default()
        },
    );
    assert_eq!(zk.mode(3).as_deref(), Some("observer"));
    let w = Writer::connect(&zk.connect_string()).await;
    w.create(&format!("{PATH}/n_1"), &payload(1)).await;
    drop(w);
    let observer = zk.server_address(3);
    let cancel = CancellationToken::new();
    let read_only = RegistryOptions {
        session_timeout: Duration::from_secs(6),
        read_only: true,
        replace_lagging_session: true,
        ..Default::default()
    };
    let reg = registry(read_only.clone(), &cancel);
    let session = reg.session(&observer);
    let mut view = View::new(registry::watch(session.clone(), PATH.into(), cancel.clone()));
    until("the observer serves the listing", WAIT, || view.has(&["n_1"])).await;

    // The minority partition: the observer and one participant, no quorum.
    let leader = zk.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    zk.kill(leader);
    zk.kill(others[0]);
    let mut modes = Vec::new();
    until("the observer serves read-only", Duration::from_secs(60), || {
        let mode = zk.mode(3);
        if modes.last() != Some(&mode) {
            modes.push(mode.clone());
        }
        mode.as_deref() == Some("read-only")
    })
    .await;
    println!("observer modes through the partition: {modes:?}");
    let resets = view.resets;
    // A fresh process in the partition: establishes a read-only session and reads.
    let reg2 = registry(read_only, &cancel);
    let fresh = reg2.session(&observer);
    let mut fresh_view = View::new(registry::watch(fresh.clone(), PATH.into(), cancel.clone()));
    until(
        "a new read-only session lists the members",
        Duration::from_secs(60),
        || fresh_view.has(&["n_1"]),
    )
    .await;
    // The first watcher re-synced over the read-only connection too.
    until(
        "the first watcher re-lists read-only",
        Duration::from_secs(60),
        || {
            view.drain();
            view.resets > resets && view.has(&["n_1"])
        },
    )
    .await;
    // Without read_only, no session is to be had in the partition.
    let reg3 = registry(
        RegistryOptions {
            session_timeout: Duration::from_secs(6),
            ..Default::default()
        },
        &cancel,
    );
    let rw = reg3.session(&observer);
    consistently_async(
        "a read-write session cannot be established in a minority partition",
        Duration::from_secs(3),
        || {
            if rw.status().connected {
                Err("connected")
            } else {
                Ok(())
            }
        },
    )
    .await;
    cancel.cancel();
}

fn tls_zookeeper_section(tls: &ZkTlsFiles) -> String {
    format!(
        "zookeeper: {{session_timeout: 6s, tls: {{ca_file: {}, cert_file: {}, key_file: {}}}}}\n",
        tls.ca().display(),
        tls.client_cert().display(),
        tls.client_key().display()
    )
}

/// Both agents over TLS only (the connect string names the servers' secureClientPorts):
/// nerve registers, synapse routes.
#[test]
fn agents_register_and_route_over_tls() {
    let tls = Arc::new(ZkTlsFiles::generate());
    let zk = ZkCluster::start_with(
        1,
        ZkOptions {
            tls: Some(tls.clone()),
            ..Default::default()
        },
    );
    let secure = zk.secure_connect_string();
    let b = Backend::start("a");
    let zk_section = tls_zookeeper_section(&tls);
    let nerve = Agent::start(
        "nerve",
        &format!(
            "instance_id: tls-host\nadmin: {{listen: \"127.0.0.1:{}\"}}\n{zk_section}services:\n  \
             - {{name: web, host: 127.0.0.1, port: {}, zk_hosts: \"{secure}\", zk_path: {PATH}, \
             check_interval: 100ms, rise: 1, checks: [{{type: tcp, timeout: 500ms}}]}}\n",
            free_port(),
            b.port
        ),
    );
    let (admin, listen) = (free_port(), free_port());
    let synapse = Agent::start(
        "synapse",
        &format!(
            "admin: {{listen: \"127.0.0.1:{admin}\"}}\n{zk_section}services:\n  \
             - {{name: web, zk_hosts: \"{secure}\", zk_path: {PATH}, listen: {listen}}}\n"
        ),
    );
    let want = vec![format!("127.0.0.1:{}", b.port)];
    eventually("synapse routes to nerve's backend, both over TLS", WAIT, || {
        (routed(admin, "web")? == want).then_some(())
    });
    assert_eq!(
        integration_tests::agents::who(listen).as_deref(),
        Some("a"),
        "a connection through synapse reaches the backend"
    );
    // Only the TLS port was given: the plaintext one saw no session of theirs.
    let plain_sessions = zk.sessions();
    assert!(
        plain_sessions.is_empty(),
        "no session over the plaintext port: {plain_sessions:?}"
    );
    drop((nerve, synapse));
}

/// A reconfigurable 3-server ensemble under load through synapse: a fourth server joins and
/// replaces the third (one reconfig request), the third is stopped, then the first one too.
/// synapse knew only the first server: it follows the new membership and still sees changes
/// after its server is gone. nerve (all three configured) keeps its node. No request fails.
#[test]
fn a_reconfig_replacing_servers_under_load_fails_nothing_and_keeps_nerve_s_node() {
    let mut zk = ZkCluster::start_with(
        3,
        ZkOptions {
            reconfig: true,
            ..Default::default()
        },
    );
    let cs = zk.connect_string();
    let zkc = writer(&cs);
    let a = LineBackend::start("a");
    let nerve = Agent::start(
        "nerve",
        &format!(
            "instance_id: a-host\nadmin: {{listen: \"127.0.0.1:{}\"}}\nzookeeper: {{session_timeout: 4s}}\n\
             services:\n  - {{name: web, host: 127.0.0.1, port: {}, zk_hosts: \"{cs}\", zk_path: {PATH}, \
             check_interval: 100ms, rise: 1, fall: 2, checks: [{{type: tcp, timeout: 500ms}}]}}\n",
            free_port(),
            a.port
        ),
    );
    let (admin, listen) = (free_port(), free_port());
    let first = zk.server_address(0);
    let synapse = Agent::start(
        "synapse",
        &format!(
            "admin: {{listen: \"127.0.0.1:{admin}\"}}\nzookeeper: {{session_timeout: 4s, splay: 500ms}}\n\
             services:\n  - {{name: web, zk_hosts: \"{first}\", zk_path: {PATH}, listen: {listen}, \
             connect_timeout: 500ms}}\n"
        ),
    );
    let owner = eventually("nerve registers", WAIT, || a_host_node_owner(&zkc));
    let want_a = vec![format!("127.0.0.1:{}", a.port)];
    eventually("synapse routes to a", WAIT, || {
        (routed(admin, "web")? == want_a).then_some(())
    });
    let load = Load::start(listen, 2, 2, Duration::from_millis(20));

    let joining = zk.add_server(false);
    let spec = zk.server_spec(joining);
    let leaving = zk.myid(2).to_string();
    zkc.reconfig(&[spec.as_str()], &[leaving.as_str()]);
    eventually("synapse follows the new membership", WAIT, || {
        synapse
            .log()
            .contains("ZooKeeper ensemble membership changed")
            .then_some(())
    });
    zk.kill(2);
    // synapse's only configured server goes too: it must find the others by itself.
    zk.kill(0);
    // Answers the load's lines as `a` does.
    let b = LineBackend::start("b");
    let zkc = Zk::connect(&format!(
        "{},{}",
        zk.server_address(1),
        zk.server_address(joining)
    ));
    came_through(&zkc, admin, [a.port, b.port], "its server left", load, owner);
    drop((nerve, synapse));
}

/// The most reconnections that fall in one 100 ms window (any window, not aligned).
fn busiest_100ms(times: &[Duration]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| **t < sorted[i] + Duration::from_millis(100))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The whole 3-server ensemble is killed and restarted (ZooKeeper restores the sessions, so
/// the client library reconnects them, not us). With a 3 s splay, a fleet of 40 sessions
/// comes back spread over seconds: at most a quarter of it in any 100 ms window, over at
/// least a second (unspread, the library's common retry schedule brings them back within a
/// few hundred ms). No session expires or is replaced for it; synapse (the same splay) routes
/// every request meanwhile and nerve (the same splay) keeps its node under the same session.
#[test]
fn a_full_restart_spreads_the_fleet_s_reconnections_and_loses_no_session() {
    const N: usize = 40;
    let mut zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let zkc = writer(&cs);
    let a = LineBackend::start("a");
    let zookeeper = "zookeeper: {session_timeout: 10s, splay: 3s}";
    let nerve = Agent::start(
        "nerve",
        &format!(
            "instance_id: a-host\nadmin: {{listen: \"127.0.0.1:{}\"}}\n{zookeeper}\n\
             services:\n  - {{name: web, host: 127.0.0.1, port: {}, zk_hosts: \"{cs}\", zk_path: {PATH}, \
             check_interval: 100ms, rise: 1, fall: 2, checks: [{{type: tcp, timeout: 500ms}}]}}\n",
            free_port(),
            a.port
        ),
    );
    let (admin, listen) = (free_port(), free_port());
    let synapse = Agent::start(
        "synapse",
        &format!(
            "admin: {{listen: \"127.0.0.1:{admin}\"}}\n{zookeeper}\n\
             services:\n  - {{name: web, zk_hosts: \"{cs}\", zk_path: {PATH}, listen: {listen}, \
             connect_timeout: 500ms}}\n"
        ),
    );
    let owner = eventually("nerve registers", WAIT, || a_host_node_owner(&zkc));
    let want_a = vec![format!("127.0.0.1:{}", a.port)];
    eventually("synapse routes to a", WAIT, || {
        (routed(admin, "web")? == want_a).then_some(())
    });

    // The fleet: N sessions as N agents would hold them (one registry each).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let sessions: Vec<Arc<Session>> = {
        let _guard = rt.enter();
        (0..N)
            .map(|_| {
                let reg = registry(
                    RegistryOptions {
                        session_timeout: Duration::from_secs(10),
                        splay: Duration::from_secs(3),
                        ..Default::default()
                    },
                    &cancel,
                );
                reg.session(&cs)
            })
            .collect()
    };
    eventually("every session of the fleet is connected", WAIT, || {
        sessions.iter().all(|s| s.status().connected).then_some(())
    });
    let before: Vec<_> = sessions.iter().map(|s| s.status()).collect();
    // Each session's next reconnection, timed as it is published.
    let reconnected: Vec<_> = sessions
        .iter()
        .zip(&before)
        .map(|(s, b)| {
            let mut rx = s.subscribe();
            let epoch = b.connection_epoch;
            rt.spawn(async move {
                let _ = rx
                    .wait_for(|st| st.connected && st.connection_epoch > epoch)
                    .await;
                Instant::now()
            })
        })
        .collect();
    let load = Load::start(listen, 2, 2, Duration::from_millis(20));

    zk.kill_all();
    zk.spawn_all();
    let times: Vec<Instant> = rt.block_on(async {
        tokio::time::timeout(WAIT, futures::future::join_all(reconnected))
            .await
            .expect("every session reconnects")
            .into_iter()
            .map(|t| t.unwrap())
            .collect()
    });
    let first = *times.iter().min().unwrap();
    let offsets: Vec<Duration> = times.iter().map(|t| *t - first).collect();
    let span = offsets.iter().copied().max().unwrap_or_default();
    let peak = busiest_100ms(&offsets);
    println!("reconnections after the restart: over {span:?}, at most {peak} in 100 ms: {offsets:?}");
    for (s, b) in sessions.iter().zip(&before) {
        let now = s.status();
        assert_eq!(
            (now.session_id, now.session_epoch),
            (b.session_id, b.session_epoch),
            "the same session, reconnected: {now:?}"
        );
    }
    assert!(
        peak <= N / 4,
        "the splay spreads the reconnections: at most {} of {N} in one 100 ms window, saw {peak}: {offsets:?}",
        N / 4
    );
    assert!(
        span >= Duration::from_secs(1),
        "the reconnections spread over at least a second, saw {span:?}: {offsets:?}"
    );

    // The agents came through it: a change made after the restart is routed, nothing failed,
    // nerve's node is the one of its session.
    let b = LineBackend::start("b");
    let zkc = Zk::connect(&cs);
    came_through(&zkc, admin, [a.port, b.port], "the restart", load, owner);
    cancel.cancel();
    drop((nerve, synapse));
}

/// The session owning nerve's single node for `a-host` under [`PATH`] (None while there is
/// not exactly one).
fn a_host_node_owner(zkc: &Zk) -> Option<i64> {
    let nodes: Vec<String> = zkc
        .children(PATH)
        .ok()?
        .into_iter()
        .filter(|c| c.starts_with("a-host_"))
        .collect();
    match nodes.as_slice() {
        [one] => zkc.get(&format!("{PATH}/{one}")).ok().map(|(_, owner)| owner),
        _ => None,
    }
}

/// The agents came through an ensemble event: a backend written now (`ports[1]`, beside
/// `ports[0]`) is routed, the load saw no failed request, and nerve's node is still
/// owned by the session that had it (`owner`).
fn came_through(zkc: &Zk, admin: u16, ports: [u16; 2], event: &str, mut load: Load, owner: i64) {
    zkc.put_backend("web", "b_0000000001", ports[1], "");
    let mut want: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    want.sort();
    eventually(&format!("synapse sees a change made after {event}"), WAIT, || {
        (routed(admin, "web")? == want).then_some(())
    });
    load.stop();
    let tally = load.take();
    assert!(tally.ok > 0, "the load ran: {tally:?}");
    assert_eq!(tally.failed, 0, "no request failed: {:?}", tally.failures);
    assert_eq!(
        a_host_node_owner(zkc),
        Some(owner),
        "nerve's node is the one it had (same session)"
    );
}
