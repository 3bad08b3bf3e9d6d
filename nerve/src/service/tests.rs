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
    assert_eq!(ramp_ceiling(&w, 200, 0), Some(1));
    assert_eq!(step_due(&w, 1), Some(Duration::from_secs(2)));
    assert_eq!(ramp_ceiling(&w, 200, 1), Some(40));
    assert_eq!(ramp_ceiling(&w, 200, 4), Some(160));
    assert_eq!(step_due(&w, 5), Some(Duration::from_secs(10)));
    assert_eq!(ramp_ceiling(&w, 200, 5), None, "full weight");
    assert_eq!(step_due(&w, 6), None);
    // At most `steps + 1` distinct weights.
    let seen: std::collections::BTreeSet<u8> =
        (0..10).map(|l| ramp_ceiling(&w, 200, l).unwrap_or(200)).collect();
    assert_eq!(seen.len(), 6, "{seen:?}");
}

/// Service `web` with weight 100 and the extra keys `keys` (a warm-up, hooks).
fn warming_service(keys: &str) -> ServiceConfig {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nerve.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - {{name: web, host: 127.0.0.1, port: 1, zk_hosts: 'a:1', zk_path: /s/web, \
             weight: 100, {keys}, checks: [{{type: tcp, port: 1}}]}}\n"
        ),
    )
    .unwrap();
    Config::load(&file).unwrap().services.remove(0)
}

/// Runs `desire_loop` for `config` (unhealthy at first); returns the check-status sender,
/// the desired state, the stop token and a task collecting every available weight it
/// publishes, in order. Tests run it on the current-thread runtime.
async fn drive_desire_loop(
    config: ServiceConfig,
) -> (
    watch::Sender<CheckStatus>,
    watch::Receiver<Desired>,
    CancellationToken,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let m = metrics.service("web", &["0_tcp"]);
    let (status_tx, status) = watch::channel(CheckStatus::default());
    let (desired_tx, desired) = watch::channel(Desired::default());
    let (operator_tx, operator) = watch::channel(Operator::default());
    let stopping = CancellationToken::new();
    let mut seen = desired.clone();
    let weights = tokio::spawn(async move {
        let _operator = operator_tx;
        let mut weights = Vec::new();
        while seen.changed().await.is_ok() {
            if let State::Available { weight } = seen.borrow_and_update().state {
                weights.push(weight);
            }
        }
        weights
    });
    tokio::spawn(desire_loop(
        config,
        status,
        operator,
        desired_tx,
        m,
        stopping.clone(),
    ));
    // Lets the loop start and see the service unhealthy (a service healthy from the start
    // does not warm up).
    tokio::task::yield_now().await;
    (status_tx, desired, stopping, weights)
}

/// The race of issue 14: a check run that wakes the loop after a step's due time, before the
/// step itself ran, must not raise the weight: only the step (which runs the stability
/// command, failing here) may. The test holds the (single-threaded) runtime past the first
/// step's due time, then publishes a check run: at the loop's next wakeup both the check
/// update and the step are ready, and the check arm goes first.
#[tokio::test]
async fn a_wakeup_past_a_step_never_raises_the_weight_unchecked() {
    let (status, mut desired, stopping, weights) = drive_desire_loop(warming_service(
        "warmup: {duration: 400ms, steps: 2, stability_command: [\"false\"]}",
    ))
    .await;
    status.send_modify(|s| s.healthy = true);
    tokio::time::timeout(
        Duration::from_secs(10),
        desired.wait_for(|d| d.state == State::Available { weight: 1 }),
    )
    .await
    .unwrap()
    .unwrap();
    // Blocks the runtime on purpose (not a wait for a condition): the first step falls due
    // (at 200 ms) while no task can run.
    std::thread::sleep(Duration::from_millis(300));
    status.send_modify(|s| s.healthy = true);
    // Several steps' worth, the stability command failing at each: weight 1 throughout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stopping.cancel();
    let weights = weights.await.unwrap();
    assert!(weights.iter().all(|w| *w == 1), "{weights:?}");
}

/// Without a stability command, the ramp climbs one step per due time, every step written
/// once, whatever wakes the loop in between.
#[tokio::test(start_paused = true)]
async fn the_ramp_climbs_one_step_at_a_time() {
    let (status, mut desired, stopping, weights) =
        drive_desire_loop(warming_service("warmup: {duration: 10s, steps: 5}")).await;
    status.send_modify(|s| s.healthy = true);
    desired
        .wait_for(|d| d.state == State::Available { weight: 1 })
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        status.send_modify(|s| s.healthy = true);
    }
    desired
        .wait_for(|d| d.state == State::Available { weight: 100 })
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    stopping.cancel();
    assert_eq!(weights.await.unwrap(), [1, 20, 40, 60, 80, 100]);
}

/// A `pre_available` hook failing for longer than the warm-up does not use the warm-up up:
/// the ramp starts when the service becomes available, at weight 1.
#[tokio::test]
async fn the_ramp_starts_when_the_hook_lets_the_service_in() {
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allow");
    let (status, mut desired, stopping, weights) = drive_desire_loop(warming_service(&format!(
        "warmup: {{duration: 200ms, steps: 2}}, hooks: {{pre_available: {{command: [test, -f, '{}']}}}}",
        allow.display()
    )))
    .await;
    status.send_modify(|s| s.healthy = true);
    // Held back well past the warm-up's duration, the hook retried at each check run.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status.send_modify(|s| s.healthy = true);
    }
    assert_eq!(desired.borrow().state, State::Absent);
    std::fs::write(&allow, "").unwrap();
    status.send_modify(|s| s.healthy = true);
    tokio::time::timeout(
        Duration::from_secs(10),
        desired.wait_for(|d| d.state == State::Available { weight: 100 }),
    )
    .await
    .unwrap()
    .unwrap();
    stopping.cancel();
    assert_eq!(weights.await.unwrap(), [1, 50, 100]);
}
