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

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{debug, info};

use crate::balance::{now_ns, Live};
use crate::table::{Backend, RouteTable};

/// Outlier-ejection settings of one service (`outlier:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failed attempts in a row that eject a backend. 0 turns ejection off. Default 5.
    pub consecutive_failures: u32,
    /// First ejection time. Default 1 s.
    pub base_ejection: Duration,
    /// Longest ejection; also the quiet time after which the doubling starts again from
    /// `base_ejection`. Default 30 s.
    pub max_ejection: Duration,
    /// Most of the pickable backends that may be ejected at once, in percent (at least one
    /// backend may always be). Default 50.
    pub max_ejected_percent: u32,
    /// Below this share of usable backends, in percent, ejection is ignored. 0 = never.
    /// Default 50.
    pub panic_threshold_percent: u32,
}

/// Default of [`OutlierConfig::consecutive_failures`].
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Default of [`OutlierConfig::base_ejection`].
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(1);
/// Default of [`OutlierConfig::max_ejection`].
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(30);
/// Default of [`OutlierConfig::max_ejected_percent`].
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
/// Default of [`OutlierConfig::panic_threshold_percent`].
pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u32 = 50;

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            panic_threshold_percent: DEFAULT_PANIC_THRESHOLD_PERCENT,
        }
    }
}

impl OutlierConfig {
    /// True unless `consecutive_failures` is 0.
    pub fn enabled(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// The ejection time of the `streak`-th ejection in a row (1-based): `base · 2^(streak-1)`,
    /// at most `max_ejection`.
    pub fn ejection_time(&self, streak: u32) -> Duration {
        let factor = 1u32 << streak.saturating_sub(1).min(20);
        self.base_ejection
            .checked_mul(factor)
            .unwrap_or(self.max_ejection)
            .min(self.max_ejection)
    }

    /// How many of `pickable` backends may be ejected at once.
    pub fn max_ejected(&self, pickable: usize) -> usize {
        if pickable == 0 || self.max_ejected_percent == 0 {
            return 0;
        }
        (pickable * self.max_ejected_percent as usize / 100).max(1)
    }

    /// How many of `pickable` backends may be ejected before panic mode: the most that
    /// leaves at least `panic_threshold_percent` usable.
    pub fn ejected_before_panic(&self, pickable: usize) -> usize {
        let needed = (pickable * self.panic_threshold_percent as usize).div_ceil(100);
        pickable - needed.min(pickable)
    }
}

/// What made an attempt count as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused, reset or timed out.
    Connect,
    /// An HTTP 5xx answer (HTTP mode; reported by the HTTP proxy).
    ServerError,
}

/// Outlier state of one backend, carried across tables in its `BackendState`.
#[derive(Debug, Default)]
pub struct Outlier {
    /// Failures since the last success (or ejection).
    consecutive: AtomicU32,
    /// Ejections in a row (see [`OutlierConfig::ejection_time`]).
    streak: AtomicU32,
    /// Set at ejection; the first success clears it, a failure after the ejection ejects
    /// again at once.
    probation: AtomicBool,
    /// When the last ejection ends or ended ([`now_ns`] clock); 0 = never ejected.
    last_end_ns: AtomicU64,
}

impl Outlier {
    /// A successful attempt (a connect; in HTTP mode, a non-5xx answer). HOT PATH: loads
    /// only, unless there was a failure to forget.
    pub fn on_success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.probation.load(Ordering::Relaxed) {
            self.probation.store(false, Ordering::Relaxed);
        }
    }

    /// Counts a failure; true when the backend is due for ejection. Failures of attempts
    /// made while it is ejected (started before the ejection, or in panic mode) do not count.
    fn on_failure(&self, live: &Live, config: &OutlierConfig) -> bool {
        if !config.enabled() || live.is_ejected() {
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        n >= config.consecutive_failures || self.probation.load(Ordering::Relaxed)
    }

    fn due(&self, config: &OutlierConfig) -> bool {
        self.consecutive.load(Ordering::Relaxed) >= config.consecutive_failures
            || self.probation.load(Ordering::Relaxed)
    }

    /// Ejects now; returns the ejection time.
    fn eject(&self, live: &Live, config: &OutlierConfig) -> Duration {
        let now = now_ns();
        let last_end = self.last_end_ns.load(Ordering::Relaxed);
        let quiet = last_end == 0 || now.saturating_sub(last_end) >= nanos(config.max_ejection);
        let streak = if quiet {
            1
        } else {
            self.streak.load(Ordering::Relaxed).saturating_add(1)
        };
        let time = config.ejection_time(streak);
        self.streak.store(streak, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.probation.store(true, Ordering::Relaxed);
        self.last_end_ns
            .store(now.saturating_add(nanos(time)), Ordering::Relaxed);
        live.eject_for(time);
        time
    }

    /// Consecutive failures counted so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Panic mode of one route table: until when picks ignore ejection.
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
    fn refresh(&self, backends: &[Backend], config: &OutlierConfig) {
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

    /// Reports a failed attempt on `backend`. `table` is the service's: the cap and the panic
    /// state are about its current table (perhaps newer than the one the attempt was picked
    /// from), loaded under the ejection lock so that a table being installed meanwhile is
    /// either seen here or refreshed after this ejection (see [`Detector::refresh`]).
    pub fn on_failure(&self, backend: &Backend, failure: Failure, table: &ArcSwap<RouteTable>) -> Verdict {
        let state = &backend.state;
        if !state.outlier.on_failure(&state.live, &self.config) {
            return Verdict::Counted;
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let current = table.load();
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
