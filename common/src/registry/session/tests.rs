use super::*;

#[test]
fn connection_timeout_is_short_and_bounded() {
    let ms = Duration::from_millis;
    assert_eq!(
        connection_timeout(Duration::from_secs(10)),
        Duration::from_secs(2)
    );
    assert_eq!(
        connection_timeout(Duration::from_secs(60)),
        Duration::from_secs(2)
    );
    assert_eq!(connection_timeout(Duration::from_secs(4)), Duration::from_secs(1));
    assert_eq!(connection_timeout(Duration::from_secs(2)), ms(500));
    // Never above the library's default share of the session timeout (2/5).
    assert_eq!(connection_timeout(Duration::from_secs(1)), ms(400));
}

#[test]
fn backoff_doubles_with_jitter_up_to_its_cap() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let pauses: Vec<Duration> = (0..8).map(|_| b.pause()).collect();
    let caps = [100, 200, 400, 800, 1000, 1000, 1000, 1000].map(Duration::from_millis);
    for (pause, cap) in pauses.iter().zip(caps) {
        assert!(
            *pause >= cap / 2 && *pause <= cap,
            "{pause:?} not in [{:?}, {cap:?}]",
            cap / 2
        );
    }
    b.reset();
    assert!(b.pause() <= Duration::from_millis(100));
}

#[test]
fn backoff_jitter_spreads() {
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
    let pauses: std::collections::HashSet<Duration> = (0..20).map(|_| b.pause()).collect();
    assert!(pauses.len() > 10, "pauses are spread, not fixed: {pauses:?}");
}

#[test]
fn a_session_secret_shows_its_id_but_never_its_password() {
    let secret = SessionSecret {
        connect: "zk:2181".to_string(),
        auth: Some("digest:nerve".to_string()),
        id: 0x1234,
        password: b"hunter2-secret".to_vec(),
    };
    let shown = format!("{secret:?}");
    assert!(shown.contains("0x1234"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("104, 117"),
        "{shown}"
    );
    // It travels as JSON (over the owner-only upgrade socket) and comes back whole.
    let back: SessionSecret = serde_json::from_value(serde_json::to_value(&secret).unwrap()).unwrap();
    assert_eq!(back, secret);
}

#[test]
fn auth_names_carry_no_credentials() {
    let auth = ZkAuth {
        scheme: "digest".to_string(),
        credentials: "nerve:s3cret".to_string(),
    };
    assert_eq!(auth_name(Some(&auth)).as_deref(), Some("digest:nerve"));
    assert_eq!(auth_name(None), None);
}

/// A fake ZooKeeper server for one session: accepts one connection, answers its handshake
/// (a session with id `0x5eed`) and first ping, and hands back the connection and the listener, so the test
/// can drop both (the connection is lost, every reconnection attempt is refused).
async fn handshake_once() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<(tokio::net::TcpStream, tokio::net::TcpListener)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        // The connect request: a length-prefixed record.
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).await.unwrap();
        let mut request = vec![0u8; u32::from_be_bytes(len) as usize];
        sock.read_exact(&mut request).await.unwrap();
        // The connect response: protocol version, timeout (ms), session id, password, read-only.
        let mut response = Vec::new();
        response.extend(0i32.to_be_bytes());
        response.extend(10_000i32.to_be_bytes());
        response.extend(0x5eed_i64.to_be_bytes());
        response.extend(16i32.to_be_bytes());
        response.extend([7u8; 16]);
        response.push(0);
        sock.write_all(&(response.len() as u32).to_be_bytes())
            .await
            .unwrap();
        sock.write_all(&response).await.unwrap();
        // The client's first ping (it waits for the answer before it reports the session):
        // a reply header with the ping's xid (-2), zxid 0, no error.
        sock.read_exact(&mut len).await.unwrap();
        let mut ping = vec![0u8; u32::from_be_bytes(len) as usize];
        sock.read_exact(&mut ping).await.unwrap();
        let mut reply = Vec::new();
        reply.extend(16u32.to_be_bytes());
        reply.extend((-2i32).to_be_bytes());
        reply.extend(0i64.to_be_bytes());
        reply.extend(0i32.to_be_bytes());
        sock.write_all(&reply).await.unwrap();
        (sock, listener)
    });
    (addr, server)
}

/// A session whose connection is lost after it was established (and published as connected)
/// but before `Link::serve` subscribed to its states: serve must still see it. The client
/// library's state watcher marks the state current at subscription as seen, so without
/// handling it first, the session would be shown connected until the next change (and after
/// an expiry in that window, never served again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_before_serving_is_not_missed() {
    let (addr, server) = handshake_once().await;
    let options = RegistryOptions::default();
    let link = Link::new(addr.to_string(), &options);
    let client = link.attempt().await.unwrap();
    let (tx, mut rx) = tokio_watch::channel(SessionStatus::default());
    install(&tx, &client, &options, None);
    assert!(rx.borrow_and_update().connected);
    // The connection goes, and nothing answers any more.
    drop(server.await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.state() != zk::SessionState::Disconnected {
        assert!(Instant::now() < deadline, "the client sees its connection lost");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Only now is the session served.
    let cancel = CancellationToken::new();
    tokio::select! {
        _ = link.serve(client, &tx, &cancel) => panic!("serve ended while the session lives"),
        seen = rx.wait_for(|s| !s.connected) => {
            seen.unwrap();
        }
        // Well before the library would declare the session expired (7/5 of 10 s).
        _ = tokio::time::sleep(Duration::from_secs(3)) => {
            panic!("serve still shows the session connected 3 s after its connection was lost")
        }
    }
    cancel.cancel();
}
