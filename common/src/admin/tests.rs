#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Generous bound for "the server closed it by now".
const WITHIN: Duration = Duration::from_secs(10);

async fn start(limits: AdminLimits) -> (SocketAddr, CancellationToken) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let handler: Handler = Arc::new(|req: AdminRequest| {
        let (method, path, body) = (req.method, req.path, req.body);
        let reply = match path.as_str() {
            // Larger than the socket buffers: a client that does not read stalls the write.
            "/big" => Reply::text(StatusCode::OK, "x".repeat(64 << 20)),
            "/echo" => Reply::text(
                StatusCode::OK,
                format!(
                    "{method} {} bytes: {}",
                    body.len(),
                    String::from_utf8_lossy(&body[..body.len().min(16)])
                ),
            ),
            "/query" => Reply::text(StatusCode::OK, format!("{:?}\n", req.query)),
            _ => Reply::text(StatusCode::OK, format!("at {path}\n")),
        };
        Box::pin(async move {
            // A route may wait (nerve's `disable?wait=`) before it answers.
            tokio::task::yield_now().await;
            reply
        })
    });
    tokio::spawn(serve_with(listener, handler, limits, cancel.clone()));
    (addr, cancel)
}

/// Reads until the server closes the connection; returns what was read, or panics if it
/// is still open after `within`.
async fn read_until_closed(s: &mut (impl AsyncReadExt + Unpin), within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {within:?}; read so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response with a `content-length` body, leaving the connection open.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WITHIN, s.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before a full response: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
    }
}

fn limits(header: u64, idle: u64, max: usize) -> AdminLimits {
    AdminLimits {
        first_byte_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_millis(header),
        body_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_millis(idle),
        max_connections: max,
    }
}

#[tokio::test]
async fn half_a_request_header_is_disconnected_after_the_header_timeout() {
    let (addr, _cancel) = start(limits(300, 60_000, 32)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc").await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut s, WITHIN).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, _cancel) = start(limits(300, 60_000, 32)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for path in ["/a", "/b"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = read_response(&mut s).await;
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.ends_with(&format!("at {path}\n")),
            "{resp}"
        );
    }
    // Kept alive between requests, closed once idle past the header timeout.
    assert_eq!(read_until_closed(&mut s, WITHIN).await, "");
}

#[tokio::test]
async fn a_connection_with_no_progress_is_closed_after_the_idle_timeout() {
    // One slot: the second client is served only once the first connection is gone.
    let (addr, _cancel) = start(limits(60_000, 300, 1)).await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    // Asks for a large answer and does not read it: the server's write stalls.
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 15];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");

    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /small HTTP/1.0\r\n\r\n").await.unwrap();
    let resp = read_until_closed(&mut next, WITHIN).await;
    assert!(resp.ends_with("at /small\n"), "{resp:?}");
    // The stalled answer was cut short: what was already in the socket buffers, then EOF.
    let rest = read_until_closed(&mut stalled, WITHIN).await;
    assert!(
        rest.len() < 64 << 20,
        "the whole answer was kept for the stalled client"
    );
}

#[tokio::test]
async fn past_the_cap_the_oldest_unfinished_connection_makes_room() {
    let (addr, _cancel) = start(limits(60_000, 60_000, 2)).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        slow.push(s);
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let resp = read_until_closed(&mut s, WITHIN).await;
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp:?}");
    // It took the place of the oldest slow client (the headers timeout is a minute away);
    // the younger one is still open.
    let mut oldest = slow.remove(0);
    assert_eq!(read_until_closed(&mut oldest, WITHIN).await, "");
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow[0].read(&mut buf))
            .await
            .is_err(),
        "the younger slow client was closed too"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let mut l = limits(60_000, 60_000, 32);
    l.first_byte_timeout = Duration::from_millis(300);
    let (addr, _cancel) = start(l).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    assert_eq!(read_until_closed(&mut silent, WITHIN).await, "");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // One that speaks in time is served.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.0\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut s, WITHIN).await.ends_with("at /x\n"));
}

#[tokio::test]
async fn when_every_connection_is_inside_a_request_a_new_client_waits_for_one() {
    // One place, taken by a request whose reply is stalled inside the handler's write:
    // `/wait` answers only once released.
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (e, r) = (entered.clone(), release.clone());
    let handler: Handler = Arc::new(move |req: AdminRequest| {
        let (e, r) = (e.clone(), r.clone());
        Box::pin(async move {
            if req.path == "/wait" {
                e.notify_one();
                r.notified().await;
            }
            Reply::text(StatusCode::OK, format!("at {}\n", req.path))
        })
    });
    let cancel = CancellationToken::new();
    tokio::spawn(serve_with(
        listener,
        handler,
        limits(60_000, 60_000, 1),
        cancel.clone(),
    ));
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"GET /wait HTTP/1.0\r\n\r\n").await.unwrap();
    tokio::time::timeout(WITHIN, entered.notified()).await.unwrap();
    // Connected (in the backlog), not served while /wait is inside its request.
    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /next HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next.read(&mut buf))
            .await
            .is_err(),
        "a request inside the handler was closed to make room"
    );
    release.notify_one();
    assert!(read_until_closed(&mut waiting, WITHIN)
        .await
        .ends_with("at /wait\n"));
    assert!(read_until_closed(&mut next, WITHIN).await.ends_with("at /next\n"));
    cancel.cancel();
}

#[tokio::test]
async fn a_put_body_reaches_the_handler() {
    let (addr, _cancel) = start(AdminLimits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("PUT 5 bytes: hello"),
        "{resp}"
    );
    // Chunked bodies too; GET bodies are not read.
    s.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.ends_with("PUT 5 bytes: abcde"), "{resp}");
}

#[tokio::test]
async fn the_query_string_reaches_the_handler_apart_from_the_path() {
    let (addr, _cancel) = start(AdminLimits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PUT /query?wait=10s&force=true HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.ends_with("Some(\"wait=10s&force=true\")\n"), "{resp}");
    s.write_all(b"GET /query HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.ends_with("None\n"), "{resp}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_unread() {
    let (addr, _cancel) = start(AdminLimits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let len = MAX_BODY + 1;
    s.write_all(format!("PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Refused once the limit is passed: never buffered whole, never given to the handler.
    let _ = s.write_all(&vec![b'x'; len]).await;
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp:?}");
}

#[tokio::test]
async fn a_stalled_body_is_cut_by_the_idle_timeout() {
    let (addr, _cancel) = start(limits(60_000, 300, 32)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this")
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut s, WITHIN).await, "");
}

#[tokio::test]
async fn log_level_is_served_for_every_agent() {
    let (addr, _cancel) = start(AdminLimits::default()).await;
    // This test process did not install the agents' subscriber: the route says so, instead of
    // falling through to the agent's handler (which would answer 200 "at /log-level").
    for req in [
        "GET /log-level HTTP/1.0\r\n\r\n",
        "PUT /log-level HTTP/1.0\r\nContent-Length: 5\r\n\r\ndebug",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let resp = read_until_closed(&mut s, WITHIN).await;
        assert!(
            resp.starts_with("HTTP/1.0 503") && resp.contains("cannot be changed"),
            "{resp:?}"
        );
    }
}

#[test]
fn loopback_peers() {
    for ip in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
        assert!(is_loopback(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["10.88.0.1", "::ffff:10.0.0.1", "fe80::1", "0.0.0.0"] {
        assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
    }
}

#[tokio::test]
async fn a_request_whole_in_the_backlog_is_not_pushed_out_by_the_clients_behind_it() {
    let (addr, _cancel) = start(limits(60_000, 60_000, 2)).await;
    // Blocking connects: the server does not run until this test awaits, so every client
    // waits in the listen backlog, the probe's request whole, between 100 slow clients
    // before it and 100 after it (each accept past the cap closes an older one).
    let slow = |n: usize| -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect_timeout(&addr, WITHIN).unwrap();
                std::io::Write::write_all(&mut s, b"GET /slow HTTP/1.1\r\nX-Slow: ").unwrap();
                s
            })
            .collect()
    };
    let before = slow(100);
    let probe = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut &probe, b"GET /ready HTTP/1.0\r\n\r\n").unwrap();
    let after = slow(100);
    probe.set_nonblocking(true).unwrap();
    let mut probe = TcpStream::from_std(probe).unwrap();
    let resp = read_until_closed(&mut probe, WITHIN).await;
    assert!(resp.ends_with("at /ready\n"), "{resp:?}");
    drop((before, after));
}

#[tokio::test]
async fn past_the_cap_the_oldest_idle_keep_alive_connection_makes_room() {
    let (addr, _cancel) = start(limits(60_000, 60_000, 2)).await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(read_response(&mut s).await.ends_with("at /a\n"));
        idle.push(s);
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut s, WITHIN).await.ends_with("at /b\n"));
    assert_eq!(read_until_closed(&mut idle[0], WITHIN).await, "");
}

#[tokio::test]
async fn a_trickled_body_is_answered_408_after_the_body_timeout() {
    let mut l = limits(60_000, 60_000, 32);
    l.body_read_timeout = Duration::from_millis(300);
    let (addr, _cancel) = start(l).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // A byte every 50 ms: the connection is never idle for long, the body never ends.
    let (mut reader, mut writer) = s.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let resp = read_until_closed(&mut reader, WITHIN).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
}

#[tokio::test]
async fn past_the_cap_a_trickled_body_makes_room() {
    let (addr, _cancel) = start(limits(60_000, 60_000, 1)).await;
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nxx")
        .await
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut s, WITHIN).await.ends_with("at /b\n"));
    assert_eq!(read_until_closed(&mut body, WITHIN).await, "");
}
