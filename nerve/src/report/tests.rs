#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

#[test]
fn bucket_allows_a_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(2.0, 3, t0);
    for _ in 0..3 {
        assert!(b.take(t0).is_ok());
    }
    let wait = b.take(t0).unwrap_err();
    assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
    assert!(b.take(t0 + Duration::from_millis(500)).is_ok());
    assert!(b.take(t0 + Duration::from_millis(500)).is_err());
    // Never more than the burst saved up.
    let later = t0 + Duration::from_secs(100);
    for _ in 0..3 {
        assert!(b.take(later).is_ok());
    }
    assert!(b.take(later).is_err());
}

#[test]
fn atomic_write_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    write_atomic(&path, b"one").unwrap();
    write_atomic(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left");
}

#[tokio::test]
async fn limiter_defers_and_the_latest_state_wins() {
    let (in_tx, in_rx) = watch::channel(Desired::default());
    let (out_tx, mut out_rx) = watch::channel(Desired::default());
    let (status_tx, status_rx) = watch::channel(LimitStatus::default());
    let bucket = TokenBucket::new(20.0, 1, Instant::now());
    tokio::spawn(limit_loop(
        in_rx,
        out_tx,
        bucket,
        status_tx,
        CancellationToken::new(),
    ));
    let state = |w| Desired {
        state: State::Available { weight: w },
        payload: Some(std::sync::Arc::new(vec![w])),
        since: Instant::now(),
    };
    in_tx.send_replace(state(1));
    out_rx.changed().await.unwrap();
    assert_eq!(out_rx.borrow_and_update().state, State::Available { weight: 1 });
    // Burst used: the next ones wait; only the last gets out.
    for w in 2..=9 {
        in_tx.send_replace(state(w));
        tokio::task::yield_now().await;
    }
    assert!(status_rx.borrow().deferred_since.is_some());
    out_rx.changed().await.unwrap();
    let got = out_rx.borrow_and_update().state.clone();
    // Whatever got out first, the last one gets out and nothing is out after it.
    if got != (State::Available { weight: 9 }) {
        out_rx.changed().await.unwrap();
    }
    assert_eq!(out_rx.borrow_and_update().state, State::Available { weight: 9 });
    assert!(status_rx.borrow().deferred_since.is_none());
    assert!(status_rx.borrow().deferred_total >= 1);
}
