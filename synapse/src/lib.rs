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
//! - [`control`]: the control thread (`synapse-control`): its own runtime for everything
//!   but the data path (watchers and ZooKeeper, admin server, writers).
//! - [`handoff`]: upgrades: sockets and routes taken from a predecessor (`--takeover`) or
//!   systemd (`LISTEN_FDS`), and handed to a successor.
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
pub mod control;
pub mod file_output;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
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
use std::os::fd::AsFd;
use std::sync::Arc;
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
    /// The control thread could not start.
    #[error("cannot start the control thread: {0}")]
    Control(std::io::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The `file_output` directory cannot be created.
    #[error(transparent)]
    FileOutput(#[from] file_output::FileOutputError),
    /// `--takeover` failed (refused by the running synapse, or its state was unusable): this
    /// process exits, the running one serves on.
    #[error("takeover failed: {0}")]
    Takeover(String),
}

/// How long a running synapse waits for a successor it handed its sockets to to say it
/// serves (its services start at once, from the handed-over routes).
const SUCCESSOR_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs synapse until `ctx.shutdown` fires, reloading `ctx.config_file` on each reload
/// request; then stops accepting, lets in-flight connections finish up to the drain
/// timeout, and returns.
pub async fn run(config: Config, ctx: RunContext) -> Result<(), RunError> {
    run_upgradable(config, ctx, handoff::Upgrade::default()).await
}

/// [`run`], starting from inherited sockets (systemd) or a predecessor's (`--takeover`),
/// and handing over to a successor that connects to `upgrade_socket` (then returning once
/// the old connections are drained, as after a shutdown).
pub async fn run_upgradable(
    config: Config,
    ctx: RunContext,
    upgrade: handoff::Upgrade,
) -> Result<(), RunError> {
    let RunContext {
        shutdown,
        mut reload,
        config_file,
    } = ctx;
    let handoff::Upgrade {
        takeover,
        mut inherited,
    } = upgrade;
    if !inherited.is_empty() {
        info!(
            sockets = inherited.len(),
            "using the listening sockets passed by the service manager"
        );
    }
    let mut predecessor = None;
    if takeover {
        let Some(path) = &config.upgrade_socket else {
            return Err(RunError::Takeover(
                "--takeover needs `upgrade_socket` in the config (the running synapse's)".to_string(),
            ));
        };
        predecessor = handoff::take_over(path, &mut inherited).await?;
    }
    let prometheus = prometheus::Registry::new();
    let metrics = metrics::Metrics::new(&prometheus)?;
    let admin_listener =
        match inherited
            .inherited(config.admin_listen)
            .map_err(|source| common::admin::AdminBindError {
                addr: config.admin_listen,
                source,
            })? {
            Some(l) => l,
            None => common::admin::bind(config.admin_listen).await?,
        };
    // Served by the control thread: registered with its reactor there (below).
    let admin_listener = admin_listener
        .into_std()
        .map_err(|source| common::admin::AdminBindError {
            addr: config.admin_listen,
            source,
        })?;
    // Kept to hand over: the admin server owns the listener.
    let admin_fd =
        admin_listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| common::admin::AdminBindError {
                addr: config.admin_listen,
                source,
            })?;
    let mut listeners = Vec::new();
    for svc in &config.services {
        let listener = match svc.listen {
            None => None,
            Some(addr) => Some(
                inherited
                    .listener(addr)
                    .await
                    .map_err(|source| RunError::Listen {
                        service: svc.name.clone(),
                        addr,
                        source,
                    })?,
            ),
        };
        listeners.push(listener);
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
    // The predecessor's members are fresher than the state file's.
    for svc in &config.services {
        if let Some(members) = inherited.members.remove(&svc.name) {
            if !members.is_empty() {
                cached.insert(svc.name.clone(), members);
            }
        }
    }
    let mut http_listeners = Vec::new();
    for (index, l) in config.http_listeners.iter().enumerate() {
        let listener = inherited
            .listener(l.listen)
            .await
            .map_err(|source| RunError::HttpListen {
                index,
                addr: l.listen,
                source,
            })?;
        http_listeners.push(listener);
    }
    inherited.close_unused();

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
    let (upgrade_socket, admin_listen) = (config.upgrade_socket.clone(), config.admin_listen);
    // Everything but the data path runs on the control thread; this runtime keeps the
    // listeners, connections, pool sweepers, reloads, signals and upgrades.
    let control = control::ControlThread::start().map_err(RunError::Control)?;
    let ctl = control.handle().clone();
    let admin_listener = {
        let _control = ctl.enter();
        tokio::net::TcpListener::from_std(admin_listener).map_err(|source| common::admin::AdminBindError {
            addr: admin_listen,
            source,
        })?
    };
    let mut sup =
        supervisor::Supervisor::new(config, metrics.clone(), registry, shutdown.clone(), ctl.clone());
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
        writers.push(
            ctl.spawn(async move { cache::run_writer(f, services, installed, &loaded, m, stop).await }),
        );
    }
    if let Some(out) = output {
        let (services, installed, m, stop) = (
            sup.services(),
            sup.installed(),
            metrics.clone(),
            writers_stop.clone(),
        );
        writers.push(ctl.spawn(file_output::run_writer(out.dir, services, installed, m, stop)));
    }
    // ZooKeeper connection metrics and systemd readiness (READY=1 after the first sync of
    // every service), for the services of the config synapse started with.
    let started = sup.services().load_full();
    let zk = started
        .iter()
        .filter_map(|s| Some((s.config.zk_hosts.clone(), s.session.clone()?)));
    {
        // Its tasks follow the sessions: on the control thread.
        let _control = ctl.enter();
        common::metrics::zk_sessions("synapse", &prometheus, zk)?;
    }
    let first_syncs = started.iter().map(|s| {
        let mut synced = s.first_sync.subscribe();
        (s.config.name.clone(), async move {
            let _ = synced.wait_for(|v| *v).await;
        })
    });
    ctl.spawn(common::notify::ready_after("first sync", first_syncs.collect()));
    let admin_cancel = CancellationToken::new();
    let handler = admin::handler(sup.services(), prometheus, metrics.clone());
    let admin_task = ctl.spawn(common::admin::serve(
        admin_listener,
        handler,
        admin_cancel.clone(),
    ));
    info!(services = service_count, "synapse started");
    if let Some(mut p) = predecessor {
        let old_pid = p.old_pid;
        match tokio::task::spawn_blocking(move || p.ready()).await {
            Ok(Ok(())) => info!(
                old_pid,
                "takeover done: the previous synapse stops accepting, drains and exits"
            ),
            Ok(Err(e)) => {
                warn!(old_pid, error = %e, "takeover: the previous synapse did not confirm; serving anyway")
            }
            Err(e) => warn!(old_pid, error = %e, "takeover: confirmation task failed; serving anyway"),
        }
    }
    let (mut upgrades, mut arrivals) = Upgrades::start(upgrade_socket.as_deref());

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = reload.next() => {
                let outcome = sup.reload(&config_file).await.map_err(|e| e.to_string());
                request.finish(outcome);
            }
            Some(successor) = arrivals.recv() => upgrades.offer(successor, &sup, admin_listen, &admin_fd),
            handed = upgrades.finished() => if handed {
                shutdown.cancel();
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
    upgrades.stop();
    control.stop().await;
    info!("synapse stopped");
    Ok(())
}

/// The upgrade socket's side of the main loop: successors arrive, one is served at a time.
struct Upgrades {
    socket: Option<Arc<common::handoff::UpgradeSocket>>,
    acceptor: Option<tokio::task::JoinHandle<()>>,
    /// The handoff under way.
    handing: Option<
        tokio::task::JoinHandle<(
            common::handoff::Successor,
            Result<(), common::handoff::HandoffError>,
        )>,
    >,
    /// The successor served: kept (connected) until this process ends, which it sees.
    handed: Option<common::handoff::Successor>,
}

impl Upgrades {
    /// Listens on `path` (if any); successors arrive on the receiver.
    fn start(
        path: Option<&std::path::Path>,
    ) -> (Upgrades, tokio::sync::mpsc::Receiver<common::handoff::Successor>) {
        let (tx, arrivals) = tokio::sync::mpsc::channel(1);
        let socket = path.and_then(|p| match common::handoff::UpgradeSocket::bind(p) {
            Ok(s) => {
                info!(upgrade_socket = %p.display(), "listening for a successor (--takeover)");
                Some(Arc::new(s))
            }
            Err(e) => {
                warn!(error = %e, "upgrades by --takeover are disabled");
                None
            }
        });
        let acceptor = socket.clone().map(|s| {
            tokio::spawn(async move {
                loop {
                    let successor = s.accept().await;
                    if tx.send(successor).await.is_err() {
                        return;
                    }
                }
            })
        });
        let upgrades = Upgrades {
            socket,
            acceptor,
            handing: None,
            handed: None,
        };
        (upgrades, arrivals)
    }

    /// Hands the sockets and routes to `successor`, unless a handoff is under way or done.
    fn offer(
        &mut self,
        mut successor: common::handoff::Successor,
        sup: &supervisor::Supervisor,
        admin_listen: SocketAddr,
        admin: &std::os::fd::OwnedFd,
    ) {
        let pid = successor.pid;
        if self.handing.is_some() || self.handed.is_some() {
            warn!(
                successor_pid = pid,
                "takeover refused: another takeover is in progress"
            );
            tokio::task::spawn_blocking(move || {
                successor.refuse("another takeover is in progress; this one loses");
            });
            return;
        }
        info!(
            successor_pid = pid,
            "takeover requested: handing the listening sockets and routes over"
        );
        let held = sup.listeners();
        let mut fds: Vec<(SocketAddr, &dyn std::os::fd::AsFd)> = held
            .iter()
            .map(|(addr, l)| (*addr, &**l as &dyn std::os::fd::AsFd))
            .collect();
        fds.push((admin_listen, admin));
        let services = sup.services().load_full();
        let (state, fds) = match handoff::package(&fds, &services) {
            Ok(p) => p,
            Err(e) => {
                warn!(successor_pid = pid, error = %e, "takeover refused: cannot duplicate the sockets");
                let reason = format!("the running synapse cannot duplicate its sockets: {e}");
                tokio::task::spawn_blocking(move || successor.refuse(&reason));
                return;
            }
        };
        let socket = self.socket.clone();
        self.handing = Some(tokio::task::spawn_blocking(move || {
            let result = successor
                .offer(state, &common::handoff::borrow_all(&fds))
                .and_then(|()| successor.wait_ready(SUCCESSOR_READY_TIMEOUT))
                .and_then(|()| {
                    // The successor binds the path once told we stop: it must be free then.
                    if let Some(s) = &socket {
                        s.unlink();
                    }
                    successor.stopping()
                });
            (successor, result)
        }));
    }

    /// The handoff under way ended: true when the successor serves (this process must stop
    /// accepting and drain).
    async fn finished(&mut self) -> bool {
        let Some(handing) = &mut self.handing else {
            return std::future::pending().await;
        };
        let joined = handing.await;
        self.handing = None;
        match joined {
            Ok((successor, Ok(()))) => {
                info!(
                    successor_pid = successor.pid,
                    "the successor serves: stopping accepting, draining, then exiting"
                );
                common::notify::main_pid(successor.pid);
                self.handed = Some(successor);
                true
            }
            Ok((successor, Err(e))) => {
                warn!(successor_pid = successor.pid, error = %e, "takeover abandoned: serving on");
                false
            }
            Err(e) => {
                warn!(error = %e, "takeover task failed: serving on");
                false
            }
        }
    }

    fn stop(mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
        }
    }
}
