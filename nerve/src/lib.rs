//! nerve: the registration agent. It health-checks the services of its host and keeps one
//! ephemeral node per healthy instance in ZooKeeper.
//!
//! Layout:
//! - [`config`]: the config file, raw → validated.
//! - [`check`]: tcp, http/https, exec, redis and grpc checks; rise/fall hysteresis.
//! - [`service`]: per service, a check loop (each check on its own schedule and
//!   hysteresis) publishing the desired state, and a reporter reconciling ZooKeeper with it.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: `GET /status`, `GET /metrics`.
//!
//! Data flow: check result → hysteresis → desired state (watch channel) → reporter →
//! ZooKeeper create/set/delete (through `common::registry`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod check;
pub mod config;
pub mod metrics;
pub mod service;

use std::sync::Arc;

use common::registry::{Registration, Registry, RegistryOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, Instrument};

pub use config::Config;

/// Why nerve could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The admin server could not bind.
    #[error(transparent)]
    Admin(#[from] common::admin::AdminBindError),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs nerve until `shutdown` fires, then deregisters every service, waits the drain time
/// and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let prometheus = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&prometheus)?;
    let admin_listener = common::admin::bind(config.admin_listen).await?;

    // ZooKeeper sessions outlive `shutdown`: they are needed to deregister.
    let zk_cancel = CancellationToken::new();
    let registry = Registry::new(
        RegistryOptions {
            session_timeout: config.zk_session_timeout,
            ..Default::default()
        },
        zk_cancel.clone(),
    );
    let tracker = TaskTracker::new();
    let mut handles = Vec::new();
    for svc in &config.services {
        let names: Vec<&str> = svc.checks.iter().map(|c| c.name.as_str()).collect();
        let m = metrics.service(&svc.name, &names);
        let session = registry.session(&svc.zk_hosts);
        let name = format!("{}_{}", svc.instance_id, svc.name);
        let registration = Registration::new(session.clone(), &svc.zk_path, &name);
        let payload = Arc::new(service::payload(&svc.instance_id, svc));
        let (desired_tx, desired_rx) = watch::channel(None);
        let (check_tx, check_rx) = watch::channel(service::CheckStatus::default());
        let (report_tx, report_rx) = watch::channel(service::ReportStatus::default());
        let span = tracing::info_span!("service", service = %svc.name, zk.path = %svc.zk_path);
        tracker.spawn(
            service::check_loop(
                svc.clone(),
                payload,
                desired_tx,
                check_tx,
                m.clone(),
                shutdown.clone(),
            )
            .instrument(span.clone()),
        );
        tracker.spawn(
            service::report_loop(registration, session, desired_rx, report_tx, m, shutdown.clone())
                .instrument(span),
        );
        handles.push(service::ServiceHandle {
            config: svc.clone(),
            check: check_rx,
            report: report_rx,
        });
    }
    let zk = config
        .services
        .iter()
        .map(|s| (s.zk_hosts.clone(), registry.session(&s.zk_hosts)));
    common::metrics::zk_sessions("nerve", &prometheus, zk)?;
    info!(services = config.services.len(), instance_id = %config.instance_id, "nerve started");
    // systemd (Type=notify): READY=1 after the first reconcile of every service.
    let first_reconciles = handles.iter().map(|h| {
        let mut report = h.report.clone();
        (h.config.name.clone(), async move {
            let _ = report.wait_for(|r| r.reconciled).await;
        })
    });
    tokio::spawn(common::notify::ready_after(
        "first reconcile",
        first_reconciles.collect(),
    ));

    let admin_cancel = CancellationToken::new();
    let handler = admin::handler(config.instance_id.clone(), Arc::new(handles), prometheus);
    let admin_task = tokio::spawn(common::admin::serve(
        admin_listener,
        handler,
        admin_cancel.clone(),
    ));

    tracker.close();
    tracker.wait().await;
    if !config.drain_time.is_zero() {
        info!(drain = ?config.drain_time, "deregistered; draining");
        tokio::time::sleep(config.drain_time).await;
    }
    zk_cancel.cancel();
    admin_cancel.cancel();
    let _ = admin_task.await;
    info!("nerve stopped");
    Ok(())
}
