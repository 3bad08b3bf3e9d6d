#![allow(clippy::unwrap_used)]
use std::time::Duration;

use super::*;
use crate::config::{CheckKind, HttpCheck, HttpMethod, StatusSet};

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

#[test]
fn substring_search_resumes_where_it_left_off() {
    assert!(contains_from(b"hello world", b"lo w", 0));
    // The needle straddles what was already searched and what just arrived.
    assert!(contains_from(b"hello world", b"lo w", 5));
    assert!(!contains_from(b"hello world", b"lo w", 8));
    assert!(!contains_from(b"ab", b"abc", 0));
    assert!(contains_from(b"", b"", 0));
}

#[test]
fn grpc_messages_round_trip() {
    assert_eq!(grpc::encode_request(""), vec![0, 0, 0, 0, 0]);
    assert_eq!(
        grpc::encode_request("web"),
        vec![0, 0, 0, 0, 5, 0x0a, 3, b'w', b'e', b'b']
    );
    // HealthCheckResponse{status: SERVING}, and with an unknown field before it.
    assert_eq!(grpc::decode_response(&grpc::frame(&[0x08, 1])), Ok(1));
    assert_eq!(
        grpc::decode_response(&grpc::frame(&[0x12, 2, b'x', b'y', 0x08, 2])),
        Ok(2)
    );
    // proto3: an absent status is UNKNOWN (0).
    assert_eq!(grpc::decode_response(&grpc::frame(&[])), Ok(0));
    let long = "s".repeat(300);
    let req = grpc::encode_request(&long);
    assert_eq!(&req[5..8], &[0x0a, 0xac, 0x02], "varint length 300");
    for bad in [
        &[][..],
        &[1, 0, 0, 0, 0],
        &[0, 0, 0, 0, 9, 8],
        &[0, 0, 0, 0, 1, 0x08],
    ] {
        assert!(grpc::decode_response(bad).is_err(), "{bad:?}");
    }
}

fn config(port: u16, kind: CheckKind) -> CheckConfig {
    CheckConfig {
        name: "c".into(),
        host: "127.0.0.1".into(),
        port,
        timeout: Duration::from_secs(2),
        interval: Duration::from_secs(1),
        rise: std::num::NonZeroU32::MIN,
        fall: std::num::NonZeroU32::MIN,
        kind,
    }
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
    let tcp = Check::new(config(
        port,
        CheckKind::Tcp {
            send: None,
            expect: None,
        },
    ));
    assert_eq!(tcp.run().await.result, Ok(()));
    let http = |uri: &str| {
        Check::new(config(
            port,
            CheckKind::Http(HttpCheck {
                method: HttpMethod::Get,
                uri: uri.into(),
                headers: vec![("Host".into(), "x".into())],
                expect_status: StatusSet::default(),
                expect_body: None,
                tls: None,
            }),
        ))
    };
    assert_eq!(http("/ok").run().await.result, Ok(()));
    assert_eq!(
        http("/bad").run().await.result,
        Err(CheckError::Status {
            status: 503,
            expected: "200-399".into()
        })
    );
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = Check::new(config(
        free,
        CheckKind::Tcp {
            send: None,
            expect: None,
        },
    ));
    assert!(matches!(
        closed.run().await.result,
        Err(CheckError::Connect { .. })
    ));
}
