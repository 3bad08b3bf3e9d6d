//! The running services and their listeners: started from the config, changed by reloads
//! (the diff is [`crate::reload::plan`]; this module applies it), retired, and drained at
//! shutdown.
//!
//! A reload reads and validates the file; an invalid file is refused, every problem logged,
//! and the running config goes on. Sockets are taken before anything changes: a new
//! `listen` reuses a socket the running config holds for exactly that address (so services
//! may swap ports in one reload), else is bound; if any bind fails the reload is refused as a
//! whole and nothing changes. Then the plan is applied, service by service, then the shared
//! HTTP listeners.

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

use crate::config::{Config, HttpListenerConfig, Mode, ServiceConfig};
use crate::metrics::Metrics;
use crate::proxy::http::{self, HttpService, ListenerSettings, Routes, SharedRoutes};
use crate::reload::{self, ListenerAction, ServiceAction};
use crate::service::watcher::{self, Control, WatchContext};
use crate::service::Service;
use crate::RunError;

/// The services being routed, as the admin API and the file writers see them.
pub type Services = Arc<ArcSwap<Vec<Arc<Service>>>>;

/// One running service.
#[derive(Debug)]
struct Running {
    service: Arc<Service>,
    /// Its own listener; none for an HTTP service reached through shared listeners only.
    listener: Option<Arc<TcpListener>>,
    /// `mode: http` only.
    http: Option<HttpParts>,
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

/// What a `mode: http` service adds.
#[derive(Debug)]
struct HttpParts {
    service: Arc<HttpService>,
    /// Its own listener's routes (`Routes::Service`), swapped when the service changes.
    routes: SharedRoutes,
    /// Stops the pool sweeper.
    sweep_stop: CancellationToken,
}

/// One shared HTTP listener (`http_listeners[]`).
#[derive(Debug)]
struct Shared {
    config: HttpListenerConfig,
    listener: Arc<TcpListener>,
    routes: SharedRoutes,
    accept_stop: CancellationToken,
    conn_cancel: CancellationToken,
    connections: TaskTracker,
}

/// Owns the running services; applies reloads.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    metrics: Metrics,
    registry: Registry,
    shutdown: CancellationToken,
    /// The control thread's runtime: watchers and ZooKeeper sessions run there, never on
    /// the data path's (see [`crate::control`]).
    control: tokio::runtime::Handle,
    running: BTreeMap<String, Running>,
    /// Shared HTTP listeners by address.
    shared: BTreeMap<SocketAddr, Shared>,
    services: Services,
    installed: watch::Sender<u64>,
    /// Accept loops, pool sweepers (data runtime) and watchers (control runtime).
    tasks: TaskTracker,
    /// Services being retired (draining).
    retiring: TaskTracker,
    /// At shutdown: the connections of the shared listeners already closed.
    closed: Vec<TaskTracker>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is not a valid config.
    #[error(transparent)]
    Config(#[from] common::config::ConfigError),
    /// A new listener could not bind.
    #[error("cannot listen on {addr} for {owner}: {source}")]
    Listen {
        /// The service, or the shared HTTP listener.
        owner: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds a service's own listener (none for a service without `listen`).
pub async fn bind(svc: &ServiceConfig) -> Result<Option<TcpListener>, RunError> {
    let Some(addr) = svc.listen else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| RunError::Listen {
            service: svc.name.clone(),
            addr,
            source,
        })
}

/// Binds the shared HTTP listeners.
pub async fn bind_shared(config: &Config) -> Result<Vec<TcpListener>, RunError> {
    let mut out = Vec::new();
    for (index, l) in config.http_listeners.iter().enumerate() {
        let listener = TcpListener::bind(l.listen)
            .await
            .map_err(|source| RunError::HttpListen {
                index,
                addr: l.listen,
                source,
            })?;
        out.push(listener);
    }
    Ok(out)
}

/// The connection settings of a listener serving `svc`, or of a shared one.
fn settings(idle_timeout: Duration, tcp_keepalive: Duration, config: &Config) -> ListenerSettings {
    ListenerSettings {
        idle_timeout,
        tcp_keepalive,
        keepalive_timeout: config.http_keepalive_timeout,
    }
}

fn listener_addr(l: &TcpListener) -> String {
    l.local_addr()
        .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string())
}

/// Sweeps the pools of the HTTP service its routes name, until `stop`.
async fn sweep_loop(routes: SharedRoutes, stop: CancellationToken) {
    loop {
        let Routes::Service(current) = &**routes.load() else {
            return;
        };
        let current = current.clone();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(current.sweep_period()) => {}
        }
        // The routes may have moved on to a successor meanwhile: sweep the current one.
        if let Routes::Service(now) = &**routes.load() {
            now.sweep();
        }
    }
}

impl Supervisor {
    /// A supervisor for `config` with no service running yet. Listeners, accept loops and
    /// pool sweepers run on the caller's runtime; watchers (and the ZooKeeper sessions they
    /// start) on `control`'s.
    pub fn new(
        config: Config,
        metrics: Metrics,
        registry: Registry,
        shutdown: CancellationToken,
        control: tokio::runtime::Handle,
    ) -> Supervisor {
        Supervisor {
            config,
            metrics,
            registry,
            shutdown,
            control,
            running: BTreeMap::new(),
            shared: BTreeMap::new(),
            services: Services::default(),
            installed: watch::Sender::new(0),
            tasks: TaskTracker::new(),
            retiring: TaskTracker::new(),
            closed: Vec::new(),
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

    /// Starts every service of the config on its bound listener (from [`bind`]), and the
    /// shared HTTP listeners (from [`bind_shared`]), seeded from the state file's members
    /// where given.
    pub fn start(
        &mut self,
        listeners: Vec<Option<TcpListener>>,
        shared: Vec<TcpListener>,
        mut cached: HashMap<String, Vec<(String, Node)>>,
    ) {
        let configs = self.config.services.clone();
        for (svc, listener) in configs.into_iter().zip(listeners) {
            let seed = cached.remove(&svc.name);
            self.start_service(svc, listener.map(Arc::new), seed, TaskTracker::new());
        }
        let shared_configs = self.config.http_listeners.clone();
        for (config, listener) in shared_configs.into_iter().zip(shared) {
            self.start_shared(config, Arc::new(listener));
        }
        self.publish();
    }

    fn start_service(
        &mut self,
        svc: ServiceConfig,
        listener: Option<Arc<TcpListener>>,
        cached: Option<Vec<(String, Node)>>,
        connections: TaskTracker,
    ) {
        // A new session's task starts on the control runtime, like the watcher.
        let session = {
            let _control = self.control.enter();
            self.registry.session(&svc.zk_hosts)
        };
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
        let watch = watcher::watch_loop(service.clone(), ctx, watcher_stop.clone()).instrument(span);
        self.control.spawn(self.tasks.track_future(watch));
        let http = (svc.mode == Mode::Http).then(|| self.http_parts(&service));
        let mut running = Running {
            service,
            listener,
            http,
            accept_stop: CancellationToken::new(),
            watcher_stop,
            conn_cancel: self.shutdown.child_token(),
            control,
            connections,
        };
        self.spawn_accept(&mut running);
        self.running.insert(svc.name, running);
    }

    /// The HTTP side of `service` (its config says `mode: http`), pool sweeper started.
    fn http_parts(&self, service: &Arc<Service>) -> HttpParts {
        let http = Arc::new(HttpService::new(service.clone(), &self.metrics));
        let routes: SharedRoutes = Arc::new(ArcSwap::from_pointee(Routes::Service(http.clone())));
        let sweep_stop = self.shutdown.child_token();
        self.tasks.spawn(sweep_loop(routes.clone(), sweep_stop.clone()));
        HttpParts {
            service: http,
            routes,
            sweep_stop,
        }
    }

    /// (Re)starts the accept loop of `r` on its listener, for its current service.
    fn spawn_accept(&self, r: &mut Running) {
        r.accept_stop.cancel();
        r.accept_stop = self.shutdown.child_token();
        let Some(listener) = r.listener.clone() else {
            info!(service = %r.service.config.name, "no listen address: reached through http_listeners only");
            return;
        };
        let stop = r.accept_stop.clone();
        let config = &r.service.config;
        let span = tracing::info_span!("service", service = %config.name, zk.path = %config.zk_path);
        match &r.http {
            None => {
                info!(service = %config.name, listen = %listener_addr(&listener), mode = "tcp", "listening");
                let serve = crate::proxy::tcp::serve(
                    listener,
                    r.service.clone(),
                    r.connections.clone(),
                    r.conn_cancel.clone(),
                    stop,
                );
                self.tasks.spawn(serve.instrument(span));
            }
            Some(h) => {
                info!(service = %config.name, listen = %listener_addr(&listener), mode = "http", "listening");
                let serve = http::serve(
                    listener,
                    h.routes.clone(),
                    settings(config.idle_timeout, config.tcp_keepalive, &self.config),
                    r.connections.clone(),
                    r.conn_cancel.clone(),
                    stop,
                );
                self.tasks.spawn(serve.instrument(span));
            }
        }
    }

    fn start_shared(&mut self, config: HttpListenerConfig, listener: Arc<TcpListener>) {
        let routes: SharedRoutes = Arc::new(ArcSwap::from_pointee(self.shared_routes(&config)));
        let mut shared = Shared {
            config,
            listener,
            routes,
            accept_stop: CancellationToken::new(),
            conn_cancel: self.shutdown.child_token(),
            connections: TaskTracker::new(),
        };
        self.spawn_shared_accept(&mut shared);
        self.shared.insert(shared.config.listen, shared);
    }

    /// The routes of a shared listener over the running HTTP services.
    fn shared_routes(&self, config: &HttpListenerConfig) -> Routes {
        let services: Vec<Arc<HttpService>> = self
            .running
            .values()
            .filter_map(|r| r.http.as_ref().map(|h| h.service.clone()))
            .collect();
        Routes::shared(config, &services, &self.metrics)
    }

    fn spawn_shared_accept(&self, l: &mut Shared) {
        l.accept_stop.cancel();
        l.accept_stop = self.shutdown.child_token();
        info!(listen = %l.config.listen, routes = l.config.routes.len(), "listening (shared HTTP)");
        let span = tracing::info_span!("http_listener", listen = %l.config.listen);
        let serve = http::serve(
            l.listener.clone(),
            l.routes.clone(),
            settings(l.config.idle_timeout, l.config.tcp_keepalive, &self.config),
            l.connections.clone(),
            l.conn_cancel.clone(),
            l.accept_stop.clone(),
        );
        self.tasks.spawn(serve.instrument(span));
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
            .filter_map(|r| Some((r.service.config.listen?, r.listener.clone()?)))
            .chain(
                self.shared
                    .values()
                    .map(|l| (l.config.listen, l.listener.clone())),
            )
            .collect();
        let take = |addr: SocketAddr, owner: String| {
            let held = held.get(&addr).cloned();
            async move {
                match held {
                    Some(l) => Ok(l),
                    None => TcpListener::bind(addr)
                        .await
                        .map(Arc::new)
                        .map_err(|source| ReloadError::Listen { owner, addr, source }),
                }
            }
        };
        let mut sockets: HashMap<String, Arc<TcpListener>> = HashMap::new();
        for svc in &new.services {
            if let Some(addr) = svc.listen {
                let socket = take(addr, format!("service {}", svc.name)).await?;
                sockets.insert(svc.name.clone(), socket);
            }
        }
        let mut shared_sockets: HashMap<SocketAddr, Arc<TcpListener>> = HashMap::new();
        for (i, l) in new.http_listeners.iter().enumerate() {
            let socket = take(l.listen, format!("http_listeners[{i}]")).await?;
            shared_sockets.insert(l.listen, socket);
        }
        let plan = reload::plan(&self.config, &new);
        if !plan.restart_only.is_empty() {
            warn!(keys = ?plan.restart_only, "reload: these keys changed but take effect only at restart; kept as they were");
        }
        let old = std::mem::replace(&mut self.config, new);
        self.config.zk_session_timeout = old.zk_session_timeout;
        self.config.admin_listen = old.admin_listen;
        self.config.log = old.log.clone();
        self.config.state_file = old.state_file.clone();
        self.config.file_output = old.file_output.clone();
        let counts = plan.counts();
        for (name, action) in plan.services {
            self.apply_service(name, action, &sockets).await;
        }
        self.apply_listeners(plan.listeners, shared_sockets);
        if plan.keepalive_changed {
            // Own listeners of HTTP services carry the setting too.
            let names: Vec<String> = self.running.keys().cloned().collect();
            for name in names {
                if let Some(mut r) = self.running.remove(&name) {
                    if r.http.is_some() {
                        self.spawn_accept(&mut r);
                    }
                    self.running.insert(name, r);
                }
            }
        }
        self.publish();
        let reload::Counts {
            added,
            changed,
            removed,
            unchanged,
        } = counts;
        info!(added, changed, removed, unchanged, "config reloaded");
        Ok(())
    }

    /// Applies what the reload plan says of one service.
    async fn apply_service(
        &mut self,
        name: String,
        action: ServiceAction,
        sockets: &HashMap<String, Arc<TcpListener>>,
    ) {
        let socket = sockets.get(&name).cloned();
        match action {
            ServiceAction::Unchanged => {}
            ServiceAction::Remove => {
                if let Some(r) = self.running.remove(&name) {
                    info!(service = %name, "reload: service removed; draining its connections");
                    self.retire(r, true);
                }
            }
            ServiceAction::Add(svc) => {
                info!(service = %name, "reload: service added");
                self.start_service(svc, socket, None, TaskTracker::new());
            }
            ServiceAction::Move(svc) => {
                let Some(r) = self.running.remove(&name) else {
                    return;
                };
                info!(service = %name, zk.path = %svc.zk_path, "reload: service moved to another ZooKeeper path; new watcher");
                self.retire(r, false);
                self.start_service(svc, socket, None, TaskTracker::new());
            }
            ServiceAction::Update(svc) => {
                let Some(mut r) = self.running.remove(&name) else {
                    return;
                };
                info!(service = %name, "reload: service changed; new settings");
                let next = Arc::new(Service::succeed(
                    &r.service,
                    svc.clone(),
                    self.metrics.service(&name),
                ));
                if r.control.send(Control::Replace(next.clone())).await.is_err() {
                    warn!(service = %name, "reload: the service's watcher is gone");
                }
                match (svc.mode, r.http.take()) {
                    (Mode::Http, Some(mut h)) => {
                        // Open keep-alive connections follow from their next request.
                        h.service = Arc::new(HttpService::new(next.clone(), &self.metrics));
                        h.routes.store(Arc::new(Routes::Service(h.service.clone())));
                        r.http = Some(h);
                    }
                    (Mode::Http, None) => r.http = Some(self.http_parts(&next)),
                    (Mode::Tcp, Some(h)) => h.sweep_stop.cancel(),
                    (Mode::Tcp, None) => {}
                }
                r.service = next;
                r.listener = socket;
                self.spawn_accept(&mut r);
                self.running.insert(name, r);
            }
        }
    }

    /// Applies what the reload plan says of the shared HTTP listeners, and rebuilds every
    /// kept listener's routes over the services now running.
    fn apply_listeners(
        &mut self,
        actions: Vec<(SocketAddr, ListenerAction)>,
        mut sockets: HashMap<SocketAddr, Arc<TcpListener>>,
    ) {
        for (addr, action) in actions {
            match action {
                ListenerAction::Remove => {
                    let Some(l) = self.shared.remove(&addr) else {
                        continue;
                    };
                    info!(listen = %addr, "reload: shared HTTP listener removed; draining its connections");
                    l.accept_stop.cancel();
                    l.conn_cancel.cancel();
                    let drain = self.config.drain_timeout;
                    self.retiring.spawn(async move {
                        drop(l.listener);
                        l.connections.close();
                        if tokio::time::timeout(drain, l.connections.wait()).await.is_err() {
                            warn!(listen = %addr, open = l.connections.len(), "removed shared HTTP listener: drain deadline passed");
                        }
                    });
                }
                ListenerAction::Keep { config, restart } => {
                    let routes = self.shared_routes(&config);
                    let Some(mut l) = self.shared.remove(&addr) else {
                        continue;
                    };
                    l.config = config;
                    l.routes.store(Arc::new(routes));
                    if restart {
                        self.spawn_shared_accept(&mut l);
                    }
                    self.shared.insert(addr, l);
                }
                ListenerAction::Add(config) => {
                    let Some(socket) = sockets.remove(&addr) else {
                        continue;
                    };
                    info!(listen = %addr, "reload: shared HTTP listener added");
                    self.start_shared(config, socket);
                }
            }
        }
    }

    /// Stops a service: no more accepting, no more watching; its connections get
    /// `drain_timeout`, then are closed. `forget`: also drop its metric series (its name
    /// is gone from the config).
    fn retire(&self, r: Running, forget: bool) {
        if let Some(h) = &r.http {
            h.sweep_stop.cancel();
        }
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
                let snapshot = r.service.snapshot.load_full();
                for b in snapshot.table.backends() {
                    metrics.forget_backend(&name, &b.state.key);
                }
                for d in snapshot.draining.iter() {
                    metrics.forget_backend(&name, &d.state.key);
                }
                metrics.forget_service(&name);
            }
        });
    }

    /// Shutdown: stops accepting and watching, then waits up to `drain_timeout` for the
    /// open connections (of running and retired services).
    pub async fn shutdown(mut self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.close_listeners();
        let trackers: Vec<TaskTracker> = self
            .running
            .values()
            .map(|r| r.connections.clone())
            .chain(self.closed.iter().cloned())
            .collect();
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

    /// Serves what is left in the listen backlogs, then closes the sockets: before the
    /// drain, not after it, or clients connecting during the drain would be queued in the
    /// backlog and reset at exit. Closed, the port refuses them at once (a client may retry
    /// elsewhere, or once the next synapse has bound it).
    fn close_listeners(&mut self) {
        for r in self.running.values_mut() {
            let Some(listener) = r.listener.take() else {
                continue;
            };
            match &r.http {
                None => {
                    crate::proxy::tcp::drain_backlog(&listener, &r.service, &r.connections, &r.conn_cancel)
                }
                Some(h) => {
                    let c = &r.service.config;
                    http::drain_backlog(
                        &listener,
                        &h.routes,
                        settings(c.idle_timeout, c.tcp_keepalive, &self.config),
                        &r.connections,
                        &r.conn_cancel,
                    );
                }
            }
        }
        for l in std::mem::take(&mut self.shared).into_values() {
            http::drain_backlog(
                &l.listener,
                &l.routes,
                settings(l.config.idle_timeout, l.config.tcp_keepalive, &self.config),
                &l.connections,
                &l.conn_cancel,
            );
            self.closed.push(l.connections);
        }
    }

    /// The listening sockets held (services' own, shared HTTP listeners) by address: what an
    /// upgrade hands over (see [`crate::handoff`]).
    pub fn listeners(&self) -> Vec<(SocketAddr, Arc<TcpListener>)> {
        self.running
            .values()
            .filter_map(|r| Some((r.service.config.listen?, r.listener.clone()?)))
            .chain(
                self.shared
                    .values()
                    .map(|l| (l.config.listen, l.listener.clone())),
            )
            .collect()
    }

    /// How long a drain may take (for the caller's logs).
    pub fn drain_timeout(&self) -> Duration {
        self.config.drain_timeout
    }
}
