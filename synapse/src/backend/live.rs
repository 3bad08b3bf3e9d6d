//! Per-backend live state. HOT PATH: read on every pick, written on every connection.
//!
//! A [`Live`] belongs to one backend identity (`host:port`) and outlives route tables: the
//! table's `BackendState` owns it in an `Arc`, and every balancer built from that table holds a
//! clone, so active counts, latency estimates and ejections carry across membership changes.
//! Everything here is atomics; no lock, no allocation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Latency estimate of a backend that has not been measured yet: 30 ms, linkerd's default.
/// It decays like a real estimate (so an unpicked backend becomes attractive in time) and
/// the first real sample replaces it outright.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Time constant of the peak-EWMA decay: 10 s (linkerd and finagle use the same). A sample
/// older than this weighs `1/e` of a fresh one, and an idle backend's estimate decays toward 0
/// with it, so a backend that was slow a minute ago is tried again.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Latency sample recorded for a failed connect attempt (at least this much, or the attempt's
/// real duration if longer): 1 s, the default connect timeout. Without it a backend that
/// refuses connections at once would look like the fastest one.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Nanoseconds since a process-wide monotonic epoch (the first call), never 0.
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// The [`now_ns`] clock at `t`, an instant already read (the data path reuses the clock
/// reads it has rather than reading again).
pub fn ns_at(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(*epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Live state of one backend: active connections, peak-EWMA latency, ejection.
#[derive(Debug)]
pub struct Live {
    /// Connections counted from the start of the connect attempt to the end of the session.
    active: AtomicU64,
    /// Peak-EWMA latency estimate in nanoseconds, as `f64` bits.
    ewma_ns: AtomicU64,
    /// False while `ewma_ns` is still the [`DEFAULT_RTT`] prior.
    measured: AtomicBool,
    /// When `ewma_ns` was last updated ([`now_ns`] clock).
    stamp_ns: AtomicU64,
    /// Not picked before this instant ([`now_ns`] clock); 0 = not ejected.
    ejected_until_ns: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Live {
    /// Fresh state: no connection, latency estimate [`DEFAULT_RTT`] as of now, not ejected.
    pub fn new() -> Live {
        Live::new_at(now_ns())
    }

    pub(crate) fn new_at(now: u64) -> Live {
        Live {
            active: AtomicU64::new(0),
            ewma_ns: AtomicU64::new((nanos(DEFAULT_RTT) as f64).to_bits()),
            measured: AtomicBool::new(false),
            stamp_ns: AtomicU64::new(now),
            ejected_until_ns: AtomicU64::new(0),
        }
    }

    /// Connections being attempted or established right now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a connect attempt as active (until the returned guard, or the [`InFlight`] it
    /// turns into, is dropped) and starts its latency clock.
    pub fn on_connect_start(self: &Arc<Live>) -> Attempt<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Attempt {
            live: self,
            started: Instant::now(),
        }
    }

    /// Records a latency sample (connect time, or response time in HTTP mode).
    pub fn on_complete(&self, latency: Duration) {
        self.observe_at(nanos(latency), now_ns());
    }

    /// [`Live::on_complete`] at `now` ([`now_ns`] clock).
    pub fn on_complete_at(&self, latency: Duration, now: u64) {
        self.observe_at(nanos(latency), now);
    }

    /// Records a failed attempt that took `elapsed`, as a latency of at least
    /// [`FAILURE_PENALTY`].
    pub fn on_failure(&self, elapsed: Duration) {
        self.observe_at(nanos(elapsed.max(FAILURE_PENALTY)), now_ns());
    }

    /// Peak EWMA: a sample above the estimate replaces it at once (peak sensitivity); a lower
    /// one is blended in with weight `1 - exp(-elapsed / EWMA_DECAY)`, `elapsed` being the
    /// time since the previous update. The first sample replaces the [`DEFAULT_RTT`] prior.
    /// Concurrent updates race benignly (one may be lost); the CAS loop only keeps the stored
    /// value a well-formed blend.
    pub(crate) fn observe_at(&self, rtt_ns: u64, now: u64) {
        let rtt = rtt_ns as f64;
        if !self.measured.swap(true, Ordering::Relaxed) {
            self.ewma_ns.store(rtt.to_bits(), Ordering::Relaxed);
            self.stamp_ns.fetch_max(now, Ordering::Relaxed);
            return;
        }
        let stamp = self.stamp_ns.load(Ordering::Relaxed);
        let recency = 1.0 - decay(now.saturating_sub(stamp));
        let _ = self
            .ewma_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let est = f64::from_bits(bits);
                let next = if rtt > est {
                    rtt
                } else {
                    est + (rtt - est) * recency
                };
                Some(next.to_bits())
            });
        self.stamp_ns.fetch_max(now, Ordering::Relaxed);
    }

    /// The latency estimate at `now` in nanoseconds: the stored value decayed toward 0 by the
    /// time since its last update (an idle backend becomes attractive again).
    pub(crate) fn latency_at(&self, now: u64) -> f64 {
        let est = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let stamp = self.stamp_ns.load(Ordering::Relaxed);
        est * decay(now.saturating_sub(stamp))
    }

    /// The current latency estimate (see [`EWMA_DECAY`]).
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_at(now_ns()) as u64)
    }

    /// Keeps the backend out of new picks for `d` (until [`Live::uneject`]). Ignored by a pick
    /// when nothing else is usable (see `Ctx::ignore_ejection`).
    pub fn eject_for(&self, d: Duration) {
        let until = now_ns().saturating_add(nanos(d)).max(1);
        self.ejected_until_ns.store(until, Ordering::Relaxed);
    }

    /// Ends an ejection early.
    pub fn uneject(&self) {
        self.ejected_until_ns.store(0, Ordering::Relaxed);
    }

    /// True while ejected.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ns.load(Ordering::Relaxed);
        until != 0 && until > now_ns()
    }

    /// Raw ejection deadline; 0 = not ejected. Lets a pick skip the clock read in the common
    /// case.
    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until_ns.load(Ordering::Relaxed)
    }
}

/// `exp(-elapsed / EWMA_DECAY)`.
fn decay(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64) / nanos(EWMA_DECAY) as f64).exp()
}

/// A connect attempt in progress, counted in [`Live::active`]. Finish it with
/// [`Attempt::on_connect_ok`] or [`Attempt::on_connect_fail`]; dropping it (e.g. the task is
/// cancelled) just stops counting it.
#[derive(Debug)]
#[must_use = "dropping the attempt stops counting it as active"]
pub struct Attempt<'a> {
    live: &'a Arc<Live>,
    started: Instant,
}

impl Attempt<'_> {
    /// The connection is up: records the connect time as a latency sample and keeps the
    /// connection counted until the returned guard is dropped. The guard is owned: a
    /// connection keeps its backend's live state, not the route table it was picked from.
    pub fn on_connect_ok(self) -> InFlight {
        let live = self.live.clone();
        live.on_complete(self.started.elapsed());
        // The count moves from the attempt to the connection's guard without a gap.
        std::mem::forget(self);
        InFlight { live }
    }

    /// The attempt failed: records a penalty sample (see [`FAILURE_PENALTY`]) and stops
    /// counting it.
    pub fn on_connect_fail(self) {
        self.live.on_failure(self.started.elapsed());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.live.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Live {
    /// Counts an HTTP request in flight on this backend (in [`Live::active`], which
    /// `least_conn` and `p2c_ewma` read) until the returned guard is dropped: when its response
    /// body ends, or the request fails. Owned, so it can travel with a streamed response body.
    pub fn begin_request(self: &Arc<Live>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight { live: self.clone() }
    }
}

/// An HTTP request in flight on a backend, or an established TCP connection, counted in
/// [`Live::active`] until dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops counting the request as active"]
pub struct InFlight {
    live: Arc<Live>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.live.active.fetch_sub(1, Ordering::Relaxed);
    }
}
