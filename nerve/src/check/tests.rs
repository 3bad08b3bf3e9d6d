#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn rise_applies_at_start_and_fall_flips_down() {
    let mut h = Hysteresis::new(2, 3);
    assert_eq!(h.observe(true), None);
    assert!(!h.is_up());
    assert_eq!(h.observe(true), Some(true));
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(true), None, "a success resets the fall streak");
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(false), None);
    assert_eq!(h.observe(false), Some(false));
    assert_eq!(h.observe(false), None);
}

#[test]
fn rise_one_fall_one_flips_each_time() {
    let mut h = Hysteresis::new(1, 1);
    assert_eq!(h.observe(true), Some(true));
    assert_eq!(h.observe(false), Some(false));
    assert_eq!(h.observe(true), Some(true));
}

#[tokio::test]
async fn tcp_and_http_checks_against_real_sockets() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let status = if req.starts_with("GET /ok") {
                "200 OK"
            } else {
                "503 Unavailable"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                )
                .await;
        }
    });
    let base = CheckConfig {
        host: "127.0.0.1".into(),
        port,
        timeout: Duration::from_secs(2),
        kind: CheckKind::Tcp,
    };
    assert_eq!(run(&base).await, Ok(()));
    let http = |uri: &str| CheckConfig {
        kind: CheckKind::Http {
            uri: uri.into(),
            host_header: None,
            expect_status: (200, 399),
        },
        ..base.clone()
    };
    assert_eq!(run(&http("/ok")).await, Ok(()));
    assert_eq!(
        run(&http("/bad")).await,
        Err(CheckError::Status {
            status: 503,
            lo: 200,
            hi: 399
        })
    );
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = CheckConfig { port: free, ..base };
    assert!(matches!(run(&closed).await, Err(CheckError::Connect { .. })));
}
