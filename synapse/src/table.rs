//! Route tables. HOT PATH: [`RouteTable::pick`] runs once per connection.
//!
//! A table is immutable once built. The watcher task (the single writer) builds a new one
//! off the data path and swaps it in through one `ArcSwap`; connections load it once. The
//! table owns its [`Balancer`], built with it. Per-backend live state ([`BackendState`]:
//! active connections, latency EWMA, ejection, metric handles) is keyed by `host:port` and
//! carried from one table to the next, so it survives membership changes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use common::codec::Node;
use tokio_util::sync::CancellationToken;

use crate::balance::{Balancer, Ctx, Live, Member, PolicyName};
use crate::metrics::BackendMetrics;
use crate::outlier::{Outlier, Panic};
use crate::proxy::http::HttpBackend;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address: no resolution on the data path.
    Addr(SocketAddr),
    /// A hostname, resolved at connect time.
    Host(String, u16),
}

/// Live state of one backend, shared by every table that contains it.
#[derive(Debug)]
pub struct BackendState {
    /// `host:port`, the backend's identity.
    pub key: String,
    /// Metric handles, resolved once.
    pub metrics: BackendMetrics,
    /// Active connections, latency EWMA, ejection deadline; shared with the balancers.
    pub live: Arc<Live>,
    /// Consecutive failures and ejection history.
    pub outlier: Outlier,
    /// Cancelled when the backend has left the table and its `removal_grace` is over: its
    /// remaining connections close.
    pub closing: CancellationToken,
    /// HTTP mode: keep-alive connection pool and HTTP metric handles, set up at the
    /// backend's first request.
    pub http: OnceLock<HttpBackend>,
}

impl BackendState {
    /// Fresh state for the backend `key` (`host:port`).
    pub fn new(key: String, metrics: BackendMetrics) -> BackendState {
        BackendState {
            key,
            metrics,
            live: Arc::new(Live::new()),
            outlier: Outlier::default(),
            closing: CancellationToken::new(),
            http: OnceLock::new(),
        }
    }
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

/// An immutable set of backends with their balancer.
#[derive(Debug, Default)]
pub struct RouteTable {
    backends: Vec<Backend>,
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
        let backends: Vec<Backend> = entries
            .into_iter()
            .map(|(id, node, state)| {
                let target = match node.host.parse() {
                    Ok(ip) => Target::Addr(SocketAddr::new(ip, node.port)),
                    Err(_) => Target::Host(node.host.clone(), node.port),
                };
                let m = Member::from_node(&state.key, &node, default_weight, &state.live);
                let remote = demoted.contains(&state.key);
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
            })
            .collect();
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
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// True when there is nothing to route to.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The balancing policy.
    pub fn policy(&self) -> PolicyName {
        self.balancer.policy()
    }

    /// The panic state (see [`crate::outlier`]).
    pub fn panic(&self) -> &Panic {
        &self.panic
    }

    /// Up to `ctx.attempts` distinct backends to try, in order (see [`Balancer::pick`]):
    /// never a weight-0 one, backups only after every usable primary.
    pub fn pick(&self, ctx: Ctx) -> impl Iterator<Item = &Backend> {
        self.balancer.pick(ctx).filter_map(|i| self.backends.get(i))
    }
}

#[cfg(test)]
mod tests;
