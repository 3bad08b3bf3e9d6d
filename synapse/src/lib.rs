//! synapse: the router agent. It watches service paths in ZooKeeper and serves each service
//! on a local port through an embedded TCP or HTTP load balancer.
//!
//! Layout:
//! - [`config`]: the config file, raw → validated.
//! - [`service`]: per service, the watcher task that builds route tables (single writer).
//! - [`table`]: immutable route tables (backends + balancer) and per-backend live state
//!   carried across tables (hot path).
//! - [`balance`]: balancing policies (round-robin, least-conn, random, p2c-EWMA, Maglev
//!   hash), weights, backups, per-backend live state (hot path, pure).
//! - [`outlier`]: passive outlier ejection (consecutive failures, growing capped ejection
//!   time, maximum ejected share) and the panic threshold.
//! - [`proxy`]: the data path (hot path): [`proxy::tcp`] (accept loop, per-connection TCP
//!   proxying) and [`proxy::http`] (HTTP server to clients, pooled keep-alive connections to
//!   backends, retries, timeouts, upgrades).
//! - [`router`]: Host / path-prefix routing of shared HTTP listeners (hot path).
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: `GET /ready`, `GET /services`, `GET /metrics`.
//!
//! Data flow: ZooKeeper event → `common::registry::watch` → member map → filters
//! (availability) and fallback (previous backends) → `RouteTable::build` (balancer included)
//! → `ArcSwap::store` → the next connection loads it and asks its balancer for backends.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod metrics;
pub mod outlier;
pub mod proxy;
pub mod router;
pub mod service;
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
    /// A shared HTTP listener could not bind.
    #[error("cannot listen on {addr} for http_listeners[{index}]: {source}")]
    HttpListen {
        /// Position in `http_listeners`.
        index: usize,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
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
        let listener = match svc.listen {
            Some(addr) => {
                Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|source| RunError::Listen {
                            service: svc.name.clone(),
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        listeners.push(listener);
    }
    let mut http_listeners = Vec::new();
    for (index, l) in config.http_listeners.iter().enumerate() {
        let listener =
            tokio::net::TcpListener::bind(l.listen)
                .await
                .map_err(|source| RunError::HttpListen {
                    index,
                    addr: l.listen,
                    source,
                })?;
        http_listeners.push(listener);
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
    let mut http_services = Vec::new();
    for (svc, listener) in config.services.iter().zip(listeners) {
        let service = Arc::new(service::Service::new(svc.clone(), metrics.service(&svc.name)));
        let span = tracing::info_span!("service", service = %svc.name, zk.path = %svc.zk_path);
        let session = registry.session(&svc.zk_hosts);
        background.spawn(
            service::watch_loop(service.clone(), session, metrics.clone(), shutdown.clone())
                .instrument(span.clone()),
        );
        match svc.mode {
            config::Mode::Tcp => {
                if let Some(listener) = listener {
                    info!(service = %svc.name, listen = ?svc.listen, mode = "tcp", "listening");
                    background.spawn(
                        proxy::tcp::serve(listener, service.clone(), connections.clone(), shutdown.clone())
                            .instrument(span),
                    );
                }
            }
            config::Mode::Http => {
                let http = Arc::new(proxy::http::HttpService::new(service.clone(), &metrics));
                background.spawn(
                    http.clone()
                        .sweep_pools(shutdown.clone())
                        .instrument(span.clone()),
                );
                if let Some(listener) = listener {
                    info!(service = %svc.name, listen = ?svc.listen, mode = "http", "listening");
                    let settings = proxy::http::ListenerSettings {
                        idle_timeout: svc.idle_timeout,
                        tcp_keepalive: svc.tcp_keepalive,
                        keepalive_timeout: config.http_keepalive_timeout,
                    };
                    let routes = Arc::new(proxy::http::Routes::Service(http.clone()));
                    background.spawn(
                        proxy::http::serve(listener, routes, settings, connections.clone(), shutdown.clone())
                            .instrument(span),
                    );
                }
                http_services.push(http);
            }
        }
        services.push(service);
    }
    for (l, listener) in config.http_listeners.iter().zip(http_listeners) {
        let routes = Arc::new(proxy::http::Routes::shared(l, &http_services, &metrics));
        let settings = proxy::http::ListenerSettings {
            idle_timeout: l.idle_timeout,
            tcp_keepalive: l.tcp_keepalive,
            keepalive_timeout: config.http_keepalive_timeout,
        };
        let span = tracing::info_span!("http_listener", listen = %l.listen);
        info!(listen = %l.listen, routes = l.routes.len(), "listening (shared HTTP)");
        background.spawn(
            proxy::http::serve(listener, routes, settings, connections.clone(), shutdown.clone())
                .instrument(span),
        );
    }
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
