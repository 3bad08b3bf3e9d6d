//! nerve: the registration agent. It health-checks the services of its host and keeps one
//! ephemeral node per healthy instance in ZooKeeper.
//!
//! Layout:
//! - [`config`]: the config file, raw → validated.
//! - [`check`]: tcp, http/https, exec, redis and grpc checks; rise/fall hysteresis.
//! - [`service`]: per service, the wiring: a check loop (each check on its own schedule and
//!   hysteresis), the desire loop publishing the desired state (warm-up ramp included).
//! - [`report`]: the reporters (zookeeper, file, console) and the write limiter.
//! - [`hooks`]: hook commands and the disable sequence (on_disable, drained, min time).
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: `GET /status`, `GET /metrics`.
//! - [`upgrade`]: `--takeover`: the ZooKeeper sessions (and so the nodes) handed from the
//!   running nerve to its successor.
//!
//! Data flow: check result → hysteresis → desired state (watch channel) → reporter →
//! ZooKeeper create/set/delete (through `common::registry`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod check;
pub mod config;
pub mod ctl;
pub mod desired;
pub mod hooks;
pub mod maintenance;
pub mod metrics;
pub mod reload;
pub mod report;
pub mod service;
pub mod upgrade;

use std::sync::Arc;

use common::registry::{Registry, RegistryOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

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
    /// `--takeover` failed: this process exits (the running nerve goes on if it had not
    /// handed anything over yet).
    #[error("takeover failed: {0}")]
    Takeover(String),
}

/// Runs nerve until `shutdown` fires, then takes every service down (see [`go_down`]),
/// deletes what is left and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    run_with_reload(config, shutdown, None, false).await
}

/// [`run`], reloading the config file on each reload request (SIGHUP).
pub async fn run_reloadable(config: Config, ctx: common::cli::RunContext) -> Result<(), RunError> {
    run_upgradable(config, ctx, false).await
}

/// [`run_reloadable`]; with `takeover`, first resumes the ZooKeeper sessions of the nerve
/// serving `upgrade_socket` (see [`upgrade`]).
pub async fn run_upgradable(
    config: Config,
    ctx: common::cli::RunContext,
    takeover: bool,
) -> Result<(), RunError> {
    run_with_reload(
        config,
        ctx.shutdown,
        Some((ctx.config_file, ctx.reload)),
        takeover,
    )
    .await
}

async fn run_with_reload(
    config: Config,
    shutdown: CancellationToken,
    reload: Option<(std::path::PathBuf, common::shutdown::ReloadRequests)>,
    takeover: bool,
) -> Result<(), RunError> {
    let prometheus = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&prometheus)?;

    // ZooKeeper sessions outlive `shutdown`: they are needed to deregister.
    let zk_cancel = CancellationToken::new();
    let mut options = RegistryOptions {
        session_timeout: config.zk_session_timeout,
        ..Default::default()
    };
    config.zk_session.apply(&mut options);
    let registry = Arc::new(Registry::new(options, zk_cancel.clone()));
    let mut predecessor = None;
    let mut inheritance = upgrade::Inheritance::default();
    if takeover {
        let Some(path) = &config.upgrade_socket else {
            return Err(RunError::Takeover(
                "--takeover needs `upgrade_socket` in the config (the running nerve's)".to_string(),
            ));
        };
        if let Some((t, i)) = upgrade::take_over(path, &registry)
            .await
            .map_err(|e| RunError::Takeover(e.to_string()))?
        {
            predecessor = Some(t);
            inheritance = i;
        }
    }
    let admin_listener = match inheritance.admin.take() {
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
            .map_err(|source| common::admin::AdminBindError {
                addr: config.admin_listen,
                source,
            })?,
        None => common::admin::bind(config.admin_listen).await?,
    };
    // Kept to hand over: the admin server owns the listener.
    let admin_fd = std::os::fd::AsFd::as_fd(&admin_listener)
        .try_clone_to_owned()
        .map_err(|source| common::admin::AdminBindError {
            addr: config.admin_listen,
            source,
        })?;
    let tracker = TaskTracker::new();
    // Parent of every service's token, cancelled last on shutdown: the reporters then
    // delete what the shutdown sequence left (unavailable nodes).
    let services_root = CancellationToken::new();
    let mut handles = Vec::new();
    let services: maintenance::Services = Arc::new(std::sync::RwLock::new(Vec::new()));
    let maintenance = Arc::new(maintenance::Maintenance::new(
        services.clone(),
        config.state_file.clone(),
    ));
    // Each service starts with the operator state restored: a service disabled before a
    // restart never shows up, not even briefly.
    for svc in &config.services {
        handles.push(service::start_service_from(
            svc,
            &registry,
            &metrics,
            &tracker,
            maintenance.effective(&svc.name),
            inheritance.take(svc),
            services_root.child_token(),
        ));
    }
    inheritance.delete_orphans(&config.services, &registry, &tracker);
    if let Some(mut p) = predecessor {
        let old_pid = p.old_pid;
        match tokio::task::spawn_blocking(move || p.ready()).await {
            Ok(Ok(())) => info!(
                old_pid,
                "takeover done: the previous nerve exits; its nodes are ours"
            ),
            Ok(Err(e)) => warn!(old_pid, error = %e, "takeover: the previous nerve did not confirm"),
            Err(e) => warn!(old_pid, error = %e, "takeover: confirmation task failed"),
        }
    }
    let zk = config
        .services
        .iter()
        .flat_map(|s| &s.reporters)
        .filter_map(|r| match r {
            config::Reporter::Zookeeper(z) => Some((
                z.zk_hosts.clone(),
                registry.session_with_auth(&z.zk_hosts, z.zk_auth.as_ref()),
            )),
            _ => None,
        });
    common::metrics::zk_sessions("nerve", &prometheus, zk)?;
    info!(services = config.services.len(), instance_id = %config.instance_id, "nerve started");
    // systemd (Type=notify): READY=1 once every reporter of every service has written its
    // first desired state; a ZooKeeper reporter only with a connected session (a node never
    // created needs no ZooKeeper to be "absent").
    let first_reconciles: Vec<_> = handles
        .iter()
        .map(|h| {
            let reports: Vec<_> = h
                .reports
                .iter()
                .map(|r| (r.kind == "zookeeper", r.status.clone()))
                .collect();
            let stopping = shutdown.clone();
            (h.config.name.clone(), async move {
                for (zk, mut status) in reports {
                    let ended = status
                        .wait_for(|s| if zk { s.reconciled } else { s.applied.is_some() })
                        .await
                        .is_err();
                    // The reporter ended first: shutdown (never ready), or a reload removed
                    // the service (nothing left to wait for).
                    if ended && stopping.is_cancelled() {
                        std::future::pending::<()>().await;
                    }
                }
            })
        })
        .collect();
    *services.write().unwrap_or_else(|p| p.into_inner()) = handles;
    tokio::spawn(common::notify::ready_after("first reconcile", first_reconciles));

    let admin_cancel = CancellationToken::new();
    let handler = admin::handler(config.instance_id.clone(), maintenance.clone(), prometheus);
    let admin_task = tokio::spawn(common::admin::serve(
        admin_listener,
        handler,
        admin_cancel.clone(),
    ));

    if let Some((file, signal)) = reload {
        let running = reload::Running {
            config: config.clone(),
            registry: registry.clone(),
            metrics,
            tracker: tracker.clone(),
            maintenance: maintenance.clone(),
            shutdown: shutdown.clone(),
            services_root: services_root.clone(),
        };
        tracker.spawn(reload::reload_loop(file, signal, running));
    }
    tracker.close();
    let upgrade_socket = config.upgrade_socket.clone();
    let handed = tokio::select! {
        _ = shutdown.cancelled() => None,
        s = upgrade::serve(upgrade_socket.as_deref(), services.clone(), registry.clone(), admin_fd) => Some(s),
    };
    if handed.is_some() {
        // The nodes are the successor's now: nothing goes down.
        shutdown.cancel();
    } else {
        go_down(&services, config.drain_time).await;
    }
    services_root.cancel();
    tracker.wait().await;
    zk_cancel.cancel();
    admin_cancel.cancel();
    let _ = admin_task.await;
    info!("nerve stopped");
    Ok(())
}

/// SIGTERM's first steps: every service goes down at once (checks stop; its node is deleted,
/// or marked `"available": false` with `expose_unavailable`), then, once that is written
/// (at most [`hooks::DOWN_WAIT`]), the drain: `drain_time` and each service's disable
/// sequence (hooks, `min_disable_time`), side by side. The caller then stops the services,
/// whose reporters delete the nodes still there.
pub async fn go_down(services: &maintenance::Services, drain_time: std::time::Duration) {
    let handles: Vec<service::ServiceHandle> = services.read().unwrap_or_else(|p| p.into_inner()).clone();
    info!(
        services = handles.len(),
        "shutting down: taking every service down"
    );
    take_down(&handles, drain_time).await;
}

/// Takes `handles` down (checks stop; node deleted or marked unavailable), waits until that
/// is written (at most [`hooks::DOWN_WAIT`]), then for `drain_time` and each service's
/// disable sequence, side by side. Used by SIGTERM ([`go_down`]) and for a service a reload
/// removes.
pub async fn take_down(handles: &[service::ServiceHandle], drain_time: std::time::Duration) {
    for h in handles {
        h.stopping.cancel();
    }
    let down = futures::future::join_all(handles.iter().flat_map(|h| {
        h.reports.iter().map(|r| {
            let mut status = r.status.clone();
            async move {
                // An ended reporter has nothing left to write.
                let _ = status
                    .wait_for(|s| !matches!(s.applied, Some(desired::State::Available { .. })))
                    .await;
            }
        })
    }));
    if tokio::time::timeout(hooks::DOWN_WAIT, down).await.is_err() {
        tracing::warn!("some reporters could not write the down state in time; draining anyway");
    }
    if !drain_time.is_zero() {
        info!(drain = ?drain_time, "services down; draining");
    }
    let sequences = futures::future::join_all(handles.iter().map(|h| {
        let mut drain = h.drain.clone();
        async move {
            let _ = drain.wait_for(hooks::DrainStatus::done).await;
        }
    }));
    futures::future::join(sequences, tokio::time::sleep(drain_time)).await;
}
