//! Passive outlier ejection and the panic threshold.
//!
//! Nothing here probes a backend: the proxy reports what its own connections saw.
//! HOT PATH on success ([`Outlier::on_success`]: one or two relaxed loads) and per pick
//! ([`Panic::active`]: one relaxed load); the failure path may take the service's ejection
//! lock and scan the table, which only happens when a backend is failing.
//!
//! - **Ejection.** `consecutive_failures` failed connect attempts in a row (in HTTP mode, 5xx
//!   answers too: [`Failure::ServerError`]) eject a backend for `base_ejection`, doubled for
//!   each ejection that starts less than `max_ejection` after the previous one ended, capped at
//!   `max_ejection`. An ejected backend gets no new pick until its time is up; then it is
//!   *on probation*: its first failure ejects it again at once (with the doubled time), its
//!   first success ends the probation. No active probing: traffic is the probe.
//! - **Cap.** An ejection that would leave more than `max_ejected_percent` of the service's
//!   pickable backends (weight > 0) ejected does not happen (one ejection is always allowed);
//!   the next failure asks again.
//! - **Panic.** When fewer than `panic_threshold_percent` of the pickable backends are usable,
//!   picks ignore ejection and use every backend (Envoy's panic mode): a partial outage should
//!   not pile the whole load on the few backends left. The balancer itself also ignores
//!   ejection when nothing at all is usable. The panic state is computed when an ejection
//!   happens or a table is built, as a deadline (the instant enough ejections will have
//!   expired), so a pick reads one atomic.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{debug, info};

pub use crate::backend::{
    Outlier, OutlierConfig, DEFAULT_BASE_EJECTION, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_MAX_EJECTED_PERCENT,
    DEFAULT_MAX_EJECTION, DEFAULT_PANIC_THRESHOLD_PERCENT,
};
pub use crate::table::Panic;
use crate::table::{Backend, RouteTable, Snapshot};

/// What made an attempt count as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused, reset or timed out.
    Connect,
    /// An HTTP 5xx answer (HTTP mode; reported by the HTTP proxy).
    ServerError,
}

/// The ejection logic of one service.
#[derive(Debug)]
pub struct Detector {
    config: OutlierConfig,
    /// Serialises ejection decisions, so concurrent failures eject a backend once and the
    /// `max_ejected_percent` cap holds. Taken only on the failure path.
    lock: Mutex<()>,
}

/// What a reported failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed (counted, or ejection off, or already ejected).
    Counted,
    /// The backend was ejected for this long.
    Ejected(Duration),
    /// Due for ejection, but `max_ejected_percent` of the backends are already ejected.
    Capped,
}

impl Detector {
    /// A detector with `config`.
    pub fn new(config: OutlierConfig) -> Detector {
        Detector {
            config,
            lock: Mutex::new(()),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Reports a failed attempt on `backend`. `snapshot` is the service's: the cap and the panic
    /// state are about its current table (perhaps newer than the one the attempt was picked
    /// from), loaded under the ejection lock so that a table being installed meanwhile is
    /// either seen here or refreshed after this ejection (see [`Detector::refresh`]).
    pub fn on_failure(&self, backend: &Backend, failure: Failure, snapshot: &ArcSwap<Snapshot>) -> Verdict {
        let state = &backend.state;
        if !state.outlier.on_failure(&state.live, &self.config) {
            return Verdict::Counted;
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let current = snapshot.load();
        let current = &current.table;
        // Another failure may have ejected it while this one waited.
        if state.live.is_ejected() || !state.outlier.due(&self.config) {
            return Verdict::Counted;
        }
        let pickable = current.backends().iter().filter(|b| b.weight > 0).count();
        let ejected = current
            .backends()
            .iter()
            .filter(|b| b.weight > 0 && b.state.live.is_ejected())
            .count();
        if ejected + 1 > self.config.max_ejected(pickable) {
            debug!(
                backend.addr = %state.key,
                ejected,
                pickable,
                "not ejecting: max_ejected_percent reached"
            );
            return Verdict::Capped;
        }
        let time = state.outlier.eject(&state.live, &self.config);
        state.metrics.ejections.inc();
        state.metrics.ejected.set(1);
        current.panic().refresh(current.backends(), &self.config);
        info!(
            backend.addr = %state.key,
            ?failure,
            ejected_for = ?time,
            panic = current.panic().active(),
            "backend ejected"
        );
        Verdict::Ejected(time)
    }

    /// Computes a table's panic state from its backends' ejections. The watcher calls it on
    /// a new table before installing it, and again on the installed table after the swap, so
    /// an ejection that raced the swap is not missed.
    pub fn refresh(&self, table: &RouteTable) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        table.panic().refresh(table.backends(), &self.config);
    }
}

#[cfg(test)]
mod tests;
