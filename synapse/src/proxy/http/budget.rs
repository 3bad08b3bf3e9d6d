//! The retry budget (Finagle's `RetryBudget`, linkerd's `retry_budget`). HOT PATH:
//! [`RetryBudget::on_request`] runs once per request: one relaxed load and one relaxed add,
//! no lock, no allocation.
//!
//! Over a sliding window of [`WINDOW_SECS`] one-second slots, retries may add up to
//! `percent` % of the requests plus `min_per_second` per second: a backend outage costs at
//! most that much extra load, and a quiet service can still retry a few requests. Slots are
//! reset lazily when a new second reuses them; a count lost to a concurrent reset only makes
//! the budget a little more or less generous for that second.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RetryBudgetConfig;

/// Seconds the budget remembers: Finagle's default `ttl`.
pub const WINDOW_SECS: u64 = 10;

#[derive(Debug, Default)]
struct Slot {
    /// The second this slot counts (seconds since the process epoch, +1 so 0 = never).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Retry budget of one service.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    slots: [Slot; WINDOW_SECS as usize],
}

impl RetryBudget {
    /// An empty budget (only `min_per_second` is available at first).
    pub fn new(config: RetryBudgetConfig) -> RetryBudget {
        RetryBudget {
            config,
            slots: Default::default(),
        }
    }

    /// The slot of `second`, reset if it last counted an older second.
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW_SECS) as usize];
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Counts a request (a deposit of `percent` % of a retry). `now_ns`: [`crate::balance::now_ns`].
    pub fn on_request(&self, now_ns: u64) {
        self.slot(second(now_ns)).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is one left in the window.
    pub fn try_retry(&self, now_ns: u64) -> bool {
        let now = second(now_ns);
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let s = slot.second.load(Ordering::Relaxed);
            if s != 0 && s + WINDOW_SECS > now {
                requests += slot.requests.load(Ordering::Relaxed);
                retries += slot.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = u64::from(self.config.min_per_second) * WINDOW_SECS
            + requests * u64::from(self.config.percent) / 100;
        if retries >= allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The second of `now_ns`, never 0.
fn second(now_ns: u64) -> u64 {
    now_ns / 1_000_000_000 + 1
}

#[cfg(test)]
mod tests;
