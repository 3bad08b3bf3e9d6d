//! ZooKeeper faults against the real binaries: a full outage long enough for every session to
//! expire, and a frozen server (SIGSTOP) holding nerve's session. What is measured is how fast
//! the agents are back, and that an instance never has two nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::{Duration, Instant};

use integration_tests::agents::routed;
use integration_tests::{
    eventually, Backend, Nerve, NerveBuilder, NerveService, NodeCounter, Synapse, SynapseBuilder,
    SynapseService, Zk, ZkCluster,
};

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";
/// nerve registers backend `a` as service `a` of instance `test-host`.
const OUR_PREFIX: &str = "test-host_a_";
/// How long recovery may take once the ensemble serves again (the target is 1 s; generous).
const RECOVERY_LIMIT: Duration = Duration::from_secs(3);

/// nerve of instance `test-host` registering `b` under [`PATH`] (tcp checks every 100 ms).
fn start_nerve(zk: &str, b: &Backend, session_timeout: Duration) -> Nerve {
    NerveBuilder::new(zk)
        .instance_id("test-host")
        .session_timeout(session_timeout)
        .service(NerveService::tcp(&b.name, b.port).zk_path(PATH))
        .start()
}

/// synapse routing service `web` without previous backends; returns it and its admin port.
fn start_synapse(zk: &str, session_timeout: Duration) -> (Synapse, u16) {
    let synapse = SynapseBuilder::new(zk)
        .session_timeout(session_timeout)
        .service(
            SynapseService::tcp("web")
                .zk_path(PATH)
                .connect_timeout(None)
                .with("use_previous_backends", false),
        )
        .start();
    let admin = synapse.admin();
    (synapse, admin)
}

fn addr(b: &Backend) -> String {
    format!("127.0.0.1:{}", b.port)
}

/// nerve's nodes for the instance: (name, ephemeral owner).
fn ours(zkc: &Zk) -> Option<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for child in zkc.children(PATH).ok()? {
        if child.starts_with(OUR_PREFIX) {
            if let Ok((_, owner)) = zkc.get(&format!("{PATH}/{child}")) {
                out.push((child, owner));
            }
        }
    }
    Some(out)
}

/// Polls `f` every 5 ms until it returns `Some`, up to `timeout`; fast enough to time recovery.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every server goes down until both agents have given their sessions up, and `longer` after
/// that (a long outage, during which the agents keep retrying), then comes back. Measured from "the ensemble serves again": nerve's node is back (exactly one, under a new
/// session), and synapse sees a change made after the restart. Returns (nerve, synapse).
fn full_outage(zk: &mut ZkCluster, round: usize, longer: Duration) -> (Duration, Duration) {
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let nerve = start_nerve(&cs, &a, Duration::from_secs(2));
    let (synapse, admin) = start_synapse(&cs, Duration::from_secs(2));
    let zkc = Zk::connect(&cs);
    let old_owner = eventually("nerve registers", WAIT, || match ours(&zkc)?.as_slice() {
        [(_, owner)] => Some(*owner),
        _ => None,
    });
    eventually("synapse routes to nerve's backend", WAIT, || {
        (routed(admin, "web")? == vec![addr(&a)]).then_some(())
    });
    drop(zkc);

    zk.kill_all();
    eventually("both agents give their sessions up", WAIT, || {
        (nerve.log().contains("ZooKeeper session ended") && synapse.log().contains("ZooKeeper session ended"))
            .then_some(())
    });
    // The outage itself lasts: not a synchronisation, the length of the fault under test.
    std::thread::sleep(longer);
    zk.spawn_all();
    poll("the ensemble serves again", Duration::from_secs(60), || {
        zk.serving().then_some(())
    });
    let serving = Instant::now();

    let observer = NodeCounter::start(&cs, PATH, OUR_PREFIX);
    let zkc = Zk::connect(&cs);
    let b = Backend::start("b");
    zkc.create(
        &format!("{PATH}/other_0000000001"),
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
    let mut want = vec![addr(&a), addr(&b)];
    want.sort();
    let (mut nerve_back, mut synapse_back) = (None, None);
    poll("nerve's node and synapse's view are back", WAIT, || {
        if nerve_back.is_none() {
            if let Some([(_, owner)]) = ours(&zkc).as_deref() {
                if *owner != old_owner {
                    nerve_back = Some(serving.elapsed());
                }
            }
        }
        if synapse_back.is_none() && routed(admin, "web").as_ref() == Some(&want) {
            synapse_back = Some(serving.elapsed());
        }
        nerve_back.zip(synapse_back)
    });
    let (nerve_back, synapse_back) = (nerve_back.unwrap(), synapse_back.unwrap());
    // The servers restored the old session from their data: it lives one more session timeout
    // after the restart, and its node with it unless nerve deletes it. The observer has been
    // counting all along.
    let remaining = ours(&zkc).unwrap();
    println!(
        "full outage round {round} ({} server(s), {longer:?} past expiry): serving -> nerve's node back in {nerve_back:?}, \
         -> synapse sees a new node in {synapse_back:?}; most nodes of the instance seen at once: {} \
         ({} polls)",
        zk.server_count(),
        observer.max(),
        observer.polls()
    );
    assert_eq!(
        remaining.len(),
        1,
        "exactly one node of the instance: {remaining:?}"
    );
    assert_ne!(remaining[0].1, old_owner, "owned by the new session");
    assert!(
        observer.max() <= 1,
        "never two nodes for one instance (saw {})",
        observer.max()
    );
    assert!(
        nerve_back <= RECOVERY_LIMIT,
        "nerve re-registered {nerve_back:?} after the ensemble served again"
    );
    assert!(
        synapse_back <= RECOVERY_LIMIT,
        "synapse saw a new node {synapse_back:?} after the ensemble served again"
    );
    zkc.delete(&format!("{PATH}/other_0000000001"));
    (nerve_back, synapse_back)
}

#[test]
fn full_outage_of_a_standalone_server_recovers_within_a_second_or_so() {
    let mut zk = ZkCluster::standalone();
    full_outage(&mut zk, 1, Duration::ZERO);
    full_outage(&mut zk, 2, Duration::from_secs(6));
}

#[test]
fn full_outage_of_an_ensemble_recovers_within_a_second_or_so() {
    let mut zk = ZkCluster::ensemble(3);
    full_outage(&mut zk, 1, Duration::from_secs(3));
}

/// nerve's server freezes (SIGSTOP) while it is the leader: the client gives the session up
/// before the other two elect a new leader, which restores the session for one more timeout.
/// nerve registers under a new session and deletes the node of its earlier one: never two
/// nodes for the instance.
#[test]
fn frozen_server_holding_the_session_never_leaves_two_nodes() {
    let mut zk = ZkCluster::ensemble(3);
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let nerve = start_nerve(&cs, &a, Duration::from_secs(1));
    let zkc = Zk::connect(&cs);
    let owner = eventually("nerve registers", WAIT, || match ours(&zkc)?.as_slice() {
        [(_, owner)] => Some(*owner),
        _ => None,
    });
    drop(zkc);

    // Move nerve's connection to the leader: kill the follower it is on until it lands there.
    let mut server = eventually("nerve's connection shows in cons", WAIT, || {
        zk.server_with_session(owner)
    });
    for _ in 0..20 {
        if zk.leader() == Some(server) {
            break;
        }
        zk.kill(server);
        let left = server;
        server = eventually("nerve moves to another server", WAIT, || {
            zk.server_with_session(owner).filter(|s| *s != left)
        });
        zk.restart(left);
    }
    assert_eq!(zk.leader(), Some(server), "nerve's session is on the leader");
    let others: Vec<String> = zk
        .indices()
        .filter(|i| *i != server)
        .map(|i| format!("127.0.0.1:{}", zk.client_port(i)))
        .collect();
    let others = others.join(",");

    let observer = NodeCounter::start(&others, PATH, OUR_PREFIX);
    poll("the observer sees nerve's node", WAIT, || {
        (observer.max() == 1).then_some(())
    });
    zk.freeze(server);
    let frozen = Instant::now();
    let zkc = Zk::connect(&others);
    let new_owner = eventually(
        "nerve registers under a new session, its old node gone",
        WAIT,
        || match ours(&zkc)?.as_slice() {
            [(_, o)] if *o != owner => Some(*o),
            _ => None,
        },
    );
    let registered = frozen.elapsed();
    zk.thaw(server);
    eventually("the thawed server rejoins", WAIT, || {
        zk.mode(server).filter(|m| m == "follower" || m == "leader")
    });
    let remaining = ours(&zkc).unwrap();
    println!(
        "frozen leader: nerve registered again {registered:?} after the freeze; most nodes of the \
         instance seen at once: {} ({} polls)",
        observer.max(),
        observer.polls()
    );
    assert_eq!(remaining.len(), 1, "exactly one node is back: {remaining:?}");
    assert_eq!(remaining[0].1, new_owner);
    assert!(
        observer.max() <= 1,
        "never two nodes for one instance (saw {})",
        observer.max()
    );
    assert!(
        nerve.log().contains("session ended"),
        "the client gave its session up"
    );
}

/// Every server goes down for less than the session timeout: the sessions survive (the servers
/// restore them from their data). nerve keeps its session, so its node is never gone nor
/// doubled, and reconnects on the client library's schedule; synapse, which holds no node,
/// replaces a session the library is slow to reconnect and sees changes within about a second
/// of the servers answering.
#[test]
fn short_outage_within_the_session_timeout_keeps_nerve_s_node_and_synapse_recovers_fast() {
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let _nerve = start_nerve(&cs, &a, Duration::from_secs(10));
    let (_synapse, admin) = start_synapse(&cs, Duration::from_secs(10));
    let zkc = Zk::connect(&cs);
    eventually("nerve registers", WAIT, || (ours(&zkc)?.len() == 1).then_some(()));
    eventually("synapse routes to nerve's backend", WAIT, || {
        (routed(admin, "web")? == vec![addr(&a)]).then_some(())
    });
    drop(zkc);

    zk.kill_all();
    // The length of the fault under test, within the session timeout. The client library
    // retries a lost session after delays doubling from 100 ms (cumulated: 3.1 s, 6.3 s,
    // 12.7 s): with the server back at about 7 s, it alone would wait until 12.7 s.
    std::thread::sleep(Duration::from_secs(6));
    zk.spawn_all();
    poll("the server serves again", Duration::from_secs(60), || {
        zk.serving().then_some(())
    });
    let serving = Instant::now();
    let observer = NodeCounter::start(&cs, PATH, OUR_PREFIX);
    let zkc = Zk::connect(&cs);
    let b = Backend::start("b");
    zkc.create(
        &format!("{PATH}/other_0000000001"),
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
    let mut want = vec![addr(&a), addr(&b)];
    want.sort();
    let (mut nerve_back, mut synapse_back) = (None, None);
    poll("nerve's session and synapse's view are back", WAIT, || {
        if nerve_back.is_none() {
            if let Some([(_, owner)]) = ours(&zkc).as_deref() {
                // Back: its one node belongs to a session that is connected again.
                if zk.server_with_session(*owner).is_some() {
                    nerve_back = Some(serving.elapsed());
                }
            }
        }
        if synapse_back.is_none() && routed(admin, "web").as_ref() == Some(&want) {
            synapse_back = Some(serving.elapsed());
        }
        nerve_back.zip(synapse_back)
    });
    let (nerve_back, synapse_back) = (nerve_back.unwrap(), synapse_back.unwrap());
    println!(
        "short outage (6 s, session timeout 10 s): serving -> nerve's session back in {nerve_back:?}, \
         -> synapse sees a new node in {synapse_back:?}; most nodes of the instance seen at once: {} \
         ({} polls)",
        observer.max(),
        observer.polls()
    );
    assert!(
        observer.max() <= 1,
        "never two nodes for one instance (saw {})",
        observer.max()
    );
    // nerve's reconnection follows the client library's delays (the session and its node are
    // kept all along); it must still happen well within the session timeout.
    assert!(
        nerve_back <= Duration::from_secs(10),
        "nerve's session reconnected {nerve_back:?} after the server served again"
    );
    assert!(
        synapse_back <= RECOVERY_LIMIT,
        "synapse saw a new node {synapse_back:?} after the server served again"
    );
}
