//! One service: a check loop that feeds the hysteresis and publishes the desired state, and
//! a reporter that reconciles ZooKeeper with it (DESIGN §3.4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::codec::{self, Node};
use common::registry::{EnsureOutcome, Registration, RegistryError, Session};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::check::{self, Hysteresis};
use crate::config::ServiceConfig;
use crate::metrics::ServiceMetrics;

/// What ZooKeeper should hold for a service: `Some(payload)` = registered with this data.
pub type Desired = Option<Arc<Vec<u8>>>;

/// Check-side state, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct CheckStatus {
    /// Healthy after hysteresis.
    pub healthy: bool,
    /// Rounds run so far.
    pub rounds: u64,
    /// The last failure, if the last round failed.
    pub last_error: Option<String>,
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

/// Runs the check loop until `cancel` fires.
pub async fn check_loop(
    config: ServiceConfig,
    payload: Arc<Vec<u8>>,
    desired: watch::Sender<Desired>,
    status: watch::Sender<CheckStatus>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
) {
    let mut hysteresis = Hysteresis::new(config.rise.get(), config.fall.get());
    let mut tick = tokio::time::interval(config.check_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // `biased`: once shutdown is asked, an overdue tick must not start another round.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A round is abandoned at once on shutdown, whatever its checks are doing (a check
        // against a server that accepts and never answers would otherwise hold the exit for
        // its whole timeout).
        let failure = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            f = check_round(&config, &metrics) => f,
        };
        if let Some(err) = &failure {
            debug!(error = %err, "check round failed");
        }
        if let Some(up) = hysteresis.observe(failure.is_none()) {
            if up {
                info!("service is up");
            } else {
                warn!(error = failure.as_deref().unwrap_or(""), "service is down");
            }
            metrics.up.set(i64::from(up));
            desired.send_replace(up.then(|| payload.clone()));
        }
        status.send_modify(|s| {
            s.healthy = hysteresis.is_up();
            s.rounds += 1;
            s.last_error = failure;
        });
    }
}

/// Runs the checks of one round in order; the first failure ends the round and is returned.
async fn check_round(config: &ServiceConfig, metrics: &ServiceMetrics) -> Option<String> {
    for (check, (ok, fail, seconds)) in config.checks.iter().zip(&metrics.checks) {
        let started = Instant::now();
        let result = check::run(check).await;
        seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => ok.inc(),
            Err(err) => {
                fail.inc();
                return Some(format!(
                    "{} check {}:{}: {err}",
                    check.kind.label(),
                    check.host,
                    check.port
                ));
            }
        }
    }
    None
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
