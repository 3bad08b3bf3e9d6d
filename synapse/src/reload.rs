//! The running services and their listeners, and config reloads (SIGHUP) as a diff.
//!
//! A reload reads and validates the file; an invalid file is refused, every problem logged,
//! and the running config goes on. A valid one is compared with the running config, service
//! by service (by name):
//!
//! - **unchanged**: untouched (same socket, same watcher, same table);
//! - **changed, same ZooKeeper location**: its watcher switches to a successor [`Service`]
//!   with the new settings and rebuilds the table, keeping members and backend states; the
//!   accept loop is replaced by one serving the successor, on the same socket when `listen`
//!   did not change (connections in the backlog are not lost; open connections go on);
//! - **changed ZooKeeper location**: a new watcher (and service) replaces the old one, which
//!   is retired like a removed one (the socket is handed over when `listen` is the same);
//! - **removed**: its listener stops accepting at once and closes, its watcher stops, and
//!   its open connections get `drain_timeout`, then are closed;
//! - **added**: a listener and a watcher start.
//!
//! Sockets are taken before anything changes: a new `listen` reuses a socket the running
//! config holds for exactly that address (so services may swap ports in one reload), else
//! is bound; if any bind fails the reload is refused as a whole and nothing changes.
//! Top-level keys other than `drain_timeout` and the services' defaults (`zookeeper`,
//! `admin`, `log`, `state_file`, `file_output`) need a restart: a change is logged and
//! ignored.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use common::codec::Node;
use common::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, ServiceConfig};
use crate::metrics::Metrics;
use crate::service::{self, Control, Service, WatchContext};
use crate::RunError;

/// The services being routed, as the admin API and the file writers see them.
pub type Services = Arc<ArcSwap<Vec<Arc<Service>>>>;

/// One running service.
#[derive(Debug)]
struct Running {
    service: Arc<Service>,
    listener: Arc<TcpListener>,
    /// Stops the current accept loop (a reload may start another on the same socket).
    accept_stop: CancellationToken,
    /// Stops the watcher.
    watcher_stop: CancellationToken,
    /// Seen by the connections (a connection waiting for a first sync gives up when it
    /// fires).
    conn_cancel: CancellationToken,
    control: mpsc::Sender<Control>,
    connections: TaskTracker,
}

/// Owns the running services; applies reloads.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    metrics: Metrics,
    registry: Registry,
    shutdown: CancellationToken,
    running: BTreeMap<String, Running>,
    services: Services,
    installed: watch::Sender<u64>,
    /// Accept loops and watchers.
    tasks: TaskTracker,
    /// Services being retired (draining).
    retiring: TaskTracker,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is not a valid config.
    #[error(transparent)]
    Config(#[from] common::config::ConfigError),
    /// A new listener could not bind.
    #[error("cannot listen on {addr} for service {service}: {source}")]
    Listen {
        /// The service.
        service: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds a service's listener.
pub async fn bind(svc: &ServiceConfig) -> Result<TcpListener, RunError> {
    TcpListener::bind(svc.listen)
        .await
        .map_err(|source| RunError::Listen {
            service: svc.name.clone(),
            addr: svc.listen,
            source,
        })
}

impl Supervisor {
    /// A supervisor for `config` with no service running yet.
    pub fn new(
        config: Config,
        metrics: Metrics,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> Supervisor {
        Supervisor {
            config,
            metrics,
            registry,
            shutdown,
            running: BTreeMap::new(),
            services: Services::default(),
            installed: watch::Sender::new(0),
            tasks: TaskTracker::new(),
            retiring: TaskTracker::new(),
        }
    }

    /// The services being routed (shared, follows reloads).
    pub fn services(&self) -> Services {
        self.services.clone()
    }

    /// Bumped after every table install and every reload.
    pub fn installed(&self) -> watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Starts every service of the config on its bound listener, seeded from the state
    /// file's members where given.
    pub fn start(&mut self, listeners: Vec<TcpListener>, mut cached: HashMap<String, Vec<(String, Node)>>) {
        let configs = self.config.services.clone();
        for (svc, listener) in configs.into_iter().zip(listeners) {
            let seed = cached.remove(&svc.name);
            self.start_service(svc, Arc::new(listener), seed, TaskTracker::new());
        }
        self.publish();
    }

    fn start_service(
        &mut self,
        svc: ServiceConfig,
        listener: Arc<TcpListener>,
        cached: Option<Vec<(String, Node)>>,
        connections: TaskTracker,
    ) {
        let session = self.registry.session(&svc.zk_hosts);
        let service = Arc::new(Service::new(
            svc.clone(),
            self.metrics.service(&svc.name),
            Some(session.clone()),
        ));
        let (control, control_rx) = mpsc::channel(4);
        let watcher_stop = self.shutdown.child_token();
        let span = tracing::info_span!("service", service = %svc.name, zk.path = %svc.zk_path);
        let ctx = WatchContext {
            session,
            metrics: self.metrics.clone(),
            control: control_rx,
            installed: self.installed.clone(),
            cached,
        };
        self.tasks
            .spawn(service::watch_loop(service.clone(), ctx, watcher_stop.clone()).instrument(span));
        let mut running = Running {
            service,
            listener,
            accept_stop: CancellationToken::new(),
            watcher_stop,
            conn_cancel: self.shutdown.child_token(),
            control,
            connections,
        };
        self.spawn_accept(&mut running);
        info!(service = %svc.name, listen = %svc.listen, "listening");
        self.running.insert(svc.name, running);
    }

    /// (Re)starts the accept loop of `r` on its listener, for its current service.
    fn spawn_accept(&self, r: &mut Running) {
        r.accept_stop.cancel();
        r.accept_stop = self.shutdown.child_token();
        let stop = r.accept_stop.clone();
        let serve = crate::proxy::serve(
            r.listener.clone(),
            r.service.clone(),
            r.connections.clone(),
            r.conn_cancel.clone(),
        );
        let span = tracing::info_span!("service", service = %r.service.config.name, zk.path = %r.service.config.zk_path);
        self.tasks.spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = serve => {}
                }
            }
            .instrument(span),
        );
    }

    /// Publishes the list of services (config order) to the admin API and file writers.
    fn publish(&self) {
        let list: Vec<Arc<Service>> = self
            .config
            .services
            .iter()
            .filter_map(|s| self.running.get(&s.name).map(|r| r.service.clone()))
            .collect();
        self.services.store(Arc::new(list));
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reads `file` and applies it. `Err` when it was refused (the running config goes on).
    pub async fn reload(&mut self, file: &Path) -> Result<(), ReloadError> {
        let result = self.try_reload(file).await;
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => {}
            Err(ReloadError::Config(e)) => {
                for p in &e.problems {
                    error!(file = %e.file.display(), problem = %p, "config reload refused");
                }
            }
            Err(e) => error!(error = %e, "config reload refused"),
        }
        result
    }

    async fn try_reload(&mut self, file: &Path) -> Result<(), ReloadError> {
        let new = Config::load(file)?;
        // Sockets first, so that a failure changes nothing.
        let held: HashMap<SocketAddr, Arc<TcpListener>> = self
            .running
            .values()
            .map(|r| (r.service.config.listen, r.listener.clone()))
            .collect();
        let mut sockets: HashMap<String, Arc<TcpListener>> = HashMap::new();
        for svc in &new.services {
            let socket =
                match held.get(&svc.listen) {
                    Some(l) => l.clone(),
                    None => Arc::new(TcpListener::bind(svc.listen).await.map_err(|source| {
                        ReloadError::Listen {
                            service: svc.name.clone(),
                            addr: svc.listen,
                            source,
                        }
                    })?),
                };
            sockets.insert(svc.name.clone(), socket);
        }
        self.warn_restart_only(&new);
        let old = std::mem::replace(&mut self.config, new);
        self.config.zk_session_timeout = old.zk_session_timeout;
        self.config.admin_listen = old.admin_listen;
        self.config.log = old.log.clone();
        self.config.state_file = old.state_file.clone();
        self.config.file_output = old.file_output.clone();
        let wanted: BTreeMap<String, ServiceConfig> = self
            .config
            .services
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let (mut added, mut changed, mut removed, mut unchanged) = (0, 0, 0, 0);
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let Some(svc) = wanted.get(&name) else {
                if let Some(r) = self.running.remove(&name) {
                    info!(service = %name, "reload: service removed; draining its connections");
                    self.retire(r, true);
                    removed += 1;
                }
                continue;
            };
            let Some(mut r) = self.running.remove(&name) else {
                continue;
            };
            if r.service.config == *svc {
                unchanged += 1;
                self.running.insert(name, r);
                continue;
            }
            changed += 1;
            let socket = sockets.get(&name).cloned().unwrap_or_else(|| r.listener.clone());
            let same_zk =
                r.service.config.zk_hosts == svc.zk_hosts && r.service.config.zk_path == svc.zk_path;
            if same_zk {
                info!(service = %name, listen = %svc.listen, "reload: service changed; new settings");
                let next = Arc::new(Service::succeed(
                    &r.service,
                    svc.clone(),
                    self.metrics.service(&name),
                ));
                if r.control.send(Control::Replace(next.clone())).await.is_err() {
                    warn!(service = %name, "reload: the service's watcher is gone");
                }
                r.service = next;
                r.listener = socket;
                self.spawn_accept(&mut r);
                self.running.insert(name, r);
            } else {
                info!(service = %name, zk.path = %svc.zk_path, "reload: service moved to another ZooKeeper path; new watcher");
                self.retire(r, false);
                self.start_service(svc.clone(), socket, None, TaskTracker::new());
            }
        }
        for svc in &self.config.services.clone() {
            if self.running.contains_key(&svc.name) {
                continue;
            }
            let Some(socket) = sockets.get(&svc.name).cloned() else {
                continue;
            };
            info!(service = %svc.name, "reload: service added");
            self.start_service(svc.clone(), socket, None, TaskTracker::new());
            added += 1;
        }
        self.publish();
        info!(added, changed, removed, unchanged, "config reloaded");
        Ok(())
    }

    fn warn_restart_only(&self, new: &Config) {
        let old = &self.config;
        let mut ignored = Vec::new();
        if new.zk_session_timeout != old.zk_session_timeout {
            ignored.push("zookeeper.session_timeout");
        }
        if new.admin_listen != old.admin_listen {
            ignored.push("admin.listen");
        }
        if new.log.level != old.log.level || new.log.format != old.log.format {
            ignored.push("log");
        }
        if new.state_file != old.state_file {
            ignored.push("state_file");
        }
        if new.file_output != old.file_output {
            ignored.push("file_output");
        }
        if !ignored.is_empty() {
            warn!(keys = ?ignored, "reload: these keys changed but take effect only at restart; kept as they were");
        }
    }

    /// Stops a service: no more accepting, no more watching; its connections get
    /// `drain_timeout`, then are closed. `forget`: also drop its metric series (its name
    /// is gone from the config).
    fn retire(&self, r: Running, forget: bool) {
        r.accept_stop.cancel();
        r.watcher_stop.cancel();
        r.conn_cancel.cancel();
        let drain = self.config.drain_timeout;
        let metrics = self.metrics.clone();
        let services = self.services.clone();
        let name = r.service.config.name.clone();
        self.retiring.spawn(async move {
            // The socket closes once the accept loop has let go of it (unless a new
            // service took it over).
            drop(r.listener);
            r.connections.close();
            let open = r.connections.len();
            if open > 0 {
                info!(service = %name, open, deadline = ?drain, "retired service: draining connections");
            }
            // Also at shutdown: the agent's drain waits for this one.
            if tokio::time::timeout(drain, r.connections.wait()).await.is_err() {
                warn!(service = %name, open = r.connections.len(), "retired service: drain deadline passed; closing its connections");
                r.service.close_connections();
            }
            // A later reload may have brought the name back: its series are live again.
            let back = services.load().iter().any(|s| s.config.name == name);
            if forget && !back {
                let table = r.service.table.load();
                for b in table.backends() {
                    metrics.forget_backend(&name, &b.state.key);
                }
                for d in r.service.draining() {
                    metrics.forget_backend(&name, &d.state.key);
                }
                metrics.forget_service(&name);
            }
        });
    }

    /// Shutdown: stops accepting and watching, then waits up to `drain_timeout` for the
    /// open connections (of running and retired services).
    pub async fn shutdown(self) {
        self.tasks.close();
        self.tasks.wait().await;
        let trackers: Vec<TaskTracker> = self.running.values().map(|r| r.connections.clone()).collect();
        for t in &trackers {
            t.close();
        }
        let open: usize = trackers.iter().map(TaskTracker::len).sum();
        let deadline = self.config.drain_timeout;
        if open > 0 {
            info!(open, ?deadline, "draining connections");
        }
        let all = async {
            for t in &trackers {
                t.wait().await;
            }
            self.retiring.close();
            self.retiring.wait().await;
        };
        if tokio::time::timeout(deadline, all).await.is_err() {
            let open: usize = trackers.iter().map(TaskTracker::len).sum();
            warn!(open, "drain deadline passed; closing remaining connections");
        }
    }

    /// How long a drain may take (for the caller's logs).
    pub fn drain_timeout(&self) -> Duration {
        self.config.drain_timeout
    }
}
