#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::os::unix::net::UnixDatagram;

use super::*;

fn recv(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sends_to_a_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let server = UnixDatagram::bind(&path).unwrap();
    let n = Notifier::new(path.to_str().unwrap()).unwrap();
    n.send("READY=1\nSTATUS=ok").unwrap();
    assert_eq!(recv(&server), "READY=1\nSTATUS=ok");
}

#[test]
fn sends_to_an_abstract_name() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("nerve-synapse-notify-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let server = UnixDatagram::bind_addr(&addr).unwrap();
    // `@` stands for the leading NUL byte, as in systemd's NOTIFY_SOCKET.
    let n = Notifier::new(&format!("@{name}")).unwrap();
    n.send("WATCHDOG=1").unwrap();
    assert_eq!(recv(&server), "WATCHDOG=1");
}

#[test]
fn refuses_what_is_not_a_unix_socket_address() {
    for bad in ["relative/path", "vsock:2:1234", "@"] {
        match Notifier::new(bad) {
            Err(NotifyError::BadAddress { value, .. }) if bad != "@" => assert_eq!(value, bad),
            // An empty abstract name is a valid (if odd) address.
            Ok(_) if bad == "@" => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_socket_is_a_send_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::new(dir.path().join("gone").to_str().unwrap()).unwrap();
    let err = n.send("READY=1\nSTATUS=x").unwrap_err();
    assert!(
        matches!(err, NotifyError::Send { ref message, .. } if message == "READY=1"),
        "{err}"
    );
    // Logged, never propagated.
    n.send_logged("READY=1");
}

#[test]
fn watchdog_period_follows_systemd_rules() {
    assert_eq!(
        parse_watchdog(Some("2000000"), None, 7),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        parse_watchdog(Some("2000000"), Some("7"), 7),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        parse_watchdog(Some("2000000"), Some(""), 7),
        Some(Duration::from_secs(2))
    );
    // Meant for another process (e.g. inherited from a parent).
    assert_eq!(parse_watchdog(Some("2000000"), Some("8"), 7), None);
    assert_eq!(parse_watchdog(Some("2000000"), Some("x"), 7), None);
    assert_eq!(parse_watchdog(Some("0"), None, 7), None);
    assert_eq!(parse_watchdog(Some("-5"), None, 7), None);
    assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
    assert_eq!(parse_watchdog(None, Some("7"), 7), None);
}

#[test]
fn status_is_one_line() {
    assert_eq!(one_line("a\nb\r\nc"), "a b  c");
}

#[test]
fn a_full_queue_drops_pings_but_waits_for_room_for_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let server = UnixDatagram::bind(&path).unwrap();
    let n = Notifier::new(path.to_str().unwrap()).unwrap();
    // Nobody reads: pings fill the queue, then fail at once.
    let mut queued = 0;
    while n.send("WATCHDOG=1").is_ok() {
        queued += 1;
        assert!(queued < 100_000, "the queue never filled");
    }
    // A slow reader makes room a little later; READY=1 waits for it instead of being lost.
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        loop {
            let msg = recv(&server);
            let done = msg.starts_with("READY=1");
            got.push(msg);
            if done {
                return got;
            }
        }
    });
    n.send("READY=1\nSTATUS=ready").unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), queued + 1);
    assert_eq!(got.last().unwrap(), "READY=1\nSTATUS=ready");
}
