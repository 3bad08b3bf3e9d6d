//! One routed service: the watcher task that turns ZooKeeper updates into route tables.
//!
//! It is the single writer of the service's `ArcSwap<RouteTable>`. Updates are applied to a
//! member map; each batch of updates (everything already queued) yields one new table, and
//! the diff of backends is logged, not the whole set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use common::codec::Node;
use common::registry::{self, Session, WatchUpdate};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ServiceConfig;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::table::{BackendState, RouteTable};

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
    /// Last change of the backend set, in ms since the Unix epoch; 0 before the first.
    pub last_change_ms: AtomicU64,
}

impl Service {
    /// A service with an empty table, not yet synced.
    pub fn new(config: ServiceConfig, metrics: ServiceMetrics) -> Self {
        Service {
            config,
            table: ArcSwap::default(),
            synced: AtomicBool::new(false),
            first_sync: watch::Sender::new(false),
            metrics,
            last_change_ms: AtomicU64::new(0),
        }
    }
}

/// The watcher's private state.
struct Watcher {
    service: Arc<Service>,
    metrics: Metrics,
    members: BTreeMap<String, Node>,
    states: HashMap<String, Arc<BackendState>>,
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
    };
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            u = updates.recv() => match u { Some(u) => u, None => return },
        };
        let mut synced = w.apply(first);
        while let Ok(more) = updates.try_recv() {
            synced |= w.apply(more);
        }
        w.install();
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
    fn install(&mut self) {
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
            let state = self
                .states
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(BackendState {
                        metrics: self.metrics.backend(name, &key),
                        key: key.clone(),
                    })
                })
                .clone();
            keys.insert(key);
            entries.push((id.clone(), node.clone(), state));
        }
        let table = RouteTable::build(entries);
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
        for key in gone {
            self.states.remove(&key);
            self.metrics.forget_backend(name, &key);
        }
        self.service.metrics.stale.set(0);
        self.service.metrics.backends.set(table.backends().len() as i64);
        self.service.metrics.updates.inc();
        self.service.table.store(Arc::new(table));
    }
}
