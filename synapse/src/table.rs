//! Route tables. HOT PATH: [`RouteTable::pick`] runs once per connection.
//!
//! A table is immutable once built. The watcher task (the single writer) builds a new one
//! off the data path and swaps it in through one `ArcSwap`; connections load it once. The
//! table owns its [`Balancer`], built with it. Per-backend live state ([`BackendState`]:
//! active connections, latency EWMA, ejection, metric handles) is keyed by `host:port` and
//! carried from one table to the next, so it survives membership changes.
//!
//! A service publishes one [`Snapshot`] (its table, what the filters made of the members,
//! the members the state file keeps, where they came from, the draining backends), stored
//! once per install in one `ArcSwap`: the data path, the admin API, the state file and
//! `file_output` all read the same one, so none can disagree with what routes.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::codec::Node;

use crate::backend::{now_ns, BackendState, OutlierConfig};
use crate::balance::{Balancer, Ctx, Member, PolicyName};
use crate::filter::{Fallback, LocalityState};

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address: no resolution on the data path.
    Addr(SocketAddr),
    /// A hostname, resolved at connect time.
    Host(String, u16),
}

/// One backend in a table.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The znode it came from.
    pub id: String,
    /// Its payload.
    pub node: Node,
    /// Where to connect.
    pub target: Target,
    /// Effective weight (payload, `haproxy_server_options`, `default_weight`); 0 = no new
    /// connection.
    pub weight: u32,
    /// `backup` in `haproxy_server_options`, or demoted by locality: used only when no other
    /// backend is usable.
    pub backup: bool,
    /// Locality demoted it to a backup (it is not in this host's zone, and enough local
    /// backends are usable).
    pub remote: bool,
    /// Live state.
    pub state: Arc<BackendState>,
}

/// A backend to build: `(znode id, node, state)`.
pub type Entry = (String, Node, Arc<BackendState>);

/// Backends to put in place, by `host:port`; None: the backend leaves.
pub type Changes = BTreeMap<String, Option<Entry>>;

/// An immutable set of backends with their balancer.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Shared with the tables built from this one (see [`RouteTable::apply`]).
    backends: Vec<Arc<Backend>>,
    balancer: Balancer,
    panic: Panic,
}

impl RouteTable {
    /// Builds a table from `(znode id, node, state)`; one entry per `host:port` (the first
    /// znode wins), in a stable order, balanced by `policy`. Nodes without a weight weigh
    /// `default_weight`. Cost: see [`Balancer::build`] (`hash` over 1000 backends takes tens
    /// of milliseconds: the watcher builds big tables on a blocking thread).
    pub fn build(
        entries: Vec<(String, Node, Arc<BackendState>)>,
        policy: PolicyName,
        default_weight: u32,
    ) -> RouteTable {
        Self::build_demoting(entries, policy, default_weight, &HashSet::new())
    }

    /// [`build`](Self::build), with the backends whose `host:port` is in `demoted` made
    /// backups (locality: see [`crate::filter`]).
    pub fn build_demoting(
        mut entries: Vec<(String, Node, Arc<BackendState>)>,
        policy: PolicyName,
        default_weight: u32,
        demoted: &HashSet<String>,
    ) -> RouteTable {
        entries.sort_by(|a, b| a.2.key.cmp(&b.2.key).then_with(|| a.0.cmp(&b.0)));
        entries.dedup_by(|a, b| a.2.key == b.2.key);
        // Not `collect`: it would reuse the entries' allocation (about 190 bytes an element
        // where a pointer needs 8) and keep it for the table's life (issue 13).
        let mut backends: Vec<Arc<Backend>> = Vec::with_capacity(entries.len());
        backends.extend(entries.into_iter().map(|(id, node, state)| {
            let remote = demoted.contains(&state.key);
            Arc::new(Backend::new(id, node, state, default_weight, remote))
        }));
        Self::with_backends(backends, policy)
    }

    /// The table with the backends of `changes` (by `host:port`: a new or changed backend,
    /// or None for one that left) in place of this table's; the others are shared, not
    /// copied. Cost: the changed backends' parsing plus one pass over pointers, and the
    /// balancer's build ([`Balancer::build`]: `O(n)` over integers for every policy but
    /// `hash`, whose Maglev table is rebuilt). No locality: every backend is a primary
    /// unless its options say `backup` (the watcher takes the full build otherwise).
    pub fn apply(&self, changes: &Changes, policy: PolicyName, default_weight: u32) -> RouteTable {
        let mut backends = Vec::with_capacity(self.backends.len() + changes.len());
        let mut changed = changes.iter().peekable();
        let fresh = |change: &Option<Entry>| {
            change.as_ref().map(|(id, node, state)| {
                Arc::new(Backend::new(
                    id.clone(),
                    node.clone(),
                    state.clone(),
                    default_weight,
                    false,
                ))
            })
        };
        for b in &self.backends {
            while let Some((key, change)) = changed.next_if(|(k, _)| k.as_str() < b.state.key.as_str()) {
                debug_assert!(key.as_str() < b.state.key.as_str());
                backends.extend(fresh(change));
            }
            match changed.next_if(|(k, _)| k.as_str() == b.state.key.as_str()) {
                Some((_, change)) => backends.extend(fresh(change)),
                None => backends.push(b.clone()),
            }
        }
        for (_, change) in changed {
            backends.extend(fresh(change));
        }
        Self::with_backends(backends, policy)
    }

    fn with_backends(backends: Vec<Arc<Backend>>, policy: PolicyName) -> RouteTable {
        let members: Vec<Member<'_>> = backends
            .iter()
            .map(|b| Member {
                key: &b.state.key,
                weight: b.weight,
                backup: b.backup,
                live: &b.state.live,
            })
            .collect();
        let balancer = Balancer::build(policy, &members);
        RouteTable {
            backends,
            balancer,
            panic: Panic::default(),
        }
    }

    /// The backends, ordered by `host:port`.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backend at `key` (`host:port`), by binary search.
    pub fn backend(&self, key: &str) -> Option<&Arc<Backend>> {
        self.backends
            .binary_search_by(|b| b.state.key.as_str().cmp(key))
            .ok()
            .and_then(|i| self.backends.get(i))
    }

    /// True when there is nothing to route to.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The balancing policy.
    pub fn policy(&self) -> PolicyName {
        self.balancer.policy()
    }

    /// The panic state (see [`Panic`]).
    pub fn panic(&self) -> &Panic {
        &self.panic
    }

    /// Up to `ctx.attempts` distinct backends to try, in order (see [`Balancer::pick`]):
    /// never a weight-0 one, backups only after every usable primary.
    pub fn pick(&self, ctx: Ctx) -> impl Iterator<Item = &Arc<Backend>> {
        self.balancer.pick(ctx).filter_map(|i| self.backends.get(i))
    }
}

impl Backend {
    /// A backend from its znode: target resolved if an IP, weight and `backup` from the
    /// payload and `haproxy_server_options`; `remote`: demoted by locality.
    fn new(id: String, node: Node, state: Arc<BackendState>, default_weight: u32, remote: bool) -> Backend {
        let target = match node.host.parse() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, node.port)),
            Err(_) => Target::Host(node.host.clone(), node.port),
        };
        let m = Member::from_node(&state.key, &node, default_weight, &state.live);
        let (weight, backup) = (m.weight, m.backup || remote);
        Backend {
            id,
            node,
            target,
            weight,
            backup,
            remote,
            state,
        }
    }
}

/// Where a service's route table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncSource {
    /// Nothing yet: connections wait for the first sync.
    #[default]
    None,
    /// ZooKeeper listed the path (since start, or since the reload that created the
    /// service's watcher).
    Zookeeper,
    /// The state file, until ZooKeeper lists the path.
    Cache,
    /// No ZooKeeper listing within `first_sync_timeout`: the default servers.
    DefaultServers,
}

impl SyncSource {
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

/// What the filters and fallbacks made of the members (for the admin API).
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

/// Everything a service publishes, stored at once by its watcher (the single writer).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The route table. The data path loads it once per connection (TCP) or request (HTTP).
    pub table: Arc<RouteTable>,
    /// What the filters and fallbacks made of the members.
    pub selected: Selected,
    /// The members the state file should keep.
    pub known: Known,
    /// Where the table came from; [`SyncSource::None`] until the first sync.
    pub source: SyncSource,
    /// Removed backends still draining, by key, as of the watcher's last look.
    pub draining: Arc<[Draining]>,
    /// Last change of the backend set, in ms since the Unix epoch; 0 before the first.
    pub last_change_ms: u64,
}

impl Snapshot {
    /// True once a first table is installed (from ZooKeeper, the state file or the default
    /// servers).
    pub fn synced(&self) -> bool {
        self.source != SyncSource::None
    }
}

/// Panic mode of one route table: until when picks ignore ejection (see [`crate::outlier`];
/// computed by its `Detector`).
#[derive(Debug, Default)]
pub struct Panic {
    /// [`now_ns`] deadline; 0 = not in panic.
    until_ns: AtomicU64,
}

impl Panic {
    /// True while too few backends are usable. HOT PATH: one relaxed load; the clock is read
    /// only while a panic deadline is set.
    pub fn active(&self) -> bool {
        let until = self.until_ns.load(Ordering::Relaxed);
        until != 0 && now_ns() < until
    }

    /// Recomputes the deadline from the ejections of `backends` (the table's).
    pub(crate) fn refresh(&self, backends: &[Arc<Backend>], config: &OutlierConfig) {
        let now = now_ns();
        let mut pickable = 0;
        let mut ejected: Vec<u64> = Vec::new();
        for b in backends.iter().filter(|b| b.weight > 0) {
            pickable += 1;
            let until = b.state.live.ejected_until();
            if until > now {
                ejected.push(until);
            }
        }
        let allowed = config.ejected_before_panic(pickable);
        let until = if ejected.len() > allowed {
            // Panic lasts while more than `allowed` ejections run: until the (allowed+1)-th
            // latest one ends.
            ejected.sort_unstable_by(|a, b| b.cmp(a));
            ejected[allowed]
        } else {
            0
        };
        self.until_ns.store(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
