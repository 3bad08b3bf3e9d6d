//! SIGHUP: read the config again and move to it without disturbing what did not change.
//!
//! - An invalid file is refused, every problem logged; the running config keeps going.
//! - Unchanged services (same [`ServiceConfig`]) are untouched: no task restarted, no
//!   ZooKeeper write.
//! - A changed service registers its new form before its old node goes: a ZooKeeper
//!   reporter that stays the same (same ensemble, path, naming, auth) hands its node over to
//!   the new service, which adopts it (one `set`, the node never disappears); the new service
//!   starts with the old one's health, so it registers at once; its other old reporters are
//!   stopped (and deregister) only once every new reporter has written its first state.
//! - Added services start; removed ones go down as on SIGTERM (node deleted or marked
//!   unavailable, then their disable sequence: hooks, `min_disable_time`), then deregister.
//! - The operator's state (maintenance API) is kept by service name.
//! - Top-level settings that need a restart (admin address, session timeout, log, state
//!   file) are reported and ignored.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::registry::Registry;
use common::shutdown::ReloadRequests;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, ServiceConfig};
use crate::maintenance::Maintenance;
use crate::metrics::Metrics;
use crate::service::ServiceHandle;

/// How long a changed service's new reporters get to write their first state before the old
/// reporters are stopped anyway.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a reload needs of the running agent.
#[derive(Debug)]
pub struct Running {
    /// The config running now.
    pub config: Config,
    /// ZooKeeper sessions.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Metrics,
    /// Where service tasks run.
    pub tracker: TaskTracker,
    /// Operator state and the list of running services.
    pub maintenance: Arc<Maintenance>,
    /// Shutdown.
    pub shutdown: CancellationToken,
    /// Parent of the services' tokens (cancelled at the end of the shutdown).
    pub services_root: CancellationToken,
}

/// What a reload did, by service name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Left running as they were.
    pub unchanged: Vec<String>,
    /// Replaced by their new form.
    pub changed: Vec<String>,
    /// Started.
    pub added: Vec<String>,
    /// Stopped and deregistered.
    pub removed: Vec<String>,
}

/// Reloads `file` at each change of `signal`, until shutdown.
pub async fn reload_loop(file: PathBuf, mut requests: ReloadRequests, mut running: Running) {
    loop {
        let request = tokio::select! {
            _ = running.shutdown.cancelled() => return,
            r = requests.next() => r,
        };
        match Config::load(&file) {
            Ok(config) => {
                let outcome = apply(&mut running, config).await;
                info!(?outcome, "config reloaded");
                request.finish(Ok(()));
            }
            Err(e) => {
                error!(file = %file.display(), problems = %e, "reload refused: the config is invalid; the running config keeps going");
                request.finish(Err(e.to_string()));
            }
        }
    }
}

/// Moves the running agent to `new`.
pub async fn apply(running: &mut Running, new: Config) -> Outcome {
    let old = &running.config;
    for (key, differs) in [
        ("admin", old.admin_listen != new.admin_listen),
        (
            "zookeeper.session_timeout",
            old.zk_session_timeout != new.zk_session_timeout,
        ),
        ("log", format!("{:?}", old.log) != format!("{:?}", new.log)),
        ("state_file", old.state_file != new.state_file),
        ("drain_time", old.drain_time != new.drain_time),
    ] {
        if differs {
            warn!(
                key,
                "this setting changed but needs a restart; keeping the running value"
            );
        }
    }
    let current: Vec<ServiceHandle> = running
        .maintenance
        .services()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut outcome = Outcome::default();
    let mut next: Vec<ServiceHandle> = Vec::new();
    for svc in &new.services {
        match current.iter().find(|h| h.config.name == svc.name) {
            Some(h) if h.config == *svc => {
                outcome.unchanged.push(svc.name.clone());
                next.push(h.clone());
            }
            Some(h) => {
                outcome.changed.push(svc.name.clone());
                next.push(replace(running, h, svc).await);
            }
            None => {
                outcome.added.push(svc.name.clone());
                next.push(start(running, svc, None));
            }
        }
    }
    for h in &current {
        if !new.services.iter().any(|s| s.name == h.config.name) {
            outcome.removed.push(h.config.name.clone());
            info!(service = %h.config.name, "service removed from the config; taking it down, then deregistering");
            // As on SIGTERM: down first (node deleted, or marked unavailable), then its
            // disable sequence (hooks, min_disable_time), then the node goes.
            let h = h.clone();
            running.tracker.spawn(async move {
                crate::take_down(std::slice::from_ref(&h), std::time::Duration::ZERO).await;
                h.cancel.cancel();
            });
        }
    }
    *running
        .maintenance
        .services()
        .write()
        .unwrap_or_else(|p| p.into_inner()) = next;
    running.maintenance.apply();
    let drain_time = running.config.drain_time;
    let (admin_listen, zk_session_timeout, log, state_file) = (
        running.config.admin_listen,
        running.config.zk_session_timeout,
        running.config.log.clone(),
        running.config.state_file.clone(),
    );
    running.config = Config {
        admin_listen,
        zk_session_timeout,
        log,
        state_file,
        drain_time,
        ..new
    };
    outcome
}

fn start(running: &Running, svc: &ServiceConfig, takeover: Option<&ServiceHandle>) -> ServiceHandle {
    let handle = crate::service::start_service(
        svc,
        &running.registry,
        &running.metrics,
        &running.tracker,
        running.maintenance.effective(&svc.name),
        takeover,
        running.services_root.child_token(),
    );
    // Started by a reload that raced with SIGTERM: the shutdown sequence may have listed
    // the services already, so this one goes down by itself.
    if running.shutdown.is_cancelled() {
        handle.stopping.cancel();
    }
    handle
}

/// Replaces the running `old` by `svc`, new form first (see the module docs).
async fn replace(running: &Running, old: &ServiceHandle, svc: &ServiceConfig) -> ServiceHandle {
    let span = tracing::info_span!("reload", service = %svc.name);
    async {
        let same_instance = old.config.instance_id == svc.instance_id;
        let mut handed = Vec::new();
        for r in &old.reports {
            if r.kind == "zookeeper" && same_instance && svc.reporters.contains(&r.config) {
                r.keep.store(true, Ordering::Release);
                r.cancel.cancel();
                handed.push(r.status.clone());
            }
        }
        // A handed-over reporter must be stopped before its successor adopts the node, or
        // the two would rewrite it in turn.
        for mut status in handed {
            let ended = async { while status.changed().await.is_ok() {} };
            if tokio::time::timeout(HANDOVER_TIMEOUT, ended).await.is_err() {
                warn!("an old reporter did not stop in time");
            }
        }
        let new = start(running, svc, Some(old));
        let first_writes = new.reports.iter().map(|r| {
            let mut status = r.status.clone();
            async move {
                let _ = status.wait_for(|s| s.applied.is_some()).await;
            }
        });
        if tokio::time::timeout(HANDOVER_TIMEOUT, futures::future::join_all(first_writes))
            .await
            .is_err()
        {
            warn!("the new form of the service did not write its state in time; removing the old one anyway");
        }
        old.cancel.cancel();
        info!("service replaced by its new form");
        new
    }
    .instrument(span)
    .await
}
