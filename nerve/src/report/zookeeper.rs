//! The `zookeeper` reporter: reconciles the service's node with the desired state on every
//! change of desired state and every session event, with backoff (DESIGN §3.4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::registry::{EnsureOutcome, Registration, RegistryError, Session};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ReportStatus;
use crate::desired::{Desired, State};
use crate::metrics::ServiceMetrics;

/// Time between two verifications that our node still exists, when nothing else happens.
const REFRESH: Duration = Duration::from_secs(30);
/// Longest pause between two failed reconcile attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Time allowed to delete our node on shutdown.
pub const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes ZooKeeper match the desired state on every change of desired state and every
/// session event, with backoff on errors, until `cancel` fires; then deregisters.
/// `stopping` (the service going down) only names the deletions it causes in the log.
#[allow(clippy::too_many_arguments)]
pub async fn report_loop(
    mut registration: Registration,
    keep: Arc<std::sync::atomic::AtomicBool>,
    session: Arc<Session>,
    mut desired: watch::Receiver<Desired>,
    status: watch::Sender<ReportStatus>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
    stopping: CancellationToken,
) {
    let mut sessions = session.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        let target = desired.borrow_and_update().clone();
        let want = target.payload.clone();
        // A reconcile waiting on an unresponsive ZooKeeper must not hold up shutdown: the
        // deregistration below has its own budget.
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = reconcile(&mut registration, want.as_deref(), &metrics, &stopping) => r,
        };
        if let Ok(true) = result {
            metrics
                .write_latency
                .observe(target.since.elapsed().as_secs_f64());
        }
        let wait = match result {
            Ok(_) => {
                backoff = Duration::from_millis(100);
                // Removing a node never created needs no ZooKeeper: that is not "reconciled".
                let connected = sessions.borrow().connected;
                status.send_modify(|s| {
                    s.node = registration.path().map(str::to_string);
                    s.last_error = None;
                    s.applied = Some(target.state.clone());
                    s.reconciled |= connected;
                });
                REFRESH
            }
            Err(err) => {
                metrics.zk_errors.inc();
                let op = match &err {
                    RegistryError::Zk { op, .. } => *op,
                    RegistryError::NotConnected { .. } => "connect",
                    RegistryError::Taken { .. } => "create",
                    _ => "other",
                };
                metrics
                    .zk_failures
                    .with_label_values(&[metrics.service.as_str(), op])
                    .inc();
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
    if keep.load(std::sync::atomic::Ordering::Acquire) {
        // Handed over to the service that replaces this one on reload: it adopts the node.
        info!(
            zk.node = registration.path().unwrap_or(""),
            "node handed over to the reloaded service"
        );
        return;
    }
    deregister(&mut registration, &metrics).await;
    status.send_modify(|s| {
        s.node = None;
        s.applied = Some(State::Absent);
    });
}

/// One "make ZooKeeper match `want`" step.
async fn reconcile(
    registration: &mut Registration,
    want: Option<&Vec<u8>>,
    metrics: &ServiceMetrics,
    stopping: &CancellationToken,
) -> Result<bool, RegistryError> {
    let wrote = match want {
        Some(data) => match registration.ensure(data).await? {
            EnsureOutcome::Created => {
                metrics.zk_created.inc();
                info!(zk.node = registration.path().unwrap_or(""), "registered");
                true
            }
            EnsureOutcome::Updated => {
                metrics.zk_updated.inc();
                info!(
                    zk.node = registration.path().unwrap_or(""),
                    "registration updated"
                );
                true
            }
            EnsureOutcome::Unchanged => false,
        },
        None => {
            let deleted = registration.remove().await?;
            if deleted {
                metrics.zk_deleted.inc();
                if stopping.is_cancelled() {
                    info!("deregistered on shutdown");
                } else {
                    info!("deregistered");
                }
            }
            deleted
        }
    };
    Ok(wrote)
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
