//! Per-backend outlier state and the ejection settings it follows. HOT PATH on success
//! ([`Outlier::on_success`]: one or two relaxed loads). The decisions that look at the whole
//! service (the `max_ejected_percent` cap, panic mode) are taken above the table, by
//! [`crate::outlier::Detector`]; see [`crate::outlier`] for the rules.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::live::{now_ns, Live};

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
    pub(crate) fn on_failure(&self, live: &Live, config: &OutlierConfig) -> bool {
        if !config.enabled() || live.is_ejected() {
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        n >= config.consecutive_failures || self.probation.load(Ordering::Relaxed)
    }

    pub(crate) fn due(&self, config: &OutlierConfig) -> bool {
        self.consecutive.load(Ordering::Relaxed) >= config.consecutive_failures
            || self.probation.load(Ordering::Relaxed)
    }

    /// Ejects now; returns the ejection time.
    pub(crate) fn eject(&self, live: &Live, config: &OutlierConfig) -> Duration {
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
