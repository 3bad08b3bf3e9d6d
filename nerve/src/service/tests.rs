#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use tokio::net::TcpListener;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;

fn service(checks: &str) -> ServiceConfig {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nerve.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - {{name: web, host: 127.0.0.1, port: 1, zk_hosts: 'a:1', zk_path: /s/web, checks: {checks}}}\n"
        ),
    )
    .unwrap();
    Config::load(&file).unwrap().services.remove(0)
}

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Waits (up to 10 s) for a status that satisfies `f`, checking `every` on each one seen.
async fn wait_status(
    rx: &mut watch::Receiver<CheckStatus>,
    mut every: impl FnMut(&CheckStatus),
    f: impl Fn(&CheckStatus) -> bool,
) -> CheckStatus {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            {
                let s = rx.borrow_and_update();
                every(&s);
                if f(&s) {
                    return s.clone();
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status not reached; last: {:?}", rx.borrow()))
}

#[tokio::test]
async fn checks_run_independently_each_with_its_own_hysteresis() {
    let (a, pa) = listener().await;
    let (b, pb) = listener().await;
    let config = service(&format!(
        "[{{type: tcp, name: fast, port: {pa}, interval: 20ms, rise: 1, fall: 1}}, \
          {{type: tcp, name: slow, port: {pb}, interval: 20ms, rise: 2, fall: 5}}]"
    ));
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let m = metrics.service("web", &["fast", "slow"]);
    let (desired_tx, mut desired) = watch::channel(Desired::default());
    let (status_tx, mut status) = watch::channel(CheckStatus::default());
    let (_operator_tx, operator) = watch::channel(Operator::default());
    let cancel = CancellationToken::new();
    tokio::spawn(desire_loop(
        config.clone(),
        status.clone(),
        operator,
        desired_tx,
        m.clone(),
        cancel.clone(),
    ));
    let task = tokio::spawn(check_loop(config, false, status_tx, m.clone(), cancel.clone()));
    tokio::time::timeout(Duration::from_secs(10), desired.wait_for(|d| d.payload.is_some()))
        .await
        .unwrap()
        .unwrap();

    // The slow check's target goes away: it goes down after exactly 5 failures of its
    // own, whatever the fast check does meanwhile; the service is up until then.
    drop(b);
    let down = wait_status(
        &mut status,
        |s| {
            let (fast, slow) = (&s.checks[0], &s.checks[1]);
            assert!(fast.up && fast.consecutive_failures == 0, "{s:?}");
            if s.healthy {
                assert!(slow.up && slow.consecutive_failures < 5, "{s:?}");
            }
        },
        |s| !s.healthy,
    )
    .await;
    assert!(down.checks[1].consecutive_failures >= 5, "{down:?}");
    assert!(!down.checks[1].up);
    tokio::time::timeout(Duration::from_secs(10), desired.wait_for(|d| d.payload.is_none()))
        .await
        .expect("deregistered")
        .unwrap();
    assert_eq!(m.up.get(), 0);
    assert_eq!((m.checks[0].up.get(), m.checks[1].up.get()), (1, 0));
    let failures = down.failures().unwrap();
    assert!(failures.starts_with("slow: connect to 127.0.0.1:"), "{failures}");
    assert!(!failures.contains("fast"), "{failures}");

    // Both fail: no short-circuit, the status names both.
    drop(a);
    let both = wait_status(
        &mut status,
        |_| {},
        |s| s.checks.iter().all(|c| c.last_error.is_some()),
    )
    .await;
    let failures = both.failures().unwrap();
    assert!(
        failures.contains("fast: ") && failures.contains("slow: "),
        "{failures}"
    );
    assert!(m.checks[0].fail.get() >= 1 && m.checks[1].fail.get() >= 5);

    // Back: the fast check rises after 1 success, the slow one after 2; the service once
    // both are up.
    let _a = TcpListener::bind(("127.0.0.1", pa)).await.unwrap();
    let _b = TcpListener::bind(("127.0.0.1", pb)).await.unwrap();
    let up = wait_status(&mut status, |_| {}, |s| s.healthy).await;
    assert!(up.checks.iter().all(|c| c.up && c.last_error.is_none()), "{up:?}");
    assert!(up.checks[1].consecutive_successes >= 2, "{up:?}");
    tokio::time::timeout(Duration::from_secs(10), desired.wait_for(|d| d.payload.is_some()))
        .await
        .unwrap()
        .unwrap();

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the loop stops at once on shutdown")
        .unwrap();
}

#[test]
fn jitter_stays_within_ten_percent_and_varies() {
    let base = Duration::from_secs(1);
    let samples: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
    assert!(samples
        .iter()
        .all(|d| *d >= Duration::from_millis(900) && *d <= Duration::from_millis(1100)));
    let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
    assert!(*max - *min > Duration::from_millis(100), "{min:?}..{max:?}");
}

#[test]
fn warmup_ramp_steps() {
    let w = crate::config::Warmup {
        duration: Duration::from_secs(10),
        steps: 5,
        stability_command: None,
        stability_timeout: Duration::from_secs(5),
    };
    let at = |s: f64| ramp(&w, 200, Duration::from_secs_f64(s));
    assert_eq!(at(0.0), (1, Some(Duration::from_secs(2))));
    assert_eq!(at(1.9), (1, Some(Duration::from_secs(2))));
    assert_eq!(at(2.0), (40, Some(Duration::from_secs(4))));
    assert_eq!(at(9.9), (160, Some(Duration::from_secs(10))));
    assert_eq!(at(10.0), (200, None));
    assert_eq!(at(99.0), (200, None));
    // At most `steps + 1` distinct weights.
    let seen: std::collections::BTreeSet<u8> = (0..1000).map(|ms| at(f64::from(ms) / 50.0).0).collect();
    assert_eq!(seen.len(), 6, "{seen:?}");
}
