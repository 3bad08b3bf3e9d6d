#![allow(clippy::unwrap_used)]
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::metrics::Metrics;

const KEEPALIVE: Duration = Duration::from_millis(200);

fn routes() -> SharedRoutes {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    Arc::new(ArcSwap::from_pointee(Routes::Shared {
        router: Router::new(),
        unrouted: metrics.http().unrouted("test"),
    }))
}

fn settings(idle: Duration, keepalive: Duration) -> ListenerSettings {
    ListenerSettings {
        idle_timeout: idle,
        tcp_keepalive: Duration::ZERO,
        keepalive_timeout: keepalive,
    }
}

/// Serves one in-memory connection on which the client sends `input` and keeps its side
/// open; returns what the client read until synapse closed, and how long that took.
async fn serve_until_closed(input: &[u8], settings: ListenerSettings) -> (Vec<u8>, Duration) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from(([192, 0, 2, 7], 40000));
    let started = Instant::now();
    let serving = tokio::spawn(serve_stream(server, peer, routes(), settings));
    client.write_all(input).await.unwrap();
    let mut output = Vec::new();
    // Bounded: the test fails rather than hangs if synapse never closes.
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut output))
        .await
        .expect("synapse closed the connection")
        .unwrap();
    let took = started.elapsed();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap();
    (output, took)
}

#[tokio::test]
async fn a_head_that_does_not_arrive_in_time_is_closed() {
    let (output, took) = serve_until_closed(
        b"GET / HTTP/1.1\r\nHo",
        settings(Duration::from_secs(60), KEEPALIVE),
    )
    .await;
    assert!(output.is_empty(), "{}", String::from_utf8_lossy(&output));
    assert!(took >= KEEPALIVE, "closed after {took:?}");
}

#[tokio::test]
async fn a_connection_idle_between_requests_is_closed_after_keepalive_timeout() {
    let (output, took) = serve_until_closed(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        settings(Duration::from_secs(60), KEEPALIVE),
    )
    .await;
    let text = String::from_utf8_lossy(&output);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(took >= KEEPALIVE, "closed after {took:?}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_idle_timeout_without_keepalive_timeout() {
    let idle = Duration::from_millis(200);
    let (output, took) = serve_until_closed(b"", settings(idle, Duration::ZERO)).await;
    assert!(output.is_empty());
    assert!(took >= idle, "closed after {took:?}");
}

#[tokio::test]
async fn requests_split_across_reads_and_pipelined_are_all_answered() {
    // The first read may hold less than the HTTP/2 preface's length, or several requests.
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from(([192, 0, 2, 7], 40000));
    let serving = tokio::spawn(serve_stream(
        server,
        peer,
        routes(),
        settings(Duration::from_secs(60), KEEPALIVE),
    ));
    client.write_all(b"GE").await.unwrap();
    tokio::task::yield_now().await;
    client
        .write_all(b"T /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut output = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut output))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&output);
    assert_eq!(text.matches("HTTP/1.1 404").count(), 2, "{text}");
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap();
}
