#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::sync::atomic::AtomicU64;

use super::*;

fn emfile() -> io::Error {
    io::Error::from_raw_os_error(24)
}

#[tokio::test(start_paused = true)]
async fn pause_grows_through_successes_and_resets_after_quiet() {
    let mut b = AcceptBackoff::new("test");
    assert_eq!(
        b.on_error(&emfile()),
        AcceptRetry::After(Duration::from_millis(5))
    );
    // A freed descriptor lets one accept through: the pause must not fall back to 5 ms.
    b.on_success();
    assert_eq!(
        b.on_error(&emfile()),
        AcceptRetry::After(Duration::from_millis(10))
    );
    b.on_success();
    assert_eq!(
        b.on_error(&emfile()),
        AcceptRetry::After(Duration::from_millis(20))
    );
    for _ in 0..20 {
        b.on_error(&emfile());
    }
    assert_eq!(b.on_error(&emfile()), AcceptRetry::After(ACCEPT_PAUSE_MAX));
    assert_eq!(b.errors(), 24);

    tokio::time::advance(ACCEPT_QUIET).await;
    b.on_success();
    assert_eq!(b.errors(), 0, "a quiet period resets the state");
    assert_eq!(b.on_error(&emfile()), AcceptRetry::After(ACCEPT_PAUSE_MIN));

    // A quiet period without any accept in between also starts over.
    for _ in 0..5 {
        b.on_error(&emfile());
    }
    tokio::time::advance(ACCEPT_QUIET).await;
    assert_eq!(b.on_error(&emfile()), AcceptRetry::After(ACCEPT_PAUSE_MIN));
}

#[test]
fn per_connection_errors_are_retried_at_once() {
    let mut b = AcceptBackoff::new("test");
    let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
    assert_eq!(b.on_error(&aborted), AcceptRetry::Now);
    assert_eq!(b.errors(), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_completes_after_the_timeout_without_progress() {
    let counter = AtomicU64::new(0);
    let started = Instant::now();
    idle(Duration::from_secs(8), || counter.load(Ordering::Relaxed)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took <= Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_waits_while_there_is_progress() {
    let counter = AtomicU64::new(0);
    let watcher = idle(Duration::from_secs(8), || counter.load(Ordering::Relaxed));
    tokio::pin!(watcher);
    // One byte every 5 s, for a minute: never 8 s without progress.
    for _ in 0..12 {
        tokio::select! {
            _ = &mut watcher => panic!("closed while data trickles"),
            _ = tokio::time::sleep(Duration::from_secs(5)) => counter.fetch_add(1, Ordering::Relaxed),
        };
    }
    let stopped = Instant::now();
    watcher.await;
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took <= Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn zero_timeout_never_completes() {
    let r = tokio::time::timeout(Duration::from_secs(3600), idle(Duration::ZERO, || 0)).await;
    assert!(r.is_err());
}

#[tokio::test]
async fn tracked_counts_both_directions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, mut b) = tokio::io::duplex(64);
    let activity = Activity::default();
    let mut t = Tracked::new(a, &activity);
    t.write_all(b"hello").await.unwrap();
    b.write_all(b"abc").await.unwrap();
    let mut buf = [0u8; 3];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!((activity.read(), activity.written(), activity.total()), (3, 5, 8));
}
