//! One service: a check loop that feeds the hysteresis and publishes the desired state, and
//! a reporter that reconciles ZooKeeper with it (DESIGN §3.4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::codec::{self, Node};
use common::registry::{EnsureOutcome, Registration, RegistryError, Session};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::check::{Check, Hysteresis, Report};
use crate::config::ServiceConfig;
use crate::metrics::ServiceMetrics;

/// What ZooKeeper should hold for a service: `Some(payload)` = registered with this data.
pub type Desired = Option<Arc<Vec<u8>>>;

/// One check's state, for the admin API.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// Its name (`name`, else `<index>_<type>`).
    pub name: String,
    /// Its type (`tcp`, `http`, `https`, `exec`, `redis`, `grpc`).
    pub kind: &'static str,
    /// What it checks (address, URL or command line).
    pub target: String,
    /// Up after its rise/fall hysteresis.
    pub up: bool,
    /// Runs so far.
    pub runs: u64,
    /// Whether the latest run passed (`None` before the first one ends).
    pub last_ok: Option<bool>,
    /// Why the latest run failed.
    pub last_error: Option<String>,
    /// What the latest run printed (`exec`).
    pub last_output: Option<String>,
    /// How long the latest run took.
    pub last_duration: Option<Duration>,
    /// Passing runs in a row (0 after a failure).
    pub consecutive_successes: u64,
    /// Failing runs in a row (0 after a success).
    pub consecutive_failures: u64,
}

impl CheckState {
    fn new(check: &Check) -> CheckState {
        CheckState {
            name: check.config().name.clone(),
            kind: check.config().kind.label(),
            target: check.target(),
            up: false,
            runs: 0,
            last_ok: None,
            last_error: None,
            last_output: None,
            last_duration: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }
}

/// Check-side state of a service, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct CheckStatus {
    /// Healthy: every check is up.
    pub healthy: bool,
    /// Per check, in config order.
    pub checks: Vec<CheckState>,
}

impl CheckStatus {
    /// `name: error` of every check whose latest run failed, joined with `; `.
    pub fn failures(&self) -> Option<String> {
        let list: Vec<String> = self
            .checks
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.name, c.last_error.as_deref()?)))
            .collect();
        (!list.is_empty()).then(|| list.join("; "))
    }
}

/// Reporter-side state, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct ReportStatus {
    /// Full path of our node, when registered.
    pub node: Option<String>,
    /// The last reconcile error, cleared on success.
    pub last_error: Option<String>,
    /// True once ZooKeeper was connected and matched the desired state (systemd readiness
    /// waits for it).
    pub reconciled: bool,
}

/// Live view of one service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    /// Its config.
    pub config: ServiceConfig,
    /// Check state.
    pub check: watch::Receiver<CheckStatus>,
    /// ZooKeeper state.
    pub report: watch::Receiver<ReportStatus>,
}

/// The payload this instance registers.
pub fn payload(instance_id: &str, s: &ServiceConfig) -> Vec<u8> {
    codec::encode(&Node {
        host: s.host.clone(),
        port: s.port,
        name: Some(instance_id.to_string()),
        weight: s.weight,
        available: true,
        unavailable_reason: None,
        haproxy_server_options: s.haproxy_server_options.clone(),
        labels: s.labels.clone(),
        shard: None,
    })
}

/// Spread of a check's interval: each wait is the interval ±10 %, so that checks started
/// together (every service of a host, every host after a fleet restart) drift apart.
const JITTER: f64 = 0.1;

/// One finished run, from a check's scheduler to the service's aggregator.
#[derive(Debug)]
struct Run {
    index: usize,
    report: Report,
    took: Duration,
}

/// Runs the checks of a service until `cancel` fires: each on its own schedule (interval
/// with jitter, timeout) through its own hysteresis; the service is up when every check is
/// up. Publishes the desired state and the status.
///
/// Everything runs inside this one future, so that `cancel` abandons every check at once
/// (a check against a wedged server, a command and its process group) with no task left.
pub async fn check_loop(
    config: ServiceConfig,
    payload: Arc<Vec<u8>>,
    desired: watch::Sender<Desired>,
    status: watch::Sender<CheckStatus>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
) {
    let checks: Vec<Check> = config.checks.iter().cloned().map(Check::new).collect();
    status.send_modify(|s| s.checks = checks.iter().map(CheckState::new).collect());
    let (tx, mut rx) = mpsc::channel::<Run>(checks.len().max(1));
    let schedulers = futures::future::join_all(
        checks
            .iter()
            .enumerate()
            .map(|(index, check)| schedule(index, check, tx.clone())),
    );
    drop(tx);
    let aggregate = async {
        let mut hysteresis: Vec<Hysteresis> = checks
            .iter()
            .map(|c| Hysteresis::new(c.config().rise.get(), c.config().fall.get()))
            .collect();
        let mut service_up = false;
        while let Some(Run { index, report, took }) = rx.recv().await {
            let (Some(check), Some(h), Some(m)) = (
                checks.get(index),
                hysteresis.get_mut(index),
                metrics.checks.get(index),
            ) else {
                continue;
            };
            let name = check.config().name.as_str();
            m.seconds.observe(took.as_secs_f64());
            let ok = report.result.is_ok();
            if ok {
                m.ok.inc()
            } else {
                m.fail.inc()
            }
            let error = report.result.as_ref().err().map(|e| e.to_string());
            if let Some(e) = &error {
                debug!(check = name, error = %e, "check failed");
            }
            if let Some(up) = h.observe(ok) {
                m.up.set(i64::from(up));
                if up {
                    info!(check = name, "check is up");
                } else {
                    warn!(
                        check = name,
                        error = error.as_deref().unwrap_or(""),
                        output = report.output.as_deref().unwrap_or(""),
                        "check is down"
                    );
                }
            }
            let all_up = hysteresis.iter().all(Hysteresis::is_up);
            status.send_modify(|s| {
                s.healthy = all_up;
                if let Some(c) = s.checks.get_mut(index) {
                    c.up = hysteresis[index].is_up();
                    c.runs += 1;
                    c.last_ok = Some(ok);
                    c.last_duration = Some(took);
                    c.last_output = report.output;
                    if ok {
                        c.consecutive_successes += 1;
                        c.consecutive_failures = 0;
                    } else {
                        c.consecutive_failures += 1;
                        c.consecutive_successes = 0;
                    }
                    c.last_error = error;
                }
            });
            if all_up != service_up {
                service_up = all_up;
                if all_up {
                    info!("service is up");
                } else {
                    let down: Vec<&str> = checks
                        .iter()
                        .zip(&hysteresis)
                        .filter(|(_, h)| !h.is_up())
                        .map(|(c, _)| c.config().name.as_str())
                        .collect();
                    warn!(checks = ?down, "service is down");
                }
                metrics.up.set(i64::from(all_up));
                desired.send_replace(all_up.then(|| payload.clone()));
            }
        }
    };
    // `biased`: once shutdown is asked, no further run starts or is counted.
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        _ = schedulers => {}
        _ = aggregate => {}
    }
}

/// Runs one check forever: the first run at once, then one every interval (±[`JITTER`])
/// counted from the start of the previous one (right after it, if it took longer).
async fn schedule(index: usize, check: &Check, tx: mpsc::Sender<Run>) {
    let interval = check.config().interval;
    loop {
        let started = Instant::now();
        let report = check.run().await;
        let took = started.elapsed();
        if tx.send(Run { index, report, took }).await.is_err() {
            return;
        }
        tokio::time::sleep_until((started + jittered(interval)).into()).await;
    }
}

/// `interval` ±[`JITTER`], uniformly.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` is keyed differently: a random number without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (random % 10_001) as f64 / 10_000.0; // 0..=1
    interval.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0))
}

/// Time between two verifications that our node still exists, when nothing else happens.
const REFRESH: Duration = Duration::from_secs(30);
/// Longest pause between two failed reconcile attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Time allowed to delete our node on shutdown.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes ZooKeeper match the desired state on every change of desired state and every
/// session event, with backoff on errors, until `cancel` fires; then deregisters.
pub async fn report_loop(
    mut registration: Registration,
    session: Arc<Session>,
    mut desired: watch::Receiver<Desired>,
    status: watch::Sender<ReportStatus>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
) {
    let mut sessions = session.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        let want = desired.borrow_and_update().clone();
        // A reconcile waiting on an unresponsive ZooKeeper must not hold up shutdown: the
        // deregistration below has its own budget.
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = reconcile(&mut registration, want.as_deref(), &metrics) => r,
        };
        let wait = match result {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                // Removing a node never created needs no ZooKeeper: that is not "reconciled".
                let connected = sessions.borrow().connected;
                status.send_modify(|s| {
                    s.node = registration.path().map(str::to_string);
                    s.last_error = None;
                    s.reconciled |= connected;
                });
                REFRESH
            }
            Err(err) => {
                metrics.zk_errors.inc();
                warn!(error = %err, retry_in = ?backoff, "cannot reconcile ZooKeeper");
                status.send_modify(|s| s.last_error = Some(err.to_string()));
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        metrics.registered.set(i64::from(registration.path().is_some()));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = desired.changed() => if r.is_err() { cancel.cancelled().await; break },
            r = sessions.changed() => if r.is_err() { cancel.cancelled().await; break },
            _ = tokio::time::sleep(wait) => {}
        }
    }
    deregister(&mut registration, &metrics).await;
    status.send_modify(|s| s.node = None);
}

/// One "make ZooKeeper match `want`" step.
async fn reconcile(
    registration: &mut Registration,
    want: Option<&Vec<u8>>,
    metrics: &ServiceMetrics,
) -> Result<(), RegistryError> {
    match want {
        Some(data) => match registration.ensure(data).await? {
            EnsureOutcome::Created => {
                metrics.zk_created.inc();
                info!(zk.node = registration.path().unwrap_or(""), "registered");
            }
            EnsureOutcome::Updated => {
                metrics.zk_updated.inc();
                info!(
                    zk.node = registration.path().unwrap_or(""),
                    "registration updated"
                );
            }
            EnsureOutcome::Unchanged => {}
        },
        None => {
            if registration.remove().await? {
                metrics.zk_deleted.inc();
                info!("deregistered");
            }
        }
    }
    Ok(())
}

async fn deregister(registration: &mut Registration, metrics: &ServiceMetrics) {
    let deadline = Instant::now() + DEREGISTER_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline.into(), registration.remove()).await {
            Ok(Ok(existed)) => {
                if existed {
                    metrics.zk_deleted.inc();
                    info!("deregistered on shutdown");
                }
                metrics.registered.set(0);
                return;
            }
            Ok(Err(err)) if Instant::now() < deadline => {
                debug!(error = %err, "deregistration failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(err)) => {
                warn!(error = %err, "could not deregister; the node goes when the session closes");
                return;
            }
            Err(_) => {
                warn!("deregistration timed out; the node goes when the session closes");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
