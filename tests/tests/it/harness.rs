//! The harness itself, against a real ZooKeeper.
//!
//! The tests run on a multi-threaded runtime because the harness blocks (process management,
//! four-letter words, sync `eventually`): the ZooKeeper client's background task must keep running
//! on another worker meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::{eventually, eventually_ok_async, ZkCluster};
use zookeeper_client::{Acls, Client, CreateMode, SessionState};

fn persistent() -> zookeeper_client::CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_a_client() -> anyhow::Result<()> {
    let mut zk = ZkCluster::standalone();
    assert_eq!(zk.server_count(), 1);
    assert_eq!(zk.connect_string(), format!("127.0.0.1:{}", zk.client_port(0)));
    assert_eq!(zk.mode(0).as_deref(), Some("standalone"));
    assert!(zk.four_letter(0, "mntr")?.contains("zk_server_state\tstandalone"));

    let client = Client::connect(&zk.connect_string()).await?;
    client.create("/harness", b"hello", &persistent()).await?;
    let (data, stat) = client.get_data("/harness").await?;
    assert_eq!(data, b"hello");
    assert_eq!(stat.version, 0);

    let sid = client.session_id().0;
    let found = eventually("the session to show up in `cons`", Duration::from_secs(5), || {
        zk.server_with_session(sid)
    });
    assert_eq!(found, 0);
    assert!(zk.sessions().contains(&(0, sid)), "{:?}", zk.sessions());
    drop(client);

    // A restart keeps the data directory.
    zk.kill(0);
    assert!(!zk.is_running(0));
    assert!(zk.four_letter(0, "srvr").is_err());
    zk.restart(0);
    assert!(zk.is_running(0));
    let client = Client::connect(&zk.connect_string()).await?;
    assert_eq!(client.get_data("/harness").await?.0, b"hello");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensemble_survives_losing_the_server_holding_the_session() -> anyhow::Result<()> {
    let mut zk = ZkCluster::ensemble(3);
    assert_eq!(zk.server_count(), 3);
    assert_eq!(zk.connect_string().split(',').count(), 3);
    let modes: Vec<String> = zk.indices().map(|i| zk.mode(i).unwrap()).collect();
    assert_eq!(modes.iter().filter(|m| *m == "leader").count(), 1, "{modes:?}");
    assert_eq!(modes.iter().filter(|m| *m == "follower").count(), 2, "{modes:?}");
    assert!(zk.leader().is_some());

    let client = Client::connect(&zk.connect_string()).await?;
    client.create("/failover", b"before", &persistent()).await?;
    let sid = client.session_id().0;
    let holder = eventually("the session to show up in `cons`", Duration::from_secs(5), || {
        zk.server_with_session(sid)
    });

    zk.kill(holder);
    assert!(!zk.is_running(holder));

    // Writes need a quorum (2 of 3 remain) and possibly a new leader; the client reconnects to a
    // surviving server and keeps its session.
    let c = &client;
    eventually_ok_async("a write after the kill", Duration::from_secs(20), || async move {
        c.set_data("/failover", b"after", None).await
    })
    .await;
    let (data, _) = eventually_ok_async("a read after the kill", Duration::from_secs(10), || async move {
        c.get_data("/failover").await
    })
    .await;
    assert_eq!(data, b"after");
    assert_eq!(client.state(), SessionState::SyncConnected);

    let moved_to = eventually(
        "the session to move to a surviving server",
        Duration::from_secs(10),
        || zk.server_with_session(sid).filter(|&i| i != holder),
    );
    assert_ne!(moved_to, holder);
    assert!(zk.is_running(moved_to));

    zk.restart(holder);
    assert!(zk.is_running(holder));
    let mode = zk.mode(holder);
    assert!(matches!(mode.as_deref(), Some("leader" | "follower")), "{mode:?}");

    // The restarted server caught up: a client pinned to it sees the write made while it was down.
    let pinned = Client::connect(&format!("127.0.0.1:{}", zk.client_port(holder))).await?;
    let p = &pinned;
    let (data, _) = eventually_ok_async(
        "a read from the restarted server",
        Duration::from_secs(10),
        || async move { p.get_data("/failover").await },
    )
    .await;
    assert_eq!(data, b"after");
    assert_eq!(zk.server_with_session(pinned.session_id().0), Some(holder));
    Ok(())
}
