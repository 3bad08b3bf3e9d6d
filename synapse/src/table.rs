//! Route tables. HOT PATH: [`RouteTable::pick`] runs once per connection.
//!
//! A table is immutable once built. The watcher task (the single writer) builds a new one
//! off the data path and swaps it in through one `ArcSwap`; connections load it once.
//! Per-backend live state ([`BackendState`]) is keyed by `host:port` and carried from one
//! table to the next, so active-connection counts survive membership changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::codec::Node;

use crate::metrics::BackendMetrics;

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
    /// Live state.
    pub state: Arc<BackendState>,
}

/// An immutable set of backends with a round-robin cursor.
#[derive(Debug, Default)]
pub struct RouteTable {
    backends: Vec<Backend>,
    next: AtomicUsize,
}

impl RouteTable {
    /// Builds a table from `(znode id, node, state)`; one entry per `host:port` (the first
    /// znode wins), in a stable order.
    pub fn build(mut entries: Vec<(String, Node, Arc<BackendState>)>) -> RouteTable {
        entries.sort_by(|a, b| a.2.key.cmp(&b.2.key).then_with(|| a.0.cmp(&b.0)));
        entries.dedup_by(|a, b| a.2.key == b.2.key);
        let backends = entries
            .into_iter()
            .map(|(id, node, state)| {
                let target = match node.host.parse() {
                    Ok(ip) => Target::Addr(SocketAddr::new(ip, node.port)),
                    Err(_) => Target::Host(node.host.clone(), node.port),
                };
                Backend {
                    id,
                    node,
                    target,
                    state,
                }
            })
            .collect();
        RouteTable {
            backends,
            next: AtomicUsize::new(0),
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

    /// Up to `attempts` backends to try, in round-robin order starting at the next one.
    pub fn pick(&self, attempts: usize) -> impl Iterator<Item = &Backend> {
        let n = self.backends.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..attempts.min(n)).map(move |i| &self.backends[(start + i) % n])
    }
}

#[cfg(test)]
mod tests;
