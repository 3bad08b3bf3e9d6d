//! synapse: the router agent. It watches service paths in ZooKeeper and serves each service
//! on a local port through an embedded TCP load balancer.
//!
//! Layout:
//! - [`config`]: the config file, raw → validated.
//! - [`service`]: per service, the watcher task that builds route tables (single writer).
//! - [`table`]: immutable route tables and per-backend live state (hot path).
//! - [`balance`]: balancing policies (round-robin, least-conn, random, p2c-EWMA, Maglev
//!   hash), weights, backups, per-backend live state (hot path, pure).
//! - [`proxy`]: accept loop and per-connection TCP proxying (hot path).
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: `GET /ready`, `GET /services`, `GET /stats`, `GET /metrics`.
//! - [`stats`]: the HTML stats page.
//!
//! Data flow: ZooKeeper event → `common::registry::watch` → member map → filters
//! (availability) and fallback (previous backends) → `RouteTable::build` → `ArcSwap::store`
//! → the next connection uses it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod service;
pub mod stats;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;

use common::registry::{Registry, RegistryOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

pub use config::Config;

/// Why synapse could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The admin server could not bind.
    #[error(transparent)]
    Admin(#[from] common::admin::AdminBindError),
    /// A service's listener could not bind.
    #[error("cannot listen on {addr} for service {service}: {source}")]
    Listen {
        /// The service.
        service: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs synapse until `shutdown` fires; then stops accepting, lets in-flight connections
/// finish up to the drain timeout, and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let prometheus = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&prometheus)?;
    let admin_listener = common::admin::bind(config.admin_listen).await?;
    let mut listeners = Vec::new();
    for svc in &config.services {
        let listener = tokio::net::TcpListener::bind(svc.listen)
            .await
            .map_err(|source| RunError::Listen {
                service: svc.name.clone(),
                addr: svc.listen,
                source,
            })?;
        listeners.push(listener);
    }

    let registry = Registry::new(
        RegistryOptions {
            session_timeout: config.zk_session_timeout,
            ..Default::default()
        },
        shutdown.clone(),
    );
    let connections = TaskTracker::new();
    let background = TaskTracker::new();
    let mut services = Vec::new();
    for (svc, listener) in config.services.iter().zip(listeners) {
        let service = Arc::new(service::Service::new(svc.clone(), metrics.service(&svc.name)));
        let span = tracing::info_span!("service", service = %svc.name, zk.path = %svc.zk_path);
        let session = registry.session(&svc.zk_hosts);
        background.spawn(
            service::watch_loop(service.clone(), session, metrics.clone(), shutdown.clone())
                .instrument(span.clone()),
        );
        info!(service = %svc.name, listen = %svc.listen, "listening");
        background.spawn(
            proxy::serve(listener, service.clone(), connections.clone(), shutdown.clone()).instrument(span),
        );
        services.push(service);
    }
    let zk = config
        .services
        .iter()
        .map(|s| (s.zk_hosts.clone(), registry.session(&s.zk_hosts)));
    common::metrics::zk_sessions("synapse", &prometheus, zk)?;
    // systemd (Type=notify): READY=1 after the first sync of every service.
    let first_syncs = services.iter().map(|s| {
        let mut synced = s.first_sync.subscribe();
        (s.config.name.clone(), async move {
            let _ = synced.wait_for(|v| *v).await;
        })
    });
    tokio::spawn(common::notify::ready_after("first sync", first_syncs.collect()));
    let admin_cancel = CancellationToken::new();
    let handler = admin::handler(Arc::new(services), prometheus);
    let admin_task = tokio::spawn(common::admin::serve(
        admin_listener,
        handler,
        admin_cancel.clone(),
    ));
    info!(services = config.services.len(), "synapse started");

    shutdown.cancelled().await;
    background.close();
    background.wait().await;
    connections.close();
    let open = connections.len();
    if open > 0 {
        info!(open, deadline = ?config.drain_timeout, "draining connections");
        if tokio::time::timeout(config.drain_timeout, connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = connections.len(),
                "drain deadline passed; closing remaining connections"
            );
        }
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    info!("synapse stopped");
    Ok(())
}
