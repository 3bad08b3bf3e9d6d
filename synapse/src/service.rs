//! One routed service: the watcher task that turns ZooKeeper updates into route tables.
//!
//! It is the single writer of the service's `ArcSwap<RouteTable>`. Updates are applied to a
//! member map; each batch of updates (everything already queued) yields one new table, and
//! the diff of backends is logged, not the whole set.
//!
//! A backend that leaves the table keeps its state while connections to it are open, for up
//! to `removal_grace`: its connections go on (new ones go elsewhere at once), and if it comes
//! back meanwhile it gets its state back (active counts, latency, ejection). At the end of
//! the grace its remaining connections are closed ([`BackendState::closing`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::codec::Node;
use common::registry::{self, Session, WatchUpdate};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::balance::PolicyName;
use crate::config::ServiceConfig;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::outlier::Detector;
use crate::table::{BackendState, RouteTable};

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

/// Shared view of one service: read by the proxy (table) and the admin API.
#[derive(Debug)]
pub struct Service {
    /// Its config.
    pub config: ServiceConfig,
    /// The current route table. Loaded once per connection.
    pub table: ArcSwap<RouteTable>,
    /// Set after the first full listing from ZooKeeper, once its table is installed. The
    /// proxy's fast path reads only this.
    pub synced: AtomicBool,
    /// The same fact as a channel, for connections that arrive before it and wait.
    pub first_sync: watch::Sender<bool>,
    /// Metric handles.
    pub metrics: ServiceMetrics,
    /// Outlier ejection (its config is `config.outlier`).
    pub outlier: Detector,
    /// Removed backends still draining, as of the watcher's last look (for the admin API).
    pub draining: Mutex<Vec<Draining>>,
}

impl Service {
    /// A service with an empty table, not yet synced.
    pub fn new(config: ServiceConfig, metrics: ServiceMetrics) -> Self {
        Service {
            outlier: Detector::new(config.outlier),
            config,
            table: ArcSwap::default(),
            synced: AtomicBool::new(false),
            first_sync: watch::Sender::new(false),
            metrics,
            draining: Mutex::new(Vec::new()),
        }
    }

    /// The draining backends (see [`Draining`]).
    pub fn draining(&self) -> Vec<Draining> {
        self.draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The watcher's private state.
struct Watcher {
    service: Arc<Service>,
    metrics: Metrics,
    members: BTreeMap<String, Node>,
    /// State of the backends in the current table.
    states: HashMap<String, Arc<BackendState>>,
    /// Removed backends within their grace, by key.
    draining: HashMap<String, Draining>,
}

/// Watches the service's path and installs route tables until `cancel` fires.
pub async fn watch_loop(
    service: Arc<Service>,
    session: Arc<Session>,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let mut updates = registry::watch(session, service.config.zk_path.clone(), cancel.clone());
    let mut w = Watcher {
        service,
        metrics,
        members: BTreeMap::new(),
        states: HashMap::new(),
        draining: HashMap::new(),
    };
    loop {
        let sweep = w.next_sweep();
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            u = updates.recv() => match u { Some(u) => u, None => return },
            _ = sleep_until(sweep), if sweep.is_some() => {
                w.sweep();
                continue;
            }
        };
        let mut synced = w.apply(first);
        while let Ok(more) = updates.try_recv() {
            synced |= w.apply(more);
        }
        w.install().await;
        // Release: a connection that sees `synced` also sees the table installed above.
        if synced && !w.service.synced.swap(true, Ordering::Release) {
            w.service.first_sync.send_replace(true);
            info!(
                backends = w.service.table.load().backends().len(),
                "first sync complete"
            );
        }
    }
}

impl Watcher {
    /// Applies one update to the member map; true for a full listing.
    fn apply(&mut self, update: WatchUpdate) -> bool {
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

    /// Builds and swaps in a new table from the member map, unless the path emptied and the
    /// previous backends are to be kept.
    async fn install(&mut self) {
        let name = &self.service.config.name;
        let available: Vec<(&String, &Node)> = self.members.iter().filter(|(_, n)| n.available).collect();
        self.service
            .metrics
            .unavailable_nodes
            .set((self.members.len() - available.len()) as i64);
        let current = self.service.table.load_full();
        if available.is_empty() && !current.is_empty() && self.service.config.use_previous_backends {
            if self.service.metrics.stale.get() == 0 {
                warn!(
                    kept = current.backends().len(),
                    "no backend left in ZooKeeper; keeping the previous ones"
                );
            }
            self.service.metrics.stale.set(1);
            return;
        }
        let mut entries = Vec::with_capacity(available.len());
        let mut keys = BTreeSet::new();
        for (id, node) in available {
            let key = format!("{}:{}", node.host, node.port);
            let state = match self.states.get(&key) {
                Some(state) => state.clone(),
                None => {
                    // Back within its grace: the same state, so open connections stay counted.
                    let state = match self.draining.remove(&key) {
                        Some(d) if !d.state.closing.is_cancelled() => d.state,
                        _ => Arc::new(BackendState::new(key.clone(), self.metrics.backend(name, &key))),
                    };
                    self.states.insert(key.clone(), state.clone());
                    state
                }
            };
            keys.insert(key);
            entries.push((id.clone(), node.clone(), state));
        }
        let Some(table) = self.build(entries).await else {
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
        self.service.metrics.stale.set(0);
        self.service.metrics.backends.set(table.backends().len() as i64);
        self.service.metrics.updates.inc();
        self.service.table.store(Arc::new(table));
        // An ejection that raced the swap refreshed the old table: look again.
        self.service.outlier.refresh(&self.service.table.load());
        self.sweep();
    }

    /// Builds a table, on a blocking thread when it is big (see [`BLOCKING_BUILD_MIN`]).
    /// None when the blocking build did not finish (runtime shutting down, or a bug): the
    /// current table stays.
    async fn build(&self, entries: Vec<(String, Node, Arc<BackendState>)>) -> Option<RouteTable> {
        let policy = self.service.config.balance.name();
        let default_weight = self.service.config.default_weight;
        let started = Instant::now();
        let table = if entries.len() > BLOCKING_BUILD_MIN || policy == PolicyName::Hash {
            let build = move || RouteTable::build(entries, policy, default_weight);
            match tokio::task::spawn_blocking(build).await {
                Ok(table) => table,
                Err(err) => {
                    warn!(error = %err, "route table build failed; keeping the current table");
                    return None;
                }
            }
        } else {
            RouteTable::build(entries, policy, default_weight)
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
        let mut published = self
            .service
            .draining
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
