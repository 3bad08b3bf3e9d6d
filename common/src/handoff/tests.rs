use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

use super::*;

#[tokio::test]
async fn listeners_and_state_travel_to_the_successor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrade.sock");
    let socket = UpgradeSocket::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = vec![a.local_addr().unwrap(), b.local_addr().unwrap()];
    let p = path.clone();
    let successor = std::thread::spawn(move || {
        let (mut t, offer) = Takeover::connect(&p, "test").unwrap();
        let got: Vec<_> = offer
            .fds
            .into_iter()
            .map(|fd| TcpListener::from(fd).local_addr().unwrap())
            .collect();
        t.ready().unwrap();
        (got, offer.state, t.wait_gone(Duration::from_secs(5)))
    });
    let mut s = socket.accept().await;
    assert_eq!(s.agent, "test");
    let state = serde_json::json!({"members": {"web": [1, 2]}});
    let fds = vec![dup(a.as_fd()).unwrap(), dup(b.as_fd()).unwrap()];
    tokio::task::spawn_blocking(move || {
        s.offer(state, &borrow_all(&fds)).unwrap();
        s.wait_ready(Duration::from_secs(5)).unwrap();
        s.stopping().unwrap();
        drop(s);
    })
    .await
    .unwrap();
    let (got, state, gone) = successor.join().unwrap();
    assert_eq!(got, addrs);
    assert_eq!(state["members"]["web"][1], 2);
    assert!(gone);
}

#[tokio::test]
async fn many_descriptors_travel_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.sock");
    let socket = UpgradeSocket::bind(&path).unwrap();
    let listeners: Vec<TcpListener> = (0..150)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let p = path.clone();
    let successor = std::thread::spawn(move || {
        let (t, offer) = Takeover::connect(&p, "test").unwrap();
        t.abort("just looking");
        offer
            .fds
            .into_iter()
            .map(|fd| TcpListener::from(fd).local_addr().unwrap())
            .collect::<Vec<_>>()
    });
    let mut s = socket.accept().await;
    let fds: Vec<OwnedFd> = listeners.iter().map(|l| dup(l.as_fd()).unwrap()).collect();
    let ready = tokio::task::spawn_blocking(move || {
        s.offer(serde_json::Value::Null, &borrow_all(&fds)).unwrap();
        s.wait_ready(Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(matches!(ready, Err(HandoffError::Refused { reason }) if reason == "just looking"));
    assert_eq!(successor.join().unwrap(), addrs);
}

#[tokio::test]
async fn a_refused_successor_learns_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.sock");
    let socket = UpgradeSocket::bind(&path).unwrap();
    let p = path.clone();
    let successor = std::thread::spawn(move || Takeover::connect(&p, "test").map(|_| ()));
    let s = socket.accept().await;
    s.refuse("another takeover is in progress");
    let err = successor.join().unwrap().unwrap_err();
    assert!(
        err.to_string().contains("another takeover is in progress"),
        "{err}"
    );
}

#[tokio::test]
async fn a_served_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.sock");
    let first = UpgradeSocket::bind(&path).unwrap();
    assert!(matches!(
        UpgradeSocket::bind(&path),
        Err(HandoffError::InUse { .. })
    ));
    // A file left behind by a process that died: nobody listens on it.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap());
    let stale = dir.path().join("stale.sock");
    assert!(stale.exists());
    let _second = UpgradeSocket::bind(&stale).unwrap();
    drop(first);
    assert!(!path.exists(), "the socket file goes with its listener");
}

#[test]
fn no_peer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Takeover::connect(&dir.path().join("none.sock"), "test").unwrap_err();
    assert!(matches!(err, HandoffError::NoPeer { .. }), "{err}");
    assert!(err.to_string().contains("none.sock"), "{err}");
}

#[tokio::test]
async fn another_protocol_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.sock");
    let socket = UpgradeSocket::bind(&path).unwrap();
    let p = path.clone();
    let peer = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&p).unwrap();
        write_frame(
            &mut s,
            &Message::Hello {
                version: VERSION + 1,
                agent: "test".into(),
                pid: 1,
            },
        )
        .unwrap();
        match read_frame(&mut s).unwrap() {
            Some(Message::Refused { reason }) => reason,
            _ => String::new(),
        }
    });
    // The bad peer is refused inside accept, which then waits for the next one.
    let accepted = tokio::time::timeout(Duration::from_millis(500), socket.accept()).await;
    assert!(accepted.is_err());
    assert!(peer.join().unwrap().contains("protocol version"));
}
