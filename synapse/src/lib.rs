//! synapse: the router agent. It watches service paths in ZooKeeper and serves each service
//! on a local port through an embedded TCP or HTTP load balancer.
//!
//! Layout:
//! - [`config`]: the config file, raw → validated.
//! - [`service`]: one routed service as everything shares it: config, published snapshot,
//!   metric handles, outlier detector, connection limit.
//! - [`service::watcher`]: per service, the watcher task (the single writer): ZooKeeper
//!   updates, debounced, → a pure plan of the next snapshot → one apply.
//! - [`filter`]: what a table is built from: label filters, default servers, previous
//!   backends, locality (pure).
//! - [`backend`]: the model's leaf: one backend's live state (active counts, latency,
//!   ejection, closing token, metric handles, the data path's opaque slot), carried across
//!   tables (hot path).
//! - [`table`]: immutable route tables (backends + balancer + panic state) (hot path).
//! - [`balance`]: balancing policies (round-robin, least-conn, random, p2c-EWMA, Maglev
//!   hash), weights, backups, per-backend live state (hot path, pure).
//! - [`outlier`]: passive outlier ejection (consecutive failures, growing capped ejection
//!   time, maximum ejected share) and the panic threshold: the `Detector`, above the table.
//! - [`proxy`]: the data path (hot path): [`proxy::tcp`] (accept loop with
//!   `max_connections`, per-connection TCP proxying) and [`proxy::http`] (HTTP server to
//!   clients, pooled keep-alive connections to backends, retries, timeouts, upgrades).
//! - [`router`]: Host / path-prefix routing of shared HTTP listeners (hot path).
//! - [`reload`]: SIGHUP reloads as a pure diff of two configs (`plan(old, new)`).
//! - [`supervisor`]: the running services, listeners and sockets; applies reload plans.
//! - [`cache`]: the state file (last known backends, to start while ZooKeeper is down).
//! - [`file_output`]: per-service JSON backend lists.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: `GET /ready`, `GET /services`, `GET /stats`, `GET /metrics`.
//! - [`stats`]: the HTML stats page.
//!
//! Data flow: ZooKeeper event → `common::registry::watch` → member map (debounced) →
//! filters (availability, labels) and fallbacks (default servers, previous backends),
//! locality → `RouteTable::build` (balancer included) → `ArcSwap::store` → the next
//! connection loads it and asks its balancer for backends; the state file and `file_output`
//! writers follow the installs.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod balance;
pub mod cache;
pub mod config;
pub mod file_output;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod outlier;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod service;
pub mod stats;
pub mod supervisor;
pub mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use common::cli::RunContext;
use common::registry::{Registry, RegistryOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    /// The `file_output` directory cannot be created.
    #[error(transparent)]
    FileOutput(#[from] file_output::FileOutputError),
}

/// Runs synapse until `ctx.shutdown` fires, reloading `ctx.config_file` on each reload
/// request; then stops accepting, lets in-flight connections finish up to the drain
/// timeout, and returns.
pub async fn run(config: Config, ctx: RunContext) -> Result<(), RunError> {
    let RunContext {
        shutdown,
        mut reload,
        config_file,
    } = ctx;
    let prometheus = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&prometheus)?;
    let admin_listener = common::admin::bind(config.admin_listen).await?;
    let mut listeners = Vec::new();
    for svc in &config.services {
        listeners.push(supervisor::bind(svc).await?);
    }
    if let Some(out) = &config.file_output {
        file_output::prepare(&out.dir)?;
    }
    let loaded = match &config.state_file {
        Some(f) => match cache::load(&f.path) {
            Ok(l) => l,
            Err(err) => {
                warn!(error = %err, "state file not used");
                cache::Loaded::default()
            }
        },
        None => cache::Loaded::default(),
    };
    let mut cached = HashMap::new();
    if let Some(f) = &config.state_file {
        for svc in &config.services {
            if let Some(e) = loaded.usable(svc, f.ttl, SystemTime::now()) {
                cached.insert(svc.name.clone(), e.members.clone());
            }
        }
    }
    let http_listeners = supervisor::bind_shared(&config).await?;

    let mut options = RegistryOptions {
        session_timeout: config.zk_session_timeout,
        // synapse holds no ephemeral node: a lagging session is cheaply replaced.
        replace_lagging_session: true,
        ..Default::default()
    };
    config.zk_session.apply(&mut options);
    let registry = Registry::new(options, shutdown.clone());
    let service_count = config.services.len();
    let state_file = config.state_file.clone();
    let output = config.file_output.clone();
    let mut sup = supervisor::Supervisor::new(config, metrics.clone(), registry, shutdown.clone());
    sup.start(listeners, http_listeners, cached);
    let writers_stop = CancellationToken::new();
    let mut writers = Vec::new();
    if let Some(f) = state_file {
        let (services, installed, m, stop) = (
            sup.services(),
            sup.installed(),
            metrics.clone(),
            writers_stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            cache::run_writer(f, services, installed, &loaded, m, stop).await
        }));
    }
    if let Some(out) = output {
        let (services, installed, m, stop) = (
            sup.services(),
            sup.installed(),
            metrics.clone(),
            writers_stop.clone(),
        );
        writers.push(tokio::spawn(file_output::run_writer(
            out.dir, services, installed, m, stop,
        )));
    }
    // ZooKeeper connection metrics and systemd readiness (READY=1 after the first sync of
    // every service), for the services of the config synapse started with.
    let started = sup.services().load_full();
    let zk = started
        .iter()
        .filter_map(|s| Some((s.config.zk_hosts.clone(), s.session.clone()?)));
    common::metrics::zk_sessions("synapse", &prometheus, zk)?;
    let first_syncs = started.iter().map(|s| {
        let mut synced = s.first_sync.subscribe();
        (s.config.name.clone(), async move {
            let _ = synced.wait_for(|v| *v).await;
        })
    });
    tokio::spawn(common::notify::ready_after("first sync", first_syncs.collect()));
    let admin_cancel = CancellationToken::new();
    let handler = admin::handler(sup.services(), prometheus);
    let admin_task = tokio::spawn(common::admin::serve(
        admin_listener,
        handler,
        admin_cancel.clone(),
    ));
    info!(services = service_count, "synapse started");

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = reload.next() => {
                let outcome = sup.reload(&config_file).await.map_err(|e| e.to_string());
                request.finish(outcome);
            }
        }
    }
    sup.shutdown().await;
    writers_stop.cancel();
    for w in writers {
        let _ = w.await;
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    info!("synapse stopped");
    Ok(())
}
