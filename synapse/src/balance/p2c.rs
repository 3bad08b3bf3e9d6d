//! Power of two choices over peak-EWMA latency (finagle's and linkerd's "P2C + PeakEWMA").
//! HOT PATH, `O(1)`: two uniform samples, two cost computations.
//!
//! A backend's cost is `latency · (active + 1) / weight`: the decayed peak-EWMA latency (see
//! [`super::Live`]) scaled by the work already queued on it, per unit of weight. Two distinct
//! backends are sampled uniformly and the cheaper one wins (a tie goes to either at random).
//! Weights therefore act as capacity ratios, as in `least_conn`: a weight-1 canary next to a
//! weight-99 backend gets traffic once the big one carries about 99 times its load; when
//! everything is idle the heavier of each sampled pair wins.
//!
//! p2c balances load, not connection counts: at idle (connections that end before the next
//! one starts) the backends with the lowest latency take most picks, and with two backends
//! the cheaper one takes them all, until its queue or latency grows.

use super::{reduce, Tier};

/// The better of two uniformly sampled distinct positions, preferring usable ones.
/// `bits` are two independent random words; `now` is the [`super::now_ns`] clock.
pub(crate) fn first(tier: &Tier, bits: [u64; 2], now: u64, mut usable: impl FnMut(u32) -> bool) -> u32 {
    let n = tier.len();
    if n < 2 {
        return 0;
    }
    let a = reduce(bits[0], n) as u32;
    let mut b = reduce(bits[1], n - 1) as u32;
    if b >= a {
        b += 1;
    }
    match (usable(a), usable(b)) {
        (true, false) => return a,
        (false, true) => return b,
        // Neither usable: the walk that follows looks for one.
        (false, false) => return a,
        (true, true) => {}
    }
    let (ca, cb) = (cost(tier, a, now), cost(tier, b, now));
    if ca < cb || (ca == cb && bits[1] & 1 == 0) {
        a
    } else {
        b
    }
}

/// `latency_ns · (active + 1) / weight`.
pub(crate) fn cost(tier: &Tier, pos: u32, now: u64) -> f64 {
    let live = tier.live(pos);
    live.latency_at(now) * (live.active() as f64 + 1.0) / f64::from(tier.weight(pos).max(1))
}
