//! The watcher task of one service: it turns ZooKeeper updates into snapshots (route table,
//! selection, known members, source) and is the single writer of the service's
//! `ArcSwap<Snapshot>`. Each install is a pure [`plan`] (the filters and fallbacks of
//! [`crate::filter::select`] over the member map and the current snapshot) and one apply
//! (backend states resolved, the table built, the diff of backends logged rather than the
//! whole set, one store).
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
//!
//! A child of [`crate::service`], so its events fall under the log target `synapse::service`
//! (operators' filters, and the benchmark, select the "route table updated" lines by it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::codec::Node;
use common::registry::{self, Session, WatchUpdate};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Service;
use crate::backend::BackendState;
use crate::balance::PolicyName;
use crate::config::ServiceConfig;
use crate::filter::{self, Fallback, LocalityState, Rules};
use crate::metrics::Metrics;
use crate::table::{Draining, Known, RouteTable, Selected, Snapshot, SyncSource};

/// Tables with more backends than this, or balanced by `hash` (whose Maglev table has at
/// least 65 537 slots), are built on a blocking thread rather than on the watcher's runtime
/// worker.
const BLOCKING_BUILD_MIN: usize = 64;

/// While removed backends drain, the watcher looks at them at least this often, to forget
/// those whose last connection ended.
const DRAIN_SWEEP: Duration = Duration::from_secs(1);

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
    /// Bumped after each install (the state file and `file_output` writers wait on it).
    pub installed: watch::Sender<u64>,
    /// Members from the state file, to route from at once.
    pub cached: Option<Vec<(String, Node)>>,
}

/// What made the watcher install a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// ZooKeeper updates; `listing`: a full listing was among them (the service is synced
    /// from ZooKeeper).
    Updates {
        /// A full listing came.
        listing: bool,
    },
    /// The state file's members, at start.
    Cache,
    /// No listing within `first_sync_timeout`: the default servers stand in.
    DefaultServers,
    /// A reload changed the service's settings: the table is rebuilt even when it keeps the
    /// previous backends.
    Reload,
}

/// The next snapshot, decided from the members, the current snapshot and the config alone.
#[derive(Debug)]
pub struct Plan {
    /// What the filters and fallbacks made of the members.
    pub selected: Selected,
    /// The members the state file should keep.
    pub known: Known,
    /// Where the table comes from.
    pub source: SyncSource,
    /// The table to build; None keeps the current table (previous backends standing in).
    pub build: Option<Build>,
    /// Members marked unavailable.
    pub unavailable: usize,
    /// ZooKeeper has no backend left and the previous ones are kept.
    pub stale: bool,
}

/// A table to build.
#[derive(Debug)]
pub struct Build {
    /// `(znode id, node)`.
    pub entries: Vec<(String, Node)>,
    /// The `host:port`s locality demotes to backups.
    pub demoted: HashSet<String>,
}

/// Plans the snapshot that follows `current` for `members` (pure).
pub fn plan(
    members: &BTreeMap<String, Node>,
    current: &Snapshot,
    config: &ServiceConfig,
    trigger: Trigger,
) -> Plan {
    let available: Vec<(&String, &Node)> = members.iter().filter(|(_, n)| n.available).collect();
    let unavailable = members.len() - available.len();
    let rules = Rules {
        label_filters: &config.label_filters,
        default_servers: &config.default_servers,
        keep_default_servers: config.keep_default_servers,
        use_previous_backends: config.use_previous_backends,
        locality: config.locality.as_ref(),
        default_weight: config.default_weight,
    };
    let from_zk: Vec<(String, Node)> = available
        .iter()
        .map(|(id, n)| ((*id).clone(), (*n).clone()))
        .collect();
    let mut sel = filter::select(available, !current.table.is_empty(), rules);
    let mut known = if sel.fallback == Fallback::None && !from_zk.is_empty() {
        Known {
            members: Arc::new(from_zk),
            current: true,
        }
    } else {
        Known {
            current: false,
            ..current.known.clone()
        }
    };
    let source = match trigger {
        Trigger::Updates { listing: true } => SyncSource::Zookeeper,
        Trigger::Cache => {
            // Not ZooKeeper's word: the state file keeps the time ZooKeeper last confirmed
            // them.
            known.current = false;
            SyncSource::Cache
        }
        Trigger::DefaultServers => SyncSource::DefaultServers,
        Trigger::Updates { listing: false } | Trigger::Reload => current.source,
    };
    let stale = sel.fallback == Fallback::Previous;
    let build = if !stale {
        Some(Build {
            entries: std::mem::take(&mut sel.entries),
            demoted: std::mem::take(&mut sel.demoted),
        })
    } else if trigger == Trigger::Reload {
        // New settings: the same backends, with the new balancer and locality.
        let previous: Vec<(String, Node)> = current
            .table
            .backends()
            .iter()
            .map(|b| (b.id.clone(), b.node.clone()))
            .collect();
        let (demoted, locality) = filter::locality_of(&previous, rules);
        sel.locality = locality;
        Some(Build {
            entries: previous,
            demoted,
        })
    } else {
        None
    };
    Plan {
        selected: Selected {
            fallback: sel.fallback,
            locality: sel.locality,
            filtered_out: sel.filtered_out,
        },
        known,
        source,
        build,
        unavailable,
        stale,
    }
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
    /// Members changed since the last install: id → its node as of that install (None:
    /// absent then). What an incremental install looks at.
    pending: BTreeMap<String, Option<Node>>,
    /// The next install must plan from scratch (a full listing came, or none was planned
    /// yet).
    full: bool,
    /// Members marked unavailable, and available ones refused by the label filters, as of
    /// the last install.
    unavailable: usize,
    filtered_out: usize,
    /// Selected members that share a `host:port` with another, as of the last full build
    /// (the table keeps one): an incremental install needs none.
    duplicates: usize,
}

/// Watches the service's path and installs snapshots until `cancel` fires.
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
    let mut w = Watcher::new(service, metrics, installed);
    if let Some(cached) = cached.filter(|c| !c.is_empty()) {
        w.members = cached.into_iter().collect();
        w.install(Trigger::Cache).await;
    }
    let mut control_open = true;
    loop {
        let sweep = w.next_sweep();
        let defaults_at = w.defaults_deadline(started);
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            u = updates.recv() => match u { Some(u) => u, None => return },
            _ = sleep_until(sweep), if sweep.is_some() => {
                w.sweep_and_publish();
                continue;
            }
            _ = sleep_until(defaults_at), if defaults_at.is_some() => {
                w.install(Trigger::DefaultServers).await;
                continue;
            }
            c = control.recv(), if control_open => {
                match c {
                    Some(Control::Replace(next)) => {
                        w.service = next;
                        w.install(Trigger::Reload).await;
                    }
                    None => control_open = false,
                }
                continue;
            }
        };
        let received = Instant::now();
        let mut listing = w.apply(first);
        while let Ok(more) = updates.try_recv() {
            listing |= w.apply(more);
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
                            listing |= w.apply(u);
                            while let Ok(more) = updates.try_recv() {
                                listing |= w.apply(more);
                            }
                        }
                        None => return,
                    },
                }
            }
        }
        w.install(Trigger::Updates { listing }).await;
        w.service
            .metrics
            .update_delay
            .observe(received.elapsed().as_secs_f64());
    }
}

impl Watcher {
    /// A watcher of `service` with no member yet (the first listing is a full build).
    fn new(service: Arc<Service>, metrics: Metrics, installed: watch::Sender<u64>) -> Watcher {
        Watcher {
            service,
            metrics,
            installed,
            members: BTreeMap::new(),
            states: HashMap::new(),
            draining: HashMap::new(),
            last_build: None,
            pending: BTreeMap::new(),
            full: true,
            unavailable: 0,
            filtered_out: 0,
            duplicates: 0,
        }
    }

    /// Applies one update to the member map; true for a full listing.
    fn apply(&mut self, update: WatchUpdate) -> bool {
        self.service.metrics.watch_updates.inc();
        match update {
            WatchUpdate::Reset(list) => {
                self.members = list.into_iter().map(|m| (m.id, m.node)).collect();
                self.full = true;
                return true;
            }
            WatchUpdate::Upsert(m) => {
                if !m.node.available {
                    info!(zk.node = %m.id, reason = m.node.unavailable_reason.as_deref().unwrap_or(""), "node marked unavailable; not routing to it");
                }
                let old = self.members.insert(m.id.clone(), m.node);
                self.pending.entry(m.id).or_insert(old);
            }
            WatchUpdate::Remove(id) => {
                let old = self.members.remove(&id);
                self.pending.entry(id).or_insert(old);
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
        (!s.synced() && !s.config.default_servers.is_empty()).then(|| started + s.config.first_sync_timeout)
    }

    /// Plans the next snapshot and applies it: one store. Changes of a few members to a
    /// table of ZooKeeper's backends take the incremental way ([`Self::install_changes`]);
    /// everything else (a full listing, fallbacks, locality, a reload) plans from scratch.
    async fn install(&mut self, trigger: Trigger) {
        let current = self.service.snapshot.load_full();
        if trigger == (Trigger::Updates { listing: false })
            && !self.full
            && self.install_changes(&current).await
        {
            return;
        }
        let plan = plan(&self.members, &current, &self.service.config, trigger);
        self.unavailable = plan.unavailable;
        self.filtered_out = plan.selected.filtered_out;
        let selected = plan.build.as_ref().map(|b| b.entries.len());
        self.apply_plan(plan, &current).await;
        let table = self.service.snapshot.load();
        self.duplicates = selected.map_or(0, |n| n.saturating_sub(table.table.backends().len()));
        self.pending.clear();
        self.full = false;
    }

    /// Installs the changes of `pending` into `current` without planning from scratch: only
    /// the changed members are looked at, parsed and keyed, and the table is made from the
    /// current one with them in place ([`RouteTable::apply`]); its other backends are
    /// shared. False (nothing done) when the full way is needed: fallbacks, locality or
    /// `keep_default_servers` in play, two members on one `host:port`, or a table that
    /// would be empty.
    async fn install_changes(&mut self, current: &Snapshot) -> bool {
        let config = &self.service.config;
        let locality = config.locality.as_ref().is_some_and(|l| !l.value.is_empty());
        if locality
            || config.keep_default_servers
            || current.selected.fallback != Fallback::None
            || !current.known.current
            || self.duplicates != 0
            || current.table.is_empty()
        {
            return false;
        }
        let passes = |n: &Node| config.label_filters.iter().all(|f| f.matches(&n.labels));
        let selected = |n: &&Node| n.available && passes(n);
        let key = |n: &Node| format!("{}:{}", n.host, n.port);
        let (mut unavailable, mut filtered_out) = (self.unavailable as i64, self.filtered_out as i64);
        let count = |n: Option<&Node>, d: i64, unavailable: &mut i64, filtered: &mut i64| match n {
            Some(n) if !n.available => *unavailable += d,
            Some(n) if !passes(n) => *filtered += d,
            _ => {}
        };
        // Removals first, so a member moving to a `host:port` another one left is seen.
        let mut changes: BTreeMap<String, Option<(String, Node)>> = BTreeMap::new();
        let mut joining = Vec::new();
        for (id, old) in &self.pending {
            let new = self.members.get(id);
            if old.as_ref() == new {
                continue;
            }
            count(old.as_ref(), -1, &mut unavailable, &mut filtered_out);
            count(new, 1, &mut unavailable, &mut filtered_out);
            if let Some(o) = old.as_ref().filter(selected) {
                let k = key(o);
                if current.table.backend(&k).is_none_or(|b| &b.id != id) {
                    return false;
                }
                changes.insert(k, None);
            }
            if let Some(n) = new.filter(selected) {
                joining.push((key(n), id, n));
            }
        }
        for (k, id, n) in joining {
            let taken = current.table.backend(&k).is_some() && !changes.contains_key(&k);
            if taken || changes.get(&k).is_some_and(Option::is_some) {
                return false;
            }
            changes.insert(k, Some((id.clone(), n.clone())));
        }
        let leaving = changes
            .iter()
            .filter(|(k, c)| c.is_none() && current.table.backend(k).is_some())
            .count();
        let staying = current.table.backends().len() - leaving;
        if staying + changes.values().filter(|c| c.is_some()).count() == 0 {
            return false;
        }
        // Decided: from here on the watcher's state changes.
        self.pending.clear();
        let started = Instant::now();
        let name = self.service.config.name.clone();
        let mut resolved = BTreeMap::new();
        for (k, change) in changes {
            let change = change.map(|(id, node)| (id, node, self.state_for(&name, &k)));
            resolved.insert(k, change);
        }
        let resolved = Arc::new(resolved);
        let policy = self.service.config.balance.name();
        let default_weight = self.service.config.default_weight;
        let table = if policy == PolicyName::Hash {
            let (base, changes) = (current.table.clone(), resolved.clone());
            let build = move || base.apply(&changes, policy, default_weight);
            match tokio::task::spawn_blocking(build).await {
                Ok(table) => table,
                Err(err) => {
                    warn!(error = %err, "route table build failed; keeping the current table");
                    self.full = true;
                    return true;
                }
            }
        } else {
            current.table.apply(&resolved, policy, default_weight)
        };
        let m = &self.service.metrics;
        m.build_time.observe(started.elapsed().as_secs_f64());
        let added: Vec<&String> = resolved
            .iter()
            .filter(|(k, c)| c.is_some() && current.table.backend(k).is_none())
            .map(|(k, _)| k)
            .collect();
        let removed: Vec<&String> = resolved
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(k, _)| k)
            .collect();
        let mut last_change_ms = current.last_change_ms;
        if !added.is_empty() || !removed.is_empty() {
            last_change_ms = table_updated(&added, &removed, table.backends().len());
        }
        let closes_at = Instant::now() + self.service.config.removal_grace;
        for (k, change) in resolved.iter() {
            match change {
                Some(_) => {
                    if let Some(b) = table.backend(k) {
                        b.state.metrics.weight.set(i64::from(b.weight));
                    }
                }
                None => {
                    if let Some(state) = self.states.remove(k) {
                        let id = current.table.backend(k).map(|b| b.id.clone()).unwrap_or_default();
                        state.metrics.weight.set(0);
                        self.draining.insert(k.clone(), Draining { id, state, closes_at });
                    }
                }
            }
        }
        self.unavailable = usize::try_from(unavailable).unwrap_or(0);
        self.filtered_out = usize::try_from(filtered_out).unwrap_or(0);
        m.unavailable_nodes.set(unavailable);
        m.filtered.set(filtered_out);
        m.backends.set(table.backends().len() as i64);
        m.updates.inc();
        self.service.outlier.refresh(&table);
        let known = Known {
            members: Arc::new(
                self.members
                    .iter()
                    .filter(|(_, n)| n.available)
                    .map(|(id, n)| (id.clone(), n.clone()))
                    .collect(),
            ),
            current: true,
        };
        let draining = self.sweep();
        let snapshot = Snapshot {
            table: Arc::new(table),
            selected: Selected {
                filtered_out: self.filtered_out,
                ..current.selected
            },
            known,
            source: current.source,
            draining,
            last_change_ms,
        };
        self.service.snapshot.store(Arc::new(snapshot));
        self.service.outlier.refresh(&self.service.snapshot.load().table);
        self.last_build = Some(Instant::now());
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    /// Applies a [`Plan`]: metrics and logs, backend states, the table built (unless kept),
    /// draining backends swept, then the snapshot stored once; connections waiting for a
    /// first sync are woken.
    async fn apply_plan(&mut self, plan: Plan, current: &Snapshot) {
        let m = &self.service.metrics;
        m.unavailable_nodes.set(plan.unavailable as i64);
        m.filtered.set(plan.selected.filtered_out as i64);
        m.using_defaults
            .set(i64::from(plan.selected.fallback == Fallback::DefaultServers));
        if plan.stale {
            if m.stale.get() == 0 {
                warn!(
                    kept = current.table.backends().len(),
                    "no backend left in ZooKeeper; keeping the previous ones"
                );
            }
            m.stale.set(1);
        } else {
            m.stale.set(0);
        }
        self.log_locality(plan.selected.locality);
        let mut last_change_ms = current.last_change_ms;
        let built = match plan.build {
            Some(Build { entries, demoted }) => {
                self.build_table(entries, demoted, current, &mut last_change_ms)
                    .await
            }
            None => None,
        };
        let table = built.clone().unwrap_or_else(|| current.table.clone());
        let draining = self.sweep();
        let snapshot = Snapshot {
            table,
            selected: plan.selected,
            known: plan.known,
            source: plan.source,
            draining,
            last_change_ms,
        };
        let (before, source) = (current.source, snapshot.source);
        self.service.snapshot.store(Arc::new(snapshot));
        if built.is_some() {
            // An ejection that raced the swap refreshed the old table: look again.
            self.service.outlier.refresh(&self.service.snapshot.load().table);
            self.last_build = Some(Instant::now());
        }
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
        if before != source || source == SyncSource::Zookeeper {
            self.log_synced(before, source);
        }
        if source != SyncSource::None {
            // After the store: a connection woken here sees the table.
            self.service
                .first_sync
                .send_if_modified(|synced| !std::mem::replace(synced, true));
        }
    }

    /// Logs where the table now comes from, when that changed.
    fn log_synced(&self, before: SyncSource, source: SyncSource) {
        let s = &self.service;
        s.metrics.from_cache.set(i64::from(source == SyncSource::Cache));
        let backends = s.snapshot.load().table.backends().len();
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
    }

    /// Logs locality flips and sets their gauge.
    fn log_locality(&self, locality: LocalityState) {
        let s = &self.service;
        let failover = matches!(locality, LocalityState::Failover { .. });
        let was = s.metrics.locality_failover.get() == 1;
        match locality {
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
    }

    /// Resolves the entries' backend states (kept, back from draining, or new), builds the
    /// table, logs the diff and moves the backends that left to draining. None when the
    /// build did not finish (the current table stays).
    /// The live state of backend `key` (`host:port`) of service `name`: the one it has, the
    /// one it left with if it is back within its grace (open connections stay counted), or
    /// a new one.
    fn state_for(&mut self, name: &str, key: &str) -> Arc<BackendState> {
        if let Some(state) = self.states.get(key) {
            return state.clone();
        }
        let state = match self.draining.remove(key) {
            Some(d) if !d.state.closing.is_cancelled() => d.state,
            _ => Arc::new(BackendState::new(
                key.to_string(),
                self.metrics.backend(name, key),
            )),
        };
        self.states.insert(key.to_string(), state.clone());
        state
    }

    async fn build_table(
        &mut self,
        entries: Vec<(String, Node)>,
        demoted: HashSet<String>,
        current: &Snapshot,
        last_change_ms: &mut u64,
    ) -> Option<Arc<RouteTable>> {
        let name = self.service.config.name.clone();
        let mut resolved = Vec::with_capacity(entries.len());
        let mut keys = BTreeSet::new();
        for (id, node) in entries {
            let key = format!("{}:{}", node.host, node.port);
            let state = self.state_for(&name, &key);
            keys.insert(key);
            resolved.push((id, node, state));
        }
        let table = self.build(resolved, demoted).await?;
        let old = &current.table;
        let before: BTreeSet<&str> = old.backends().iter().map(|b| b.state.key.as_str()).collect();
        let added: Vec<&String> = keys.iter().filter(|k| !before.contains(k.as_str())).collect();
        let removed: Vec<&&str> = before.iter().filter(|k| !keys.contains(**k)).collect();
        if !added.is_empty() || !removed.is_empty() {
            *last_change_ms = table_updated(&added, &removed, table.backends().len());
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
                let id = old
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
        Some(Arc::new(table))
    }

    /// Builds a table, on a blocking thread when it is big (see [`BLOCKING_BUILD_MIN`]).
    /// None when the blocking build did not finish (runtime shutting down, or a bug).
    async fn build(
        &self,
        entries: Vec<(String, Node, Arc<BackendState>)>,
        demoted: HashSet<String>,
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
    /// those whose grace is over; returns the rest, by key, for the snapshot.
    fn sweep(&mut self) -> Arc<[Draining]> {
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
        let mut list: Vec<Draining> = self.draining.values().cloned().collect();
        list.sort_by(|a, b| a.state.key.cmp(&b.state.key));
        list.into()
    }

    /// A sweep between installs: the same snapshot with the draining list brought up to
    /// date.
    fn sweep_and_publish(&mut self) {
        let draining = self.sweep();
        let current = self.service.snapshot.load_full();
        let same = current.draining.len() == draining.len()
            && current
                .draining
                .iter()
                .zip(draining.iter())
                .all(|(a, b)| a.state.key == b.state.key);
        if !same {
            self.service.snapshot.store(Arc::new(Snapshot {
                draining,
                ..(*current).clone()
            }));
        }
    }
}

/// Sleeps until `at`; forever when None (the select branch is disabled then anyway).
/// Logs a membership change of the route table (the benchmark times propagation by this
/// line: keep its text) and returns when it happened, in ms since the epoch.
fn table_updated(added: &[impl std::fmt::Debug], removed: &[impl std::fmt::Debug], backends: usize) -> u64 {
    info!(?added, ?removed, backends, "route table updated");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
