#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;

use super::*;
use crate::config::{Drained, ExecCheck};
use crate::metrics::Metrics;

fn hook(script: &str) -> Hook {
    Hook {
        command: ExecCheck {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::new(),
        },
        timeout: Duration::from_secs(5),
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// The sequence waits for the down state to be written, then runs `on_disable`, then polls
/// `drained` until it passes, and lasts at least `min_disable_time`.
#[tokio::test]
async fn sequence_waits_for_down_then_on_disable_then_drained_then_min_time() {
    let dir = tempfile::tempdir().unwrap();
    let (log, drained) = (dir.path().join("log"), dir.path().join("drained"));
    let hooks = Hooks {
        pre_available: None,
        on_disable: Some(hook(&format!("echo on_disable >> {}", log.display()))),
        drained: Some(Drained {
            hook: hook(&format!(
                "echo drained >> {0}; test -f {1}",
                log.display(),
                drained.display()
            )),
            interval: Duration::from_millis(20),
            max_wait: Duration::from_secs(30),
        }),
        min_disable_time: Duration::from_millis(800),
    };
    let metrics = Metrics::new(&prometheus::Registry::new())
        .unwrap()
        .service("web", &[]);
    let (report_tx, report_rx) = watch::channel(ReportStatus {
        applied: Some(State::Available { weight: 1 }),
        ..ReportStatus::default()
    });
    let since = Instant::now();
    let task = tokio::spawn(sequence(hooks, vec![report_rx], metrics.clone(), since, "test"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!log.exists(), "no hook before the down state is written");
    report_tx.send_modify(|s| s.applied = Some(State::Absent));
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("drained polled a few times", || {
        read().matches("drained").count() >= 3
    })
    .await;
    assert!(read().starts_with("on_disable\ndrained\n"), "{}", read());
    assert!(!task.is_finished(), "not drained yet");
    std::fs::write(&drained, "").unwrap();
    assert!(task.await.unwrap(), "drained");
    assert!(since.elapsed() >= Duration::from_millis(800), "min_disable_time");
    let fails = metrics
        .hook_runs
        .with_label_values(&["web", "drained", "fail"])
        .get();
    let oks = metrics
        .hook_runs
        .with_label_values(&["web", "drained", "ok"])
        .get();
    assert!(fails >= 3 && oks == 1, "{fails} {oks}");
}

/// `drained` that never passes ends the sequence at `max_wait`, reported as not drained.
#[tokio::test]
async fn drained_gives_up_at_max_wait() {
    let hooks = Hooks {
        drained: Some(Drained {
            hook: hook("exit 1"),
            interval: Duration::from_millis(20),
            max_wait: Duration::from_millis(300),
        }),
        ..Hooks::default()
    };
    let metrics = Metrics::new(&prometheus::Registry::new())
        .unwrap()
        .service("web", &[]);
    let since = Instant::now();
    let drained = tokio::time::timeout(
        Duration::from_secs(5),
        sequence(hooks, Vec::new(), metrics, since, "test"),
    )
    .await
    .unwrap();
    assert!(!drained);
    assert!(since.elapsed() < Duration::from_secs(3), "{:?}", since.elapsed());
}

/// An enable during the sequence aborts it (its command is killed); a disable starts it;
/// `stopping` starts it for an enabled service.
#[tokio::test]
async fn disable_loop_starts_aborts_and_reports() {
    let hooks = Hooks {
        drained: Some(Drained {
            hook: hook("exit 1"),
            interval: Duration::from_millis(20),
            max_wait: Duration::from_secs(60),
        }),
        ..Hooks::default()
    };
    let metrics = Metrics::new(&prometheus::Registry::new())
        .unwrap()
        .service("web", &[]);
    let (op_tx, op_rx) = watch::channel(Operator::default());
    let (status_tx, mut status) = watch::channel(DrainStatus::default());
    let (stopping, cancel) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(disable_loop(
        hooks,
        op_rx,
        Vec::new(),
        stopping.clone(),
        cancel.clone(),
        status_tx,
        metrics,
    ));
    let wait = |status: &mut watch::Receiver<DrainStatus>, f: fn(&DrainStatus) -> bool| {
        let mut s = status.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), s.wait_for(f))
                .await
                .expect("status reached")
                .unwrap()
                .clone()
        }
    };
    // The loop has started (it publishes its first status).
    tokio::time::timeout(Duration::from_secs(5), status.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*status.borrow_and_update(), DrainStatus::default());
    op_tx.send_modify(|o| o.disabled = true);
    wait(&mut status, |d| {
        d.disabled && matches!(d.phase, Phase::Running { .. })
    })
    .await;
    op_tx.send_modify(|o| o.disabled = false);
    wait(&mut status, |d| !d.disabled && d.phase == Phase::Idle).await;
    stopping.cancel();
    wait(&mut status, |d| {
        d.disabled && matches!(d.phase, Phase::Running { .. })
    })
    .await;
    // After stopping, the operator no longer counts.
    op_tx.send_modify(|o| o.disabled = true);
    op_tx.send_modify(|o| o.disabled = false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(status.borrow().disabled);
    cancel.cancel();
}
