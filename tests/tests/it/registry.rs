//! `common::registry` driven in process against a real ZooKeeper: the watch side under
//! reconnects, malformed data and same-name churn.
//!
//! The tests run on a multi-threaded runtime because the harness blocks (process management,
//! four-letter words): the ZooKeeper clients' background tasks keep running on another worker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::codec::{DecodeError, Node};
use common::registry::{self, Registry, RegistryOptions, Session, WatchUpdate};
use integration_tests::ZkCluster;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zkc;

const WAIT: Duration = Duration::from_secs(20);
const PATH: &str = "/services/web";

fn persistent() -> zkc::CreateOptions<'static> {
    zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all())
}

fn payload(port: u16) -> Vec<u8> {
    format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}").into_bytes()
}

/// A second, independent ZooKeeper client (the "other nerve" / the operator).
async fn writer(connect: &str) -> zkc::Client {
    let client = zkc::Client::connector()
        .with_session_timeout(Duration::from_secs(20))
        .connect(connect)
        .await
        .expect("test client connects");
    client.mkdir(PATH, &persistent()).await.expect("mkdir");
    client
}

/// A registry session of our own, as synapse has.
fn session(connect: &str, cancel: &CancellationToken) -> Arc<Session> {
    session_with_timeout(connect, Duration::from_secs(10), cancel)
}

fn session_with_timeout(connect: &str, timeout: Duration, cancel: &CancellationToken) -> Arc<Session> {
    let registry = Registry::new(
        RegistryOptions {
            session_timeout: timeout,
            ..Default::default()
        },
        cancel.clone(),
    );
    registry.session(connect)
}

/// What a consumer of `registry::watch` knows: the updates applied the way synapse applies them.
struct View {
    rx: mpsc::Receiver<WatchUpdate>,
    members: BTreeMap<String, Node>,
    resets: usize,
    invalid: Vec<(String, DecodeError)>,
}

impl View {
    fn new(rx: mpsc::Receiver<WatchUpdate>) -> View {
        View {
            rx,
            members: BTreeMap::new(),
            resets: 0,
            invalid: Vec::new(),
        }
    }

    fn apply(&mut self, update: WatchUpdate) {
        match update {
            WatchUpdate::Reset(list) => {
                self.members = list.into_iter().map(|m| (m.id, m.node)).collect();
                self.resets += 1;
            }
            WatchUpdate::Upsert(m) => {
                self.members.insert(m.id, m.node);
            }
            WatchUpdate::Remove(id) => {
                self.members.remove(&id);
            }
            WatchUpdate::Invalid { id, error } => self.invalid.push((id, error)),
        }
    }

    /// Applies updates until `done` holds, failing after `timeout` with `what` and the view.
    async fn until(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&View) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(update)) => self.apply(update),
                Ok(None) => panic!("the watch ended while waiting for {what}"),
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; members: {:?}, resets: {}, invalid: {:?}",
                    self.members.keys().collect::<Vec<_>>(),
                    self.resets,
                    self.invalid
                ),
            }
        }
    }

    /// Applies whatever is already queued.
    fn drain(&mut self) {
        while let Ok(update) = self.rx.try_recv() {
            self.apply(update);
        }
    }

    fn port(&self, id: &str) -> Option<u16> {
        self.members.get(id).map(|n| n.port)
    }
}

/// A child that was good and is then overwritten with garbage keeps its last good value through
/// reconnects (each of which re-lists and sends a `Reset`), and its bad version is reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_keeps_last_good_value_of_a_child_turned_malformed() {
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let client = writer(&cs).await;
    let good = format!("{PATH}/good_0000000001");
    client.create(&good, &payload(4001), &persistent()).await.unwrap();
    client
        .create(&format!("{PATH}/other_0000000002"), &payload(4002), &persistent())
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let session = session(&cs, &cancel);
    let mut view = View::new(registry::watch(session.clone(), PATH.to_string(), cancel.clone()));
    view.until("the first listing", WAIT, |v| {
        v.resets == 1 && v.members.len() == 2
    })
    .await;

    client.set_data(&good, b"{\"host\":", None).await.unwrap();
    view.until("the malformed version is reported", WAIT, |v| {
        v.invalid.len() == 1
    })
    .await;
    assert_eq!(view.port("good_0000000001"), Some(4001), "last good value kept");

    // Two reconnects: the server goes away and comes back (the session survives).
    for round in 1..=2 {
        let epoch = session.status().connection_epoch;
        zk.kill(0);
        zk.restart(0);
        integration_tests::eventually_async("our session reconnects", WAIT, || {
            let s = session.status();
            async move { (s.connected && s.connection_epoch > epoch).then_some(()) }
        })
        .await;
        view.until("the re-list after the reconnect", WAIT, |v| v.resets == 1 + round)
            .await;
        view.drain();
        assert_eq!(
            view.port("good_0000000001"),
            Some(4001),
            "round {round}: a child that was good keeps its last good value through a resync: {:?}",
            view.members.keys().collect::<Vec<_>>()
        );
        assert_eq!(view.port("other_0000000002"), Some(4002));
    }
    assert_eq!(
        view.invalid.len(),
        1,
        "one report per bad version: {:?}",
        view.invalid
    );

    // A new bad version is reported again; a good one replaces the value.
    client.set_data(&good, b"still not json", None).await.unwrap();
    view.until("the second bad version is reported", WAIT, |v| {
        v.invalid.len() == 2
    })
    .await;
    assert_eq!(view.port("good_0000000001"), Some(4001));
    client.set_data(&good, &payload(4003), None).await.unwrap();
    view.until("the good data arrives", WAIT, |v| {
        v.port("good_0000000001") == Some(4003)
    })
    .await;
    cancel.cancel();
}

/// A child deleted and re-created under the same name, again and again, always converges to the
/// latest data: the watcher never forgets a child on the word of a stale data event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_delete_and_recreate_always_converges() {
    const PAIRS: u16 = 400;
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let client = writer(&cs).await;
    let x = format!("{PATH}/x_0000000001");
    client.create(&x, &payload(5000), &persistent()).await.unwrap();
    client
        .create(&format!("{PATH}/y_0000000002"), &payload(4999), &persistent())
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let mut view = View::new(registry::watch(
        session(&cs, &cancel),
        PATH.to_string(),
        cancel.clone(),
    ));
    view.until("the first listing", WAIT, |v| {
        v.port("x_0000000001") == Some(5000)
    })
    .await;

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 1..=PAIRS {
        let port = 5000 + i;
        client.delete(&x, None).await.unwrap();
        // Vary the gap a little so both orders of the watcher's work and the re-create happen.
        if i % 4 != 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(i % 3))).await;
        }
        client.create(&x, &payload(port), &persistent()).await.unwrap();
        let pair = Instant::now();
        view.until(
            &format!("pair {i}: x with port {port}"),
            Duration::from_secs(5),
            |v| v.port("x_0000000001") == Some(port),
        )
        .await;
        slowest = slowest.max(pair.elapsed());
    }
    assert_eq!(
        view.port("y_0000000002"),
        Some(4999),
        "the bystander is untouched"
    );
    println!(
        "{PAIRS} same-name delete/create pairs converged in {:?} (slowest {slowest:?})",
        started.elapsed()
    );
    cancel.cancel();
}

/// The session timeout the server granted is known (and logged beside the requested one): the
/// harness's servers bound it to 0.4..30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_session_timeout_is_reported() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let cancel = CancellationToken::new();
    for (requested, granted) in [(5_000, 5_000), (45_000, 30_000), (100, 400)] {
        let session = session_with_timeout(&cs, Duration::from_millis(requested), &cancel);
        let status = integration_tests::eventually_async("a session", WAIT, || {
            let s = session.status();
            async move { s.connected.then_some(s) }
        })
        .await;
        assert_eq!(
            status.session_timeout,
            Some(Duration::from_millis(granted)),
            "requested {requested} ms"
        );
    }
    cancel.cancel();
}
