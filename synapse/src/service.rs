//! One routed service: the watcher task that turns ZooKeeper updates into route tables.
//!
//! It is the single writer of the service's `ArcSwap<RouteTable>`. Updates are applied to a
//! member map; then [`crate::filter::select`] decides what to route to (label filters,
//! default servers, previous backends, locality) and one table is built; the diff of
//! backends is logged, not the whole set.
//!
//! **Debounce.** A change that comes after a quiet period (no table built for `debounce`)
//! is applied at once, with whatever else is already queued. A change that follows a build
//! by less than `debounce` opens a trailing window: the table is built once no change came
//! for `debounce`, or `debounce_max` after the change that opened it. So a lone change
//! costs no delay, and a burst of registrations yields a handful of tables.
//!
//! **Start.** A service seeded from the state file installs that table at once and counts
//! as synced (from the cache) until ZooKeeper's first listing replaces it. A service with
//! default servers and no ZooKeeper listing within `first_sync_timeout` routes to them.
//!
//! **Reload.** The task follows its service through config reloads that keep its ZooKeeper
//! location ([`Control`]): it switches to the new [`Service`] and rebuilds the table with
//! the new settings, keeping members, backend states and draining backends.
//!
//! A backend that leaves the table keeps its state while connections to it are open, for up
//! to `removal_grace`: its connections go on (new ones go elsewhere at once), and if it comes
//! back meanwhile it gets its state back (active counts, latency, ejection). At the end of
//! the grace its remaining connections are closed ([`crate::backend::BackendState::closing`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::codec::Node;
use common::registry::{self, Session, WatchUpdate};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::BackendState;
use crate::balance::PolicyName;
use crate::config::ServiceConfig;
use crate::filter::{self, Fallback, LocalityState, Rules};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::outlier::Detector;
use crate::table::RouteTable;

/// Tables with more backends than this, or balanced by `hash` (whose Maglev table has at
/// least 65 537 slots), are built on a blocking thread rather than on the watcher's runtime
/// worker.
const BLOCKING_BUILD_MIN: usize = 64;

/// While removed backends drain, the watcher looks at them at least this often, to forget
/// those whose last connection ended.
const DRAIN_SWEEP: Duration = Duration::from_secs(1);

/// A backend that left the table and still has connections, within its `removal_grace`.
#[derive(Debug, Clone)]
pub struct Draining {
    /// The znode it came from last.
    pub id: String,
    /// Its state (active connections in `live`).
    pub state: Arc<BackendState>,
    /// When its remaining connections are closed.
    pub closes_at: Instant,
}

/// Where a service's route table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SyncSource {
    /// Nothing yet: connections wait for the first sync.
    None = 0,
    /// ZooKeeper listed the path (since start, or since the reload that created the
    /// service's watcher).
    Zookeeper = 1,
    /// The state file, until ZooKeeper lists the path.
    Cache = 2,
    /// No ZooKeeper listing within `first_sync_timeout`: the default servers.
    DefaultServers = 3,
}

impl SyncSource {
    fn from_u8(v: u8) -> SyncSource {
        match v {
            1 => SyncSource::Zookeeper,
            2 => SyncSource::Cache,
            3 => SyncSource::DefaultServers,
            _ => SyncSource::None,
        }
    }

    /// The name in the admin API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncSource::None => "none",
            SyncSource::Zookeeper => "zookeeper",
            SyncSource::Cache => "cache",
            SyncSource::DefaultServers => "default_servers",
        }
    }
}

/// What the filters and fallbacks made of the last build (for the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    /// Default servers or previous backends standing in.
    pub fallback: Fallback,
    /// Locality's verdict.
    pub locality: LocalityState,
    /// Available nodes refused by the label filters.
    pub filtered_out: usize,
}

impl Default for Selected {
    fn default() -> Self {
        Selected {
            fallback: Fallback::None,
            locality: LocalityState::Off,
            filtered_out: 0,
        }
    }
}

/// The available members last seen in ZooKeeper with at least one backend: what the state
/// file keeps.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// `(znode id, node)`.
    pub members: Arc<Vec<(String, Node)>>,
    /// True while they are ZooKeeper's current listing (not kept over an empty path, not
    /// read back from the state file).
    pub current: bool,
}

/// Shared view of one service: read by the proxy (table) and the admin API.
#[derive(Debug)]
pub struct Service {
    /// Its config.
    pub config: ServiceConfig,
    /// The current route table. Loaded once per connection.
    pub table: ArcSwap<RouteTable>,
    /// Set once a first table is installed (from ZooKeeper, the state file or the default
    /// servers: see [`Service::source`]). The proxy's fast path reads only this.
    pub synced: AtomicBool,
    /// The same fact as a channel, for connections that arrive before it and wait.
    pub first_sync: watch::Sender<bool>,
    /// Metric handles.
    pub metrics: ServiceMetrics,
    /// Last change of the backend set, in ms since the Unix epoch; 0 before the first.
    pub last_change_ms: AtomicU64,
    /// Outlier ejection (its config is `config.outlier`).
    pub outlier: Detector,
    /// Removed backends still draining, as of the watcher's last look (for the admin API).
    pub draining: Mutex<Vec<Draining>>,
    /// `max_connections` permits, taken before `accept`. None: no limit.
    pub conn_limit: Option<Arc<Semaphore>>,
    /// The ZooKeeper session its watcher uses (for the state file: is it connected?).
    pub session: Option<Arc<Session>>,
    source: AtomicU8,
    selected: Mutex<Selected>,
    known: Mutex<Known>,
}

impl Service {
    /// A service with an empty table, not yet synced.
    pub fn new(config: ServiceConfig, metrics: ServiceMetrics, session: Option<Arc<Session>>) -> Self {
        let conn_limit = config
            .max_connections
            .map(|n| Arc::new(Semaphore::new(n.get() as usize)));
        Service {
            outlier: Detector::new(config.outlier),
            config,
            table: ArcSwap::default(),
            synced: AtomicBool::new(false),
            first_sync: watch::Sender::new(false),
            metrics,
            last_change_ms: AtomicU64::new(0),
            draining: Mutex::new(Vec::new()),
            conn_limit,
            session,
            source: AtomicU8::new(SyncSource::None as u8),
            selected: Mutex::new(Selected::default()),
            known: Mutex::new(Known::default()),
        }
    }

    /// The successor of `old` under a new `config` (same name and ZooKeeper location): it
    /// starts with `old`'s table, sync state and what it knew, so that no connection waits
    /// while the watcher rebuilds the table with the new settings. `conn_limit`: the
    /// listener's semaphore, kept when `max_connections` did not change.
    pub fn succeed(old: &Service, config: ServiceConfig, metrics: ServiceMetrics) -> Self {
        let keep_limit = old.config.max_connections == config.max_connections;
        let new = Service::new(config, metrics, old.session.clone());
        let new = Service {
            conn_limit: if keep_limit {
                old.conn_limit.clone()
            } else {
                new.conn_limit
            },
            ..new
        };
        new.table.store(old.table.load_full());
        new.source
            .store(old.source.load(Ordering::Relaxed), Ordering::Relaxed);
        *lock(&new.selected) = *lock(&old.selected);
        *lock(&new.known) = lock(&old.known).clone();
        *lock(&new.draining) = old.draining();
        if old.synced.load(Ordering::Acquire) {
            new.synced.store(true, Ordering::Release);
            new.first_sync.send_replace(true);
        }
        new
    }

    /// The draining backends (see [`Draining`]).
    pub fn draining(&self) -> Vec<Draining> {
        lock(&self.draining).clone()
    }

    /// Where the current table came from.
    pub fn source(&self) -> SyncSource {
        SyncSource::from_u8(self.source.load(Ordering::Relaxed))
    }

    /// What the filters and fallbacks made of the last build.
    pub fn selected(&self) -> Selected {
        *lock(&self.selected)
    }

    /// The members the state file should keep.
    pub fn known(&self) -> Known {
        lock(&self.known).clone()
    }

    /// Closes every connection of the service now (a service a reload removed, once its
    /// drain time is over): their backends' `closing` tokens fire.
    pub fn close_connections(&self) {
        for b in self.table.load().backends() {
            b.state.closing.cancel();
        }
        for d in self.draining() {
            d.state.closing.cancel();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Messages from the reload supervisor to a watcher task.
#[derive(Debug)]
pub enum Control {
    /// Serve this successor of the service from now on (see [`Service::succeed`]).
    Replace(Arc<Service>),
}

/// What a watcher task gets besides its service.
#[derive(Debug)]
pub struct WatchContext {
    /// The ZooKeeper session.
    pub session: Arc<Session>,
    /// Metrics (for per-backend handles).
    pub metrics: Metrics,
    /// Reload messages.
    pub control: mpsc::Receiver<Control>,
    /// Bumped after each table install (the state file and `file_output` writers wait on
    /// it).
    pub installed: watch::Sender<u64>,
    /// Members from the state file, to route from at once.
    pub cached: Option<Vec<(String, Node)>>,
}

/// The watcher's private state.
struct Watcher {
    service: Arc<Service>,
    metrics: Metrics,
    installed: watch::Sender<u64>,
    members: BTreeMap<String, Node>,
    /// State of the backends in the current table.
    states: HashMap<String, Arc<BackendState>>,
    /// Removed backends within their grace, by key.
    draining: HashMap<String, Draining>,
    /// When the last table was installed (the debounce's leading edge).
    last_build: Option<Instant>,
}

/// Watches the service's path and installs route tables until `cancel` fires.
pub async fn watch_loop(service: Arc<Service>, ctx: WatchContext, cancel: CancellationToken) {
    let WatchContext {
        session,
        metrics,
        mut control,
        installed,
        cached,
    } = ctx;
    let started = Instant::now();
    let mut updates = registry::watch(session, service.config.zk_path.clone(), cancel.clone());
    let mut w = Watcher {
        service,
        metrics,
        installed,
        members: BTreeMap::new(),
        states: HashMap::new(),
        draining: HashMap::new(),
        last_build: None,
    };
    if let Some(cached) = cached.filter(|c| !c.is_empty()) {
        w.members = cached.into_iter().collect();
        w.install(false).await;
        // Not ZooKeeper's word: the state file keeps the time ZooKeeper last confirmed them.
        lock(&w.service.known).current = false;
        w.mark_synced(SyncSource::Cache);
    }
    let mut control_open = true;
    loop {
        let sweep = w.next_sweep();
        let defaults_at = w.defaults_deadline(started);
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            u = updates.recv() => match u { Some(u) => u, None => return },
            _ = sleep_until(sweep), if sweep.is_some() => {
                w.sweep();
                continue;
            }
            _ = sleep_until(defaults_at), if defaults_at.is_some() => {
                w.install(false).await;
                w.mark_synced(SyncSource::DefaultServers);
                continue;
            }
            c = control.recv(), if control_open => {
                match c {
                    Some(Control::Replace(next)) => {
                        w.service = next;
                        w.install(true).await;
                    }
                    None => control_open = false,
                }
                continue;
            }
        };
        let received = Instant::now();
        let mut synced = w.apply(first);
        while let Ok(more) = updates.try_recv() {
            synced |= w.apply(more);
        }
        let debounce = w.service.config.debounce;
        if !debounce.is_zero() && w.last_build.is_some_and(|t| t.elapsed() < debounce) {
            // Trailing window: gather until a quiet `debounce`, at most `debounce_max`.
            let latest = Instant::now() + w.service.config.debounce_max;
            loop {
                let quiet = (Instant::now() + debounce).min(latest);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(quiet.into()) => break,
                    u = updates.recv() => match u {
                        Some(u) => {
                            synced |= w.apply(u);
                            while let Ok(more) = updates.try_recv() {
                                synced |= w.apply(more);
                            }
                        }
                        None => return,
                    },
                }
            }
        }
        w.install(false).await;
        w.service
            .metrics
            .update_delay
            .observe(received.elapsed().as_secs_f64());
        if synced {
            w.mark_synced(SyncSource::Zookeeper);
        }
    }
}

impl Watcher {
    /// Applies one update to the member map; true for a full listing.
    fn apply(&mut self, update: WatchUpdate) -> bool {
        self.service.metrics.watch_updates.inc();
        match update {
            WatchUpdate::Reset(list) => {
                self.members = list.into_iter().map(|m| (m.id, m.node)).collect();
                return true;
            }
            WatchUpdate::Upsert(m) => {
                if !m.node.available {
                    info!(zk.node = %m.id, reason = m.node.unavailable_reason.as_deref().unwrap_or(""), "node marked unavailable; not routing to it");
                }
                self.members.insert(m.id, m.node);
            }
            WatchUpdate::Remove(id) => {
                self.members.remove(&id);
            }
            WatchUpdate::Invalid { id, error } => {
                self.service.metrics.invalid_nodes.inc();
                warn!(zk.node = %id, %error, "skipping malformed node");
            }
        }
        false
    }

    /// When the default servers should stand in for a first sync that did not come.
    fn defaults_deadline(&self, started: Instant) -> Option<Instant> {
        let s = &self.service;
        (!s.synced.load(Ordering::Relaxed) && !s.config.default_servers.is_empty())
            .then(|| started + s.config.first_sync_timeout)
    }

    /// Records where the table came from, and wakes the connections waiting for a first
    /// sync.
    fn mark_synced(&self, source: SyncSource) {
        let s = &self.service;
        let before = SyncSource::from_u8(s.source.swap(source as u8, Ordering::Relaxed));
        s.metrics.from_cache.set(i64::from(source == SyncSource::Cache));
        let backends = s.table.load().backends().len();
        match (before, source) {
            (SyncSource::Zookeeper, SyncSource::Zookeeper) => {}
            (SyncSource::None, SyncSource::Zookeeper) => info!(backends, "first sync complete"),
            (_, SyncSource::Zookeeper) => {
                info!(
                    backends,
                    from = before.as_str(),
                    "first sync from ZooKeeper; its backends replace the earlier ones"
                )
            }
            (_, SyncSource::Cache) => {
                info!(backends, "routing from the state file until ZooKeeper answers")
            }
            (_, SyncSource::DefaultServers) => warn!(
                backends,
                waited = ?s.config.first_sync_timeout,
                "no listing from ZooKeeper in time; routing to the default servers"
            ),
            (_, SyncSource::None) => {}
        }
        // Release: a connection that sees `synced` also sees the table installed before.
        if !s.synced.swap(true, Ordering::Release) {
            s.first_sync.send_replace(true);
        }
    }

    /// Builds and swaps in a new table from the member map through the filters and
    /// fallbacks; unless the current table is to be kept (previous backends) and `force` (a
    /// reload changed the settings) is false.
    async fn install(&mut self, force: bool) {
        let name = self.service.config.name.clone();
        let available: Vec<(&String, &Node)> = self.members.iter().filter(|(_, n)| n.available).collect();
        self.service
            .metrics
            .unavailable_nodes
            .set((self.members.len() - available.len()) as i64);
        let current = self.service.table.load_full();
        let cfg = &self.service.config;
        let rules = Rules {
            label_filters: &cfg.label_filters,
            default_servers: &cfg.default_servers,
            keep_default_servers: cfg.keep_default_servers,
            use_previous_backends: cfg.use_previous_backends,
            locality: cfg.locality.as_ref(),
            default_weight: cfg.default_weight,
        };
        let from_zk: Vec<(String, Node)> = available
            .iter()
            .map(|(id, n)| ((*id).clone(), (*n).clone()))
            .collect();
        let mut sel = filter::select(available, !current.is_empty(), rules);
        let m = &self.service.metrics;
        m.filtered.set(sel.filtered_out as i64);
        m.using_defaults
            .set(i64::from(sel.fallback == Fallback::DefaultServers));
        {
            let mut known = lock(&self.service.known);
            if sel.fallback == Fallback::None && !from_zk.is_empty() {
                *known = Known {
                    members: Arc::new(from_zk),
                    current: true,
                };
            } else {
                known.current = false;
            }
        }
        if sel.fallback == Fallback::Previous {
            if m.stale.get() == 0 {
                warn!(
                    kept = current.backends().len(),
                    "no backend left in ZooKeeper; keeping the previous ones"
                );
            }
            m.stale.set(1);
            if !force {
                self.publish_selected(&sel);
                return;
            }
            // New settings: the same backends, with the new balancer and locality.
            let previous: Vec<(String, Node)> = current
                .backends()
                .iter()
                .map(|b| (b.id.clone(), b.node.clone()))
                .collect();
            let (demoted, locality) = filter::locality_of(&previous, rules);
            sel.entries = previous;
            sel.demoted = demoted;
            sel.locality = locality;
        } else {
            m.stale.set(0);
        }
        self.publish_selected(&sel);
        let mut entries = Vec::with_capacity(sel.entries.len());
        let mut keys = BTreeSet::new();
        for (id, node) in std::mem::take(&mut sel.entries) {
            let key = format!("{}:{}", node.host, node.port);
            let state = match self.states.get(&key) {
                Some(state) => state.clone(),
                None => {
                    // Back within its grace: the same state, so open connections stay counted.
                    let state = match self.draining.remove(&key) {
                        Some(d) if !d.state.closing.is_cancelled() => d.state,
                        _ => Arc::new(BackendState::new(key.clone(), self.metrics.backend(&name, &key))),
                    };
                    self.states.insert(key.clone(), state.clone());
                    state
                }
            };
            keys.insert(key);
            entries.push((id, node, state));
        }
        let Some(table) = self.build(entries, sel.demoted).await else {
            return;
        };
        let before: BTreeSet<&str> = current.backends().iter().map(|b| b.state.key.as_str()).collect();
        let added: Vec<&String> = keys.iter().filter(|k| !before.contains(k.as_str())).collect();
        let removed: Vec<&&str> = before.iter().filter(|k| !keys.contains(**k)).collect();
        if !added.is_empty() || !removed.is_empty() {
            info!(
                ?added,
                ?removed,
                backends = table.backends().len(),
                "route table updated"
            );
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            let now_ms = now.map_or(0, |d| d.as_millis() as u64);
            self.service.last_change_ms.store(now_ms, Ordering::Relaxed);
        }
        let gone: Vec<String> = self
            .states
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        let closes_at = Instant::now() + self.service.config.removal_grace;
        for key in gone {
            if let Some(state) = self.states.remove(&key) {
                let id = current
                    .backends()
                    .iter()
                    .find(|b| b.state.key == key)
                    .map(|b| b.id.clone())
                    .unwrap_or_default();
                state.metrics.weight.set(0);
                self.draining.insert(key, Draining { id, state, closes_at });
            }
        }
        for b in table.backends() {
            b.state.metrics.weight.set(i64::from(b.weight));
        }
        self.service.outlier.refresh(&table);
        self.service.metrics.backends.set(table.backends().len() as i64);
        self.service.metrics.updates.inc();
        self.service.table.store(Arc::new(table));
        // An ejection that raced the swap refreshed the old table: look again.
        self.service.outlier.refresh(&self.service.table.load());
        self.last_build = Some(Instant::now());
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
        self.sweep();
    }

    /// Publishes what the filters made of this build, and logs locality flips.
    fn publish_selected(&self, sel: &filter::Selection) {
        let s = &self.service;
        let failover = matches!(sel.locality, LocalityState::Failover { .. });
        let was = s.metrics.locality_failover.get() == 1;
        match sel.locality {
            LocalityState::Failover { local, usable } if !was => warn!(
                local,
                usable,
                min_local = %s.config.locality.as_ref().map(|l| l.min_local.to_string()).unwrap_or_default(),
                "too few local backends; routing to every zone"
            ),
            LocalityState::Local { local, usable } if was => {
                info!(
                    local,
                    usable, "enough local backends again; other zones are backups"
                )
            }
            _ => {}
        }
        s.metrics.locality_failover.set(i64::from(failover));
        *lock(&s.selected) = Selected {
            fallback: sel.fallback,
            locality: sel.locality,
            filtered_out: sel.filtered_out,
        };
    }

    /// Builds a table, on a blocking thread when it is big (see [`BLOCKING_BUILD_MIN`]).
    /// None when the blocking build did not finish (runtime shutting down, or a bug): the
    /// current table stays.
    async fn build(
        &self,
        entries: Vec<(String, Node, Arc<BackendState>)>,
        demoted: std::collections::HashSet<String>,
    ) -> Option<RouteTable> {
        let policy = self.service.config.balance.name();
        let default_weight = self.service.config.default_weight;
        let started = Instant::now();
        let table = if entries.len() > BLOCKING_BUILD_MIN || policy == PolicyName::Hash {
            let build = move || RouteTable::build_demoting(entries, policy, default_weight, &demoted);
            match tokio::task::spawn_blocking(build).await {
                Ok(table) => table,
                Err(err) => {
                    warn!(error = %err, "route table build failed; keeping the current table");
                    return None;
                }
            }
        } else {
            RouteTable::build_demoting(entries, policy, default_weight, &demoted)
        };
        self.service
            .metrics
            .build_time
            .observe(started.elapsed().as_secs_f64());
        Some(table)
    }

    /// When the watcher should next look at the draining backends; None when none drains.
    fn next_sweep(&self) -> Option<Instant> {
        let earliest = self.draining.values().map(|d| d.closes_at).min()?;
        Some(earliest.min(Instant::now() + DRAIN_SWEEP))
    }

    /// Forgets the draining backends whose connections all ended, closes the connections of
    /// those whose grace is over, and publishes the rest for the admin API.
    fn sweep(&mut self) {
        let name = &self.service.config.name;
        let now = Instant::now();
        let mut done = Vec::new();
        for (key, d) in &self.draining {
            let open = d.state.live.active();
            if open == 0 {
                debug!(backend.addr = %key, "removed backend drained");
                done.push(key.clone());
            } else if now >= d.closes_at {
                info!(
                    backend.addr = %key,
                    open,
                    removal_grace = ?self.service.config.removal_grace,
                    "removal grace over; closing the connections to a removed backend"
                );
                d.state.closing.cancel();
                done.push(key.clone());
            }
        }
        for key in done {
            self.draining.remove(&key);
            self.metrics.forget_backend(name, &key);
        }
        self.service.metrics.draining.set(self.draining.len() as i64);
        let mut published = lock(&self.service.draining);
        published.clear();
        published.extend(self.draining.values().cloned());
        published.sort_by(|a, b| a.state.key.cmp(&b.state.key));
    }
}

/// Sleeps until `at`; forever when None (the select branch is disabled then anyway).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
