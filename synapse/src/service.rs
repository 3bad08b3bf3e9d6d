//! One routed service, as the data path, the admin API and the writers share it: its config,
//! its published [`Snapshot`] (one `ArcSwap`, written by its watcher task, see
//! [`watcher`]), its metric handles, its outlier detector and its connection limit.

pub mod watcher;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use common::registry::Session;
use tokio::sync::{watch, Semaphore};

use crate::config::ServiceConfig;
use crate::metrics::ServiceMetrics;
use crate::outlier::Detector;
use crate::table::{RouteTable, Snapshot};

/// Shared view of one service: read by the proxy and the admin API.
#[derive(Debug)]
pub struct Service {
    /// Its config.
    pub config: ServiceConfig,
    /// What its watcher last installed: table, selection, known members, source, draining
    /// backends. Loaded once per connection (TCP) or request (HTTP).
    pub snapshot: ArcSwap<Snapshot>,
    /// Set once a first table is installed, as a channel, for connections that arrive before
    /// it and wait (the fast path reads [`Snapshot::synced`]).
    pub first_sync: watch::Sender<bool>,
    /// Metric handles.
    pub metrics: ServiceMetrics,
    /// Outlier ejection (its config is `config.outlier`).
    pub outlier: Detector,
    /// `max_connections` permits, taken before `accept`. None: no limit.
    pub conn_limit: Option<Arc<Semaphore>>,
    /// The ZooKeeper session its watcher uses (for the state file: is it connected?).
    pub session: Option<Arc<Session>>,
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
            snapshot: ArcSwap::default(),
            first_sync: watch::Sender::new(false),
            metrics,
            conn_limit,
            session,
        }
    }

    /// The successor of `old` under a new `config` (same name and ZooKeeper location): it
    /// starts with `old`'s snapshot (table, sync state, what it knew, draining backends), so
    /// that no connection waits while the watcher rebuilds the table with the new settings.
    /// `conn_limit`: the listener's semaphore, kept when `max_connections` did not change.
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
        let snapshot = old.snapshot.load_full();
        if snapshot.synced() {
            new.first_sync.send_replace(true);
        }
        new.snapshot.store(snapshot);
        new
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current route table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.snapshot.load().table.clone()
    }

    /// True once a first table is installed.
    pub fn synced(&self) -> bool {
        self.snapshot.load().synced()
    }

    /// Closes every connection of the service now (a service a reload removed, once its
    /// drain time is over): their backends' `closing` tokens fire.
    pub fn close_connections(&self) {
        let snapshot = self.snapshot.load();
        for b in snapshot.table.backends() {
            b.state.closing.cancel();
        }
        for d in snapshot.draining.iter() {
            d.state.closing.cancel();
        }
    }
}
