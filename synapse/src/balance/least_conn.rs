//! Weighted least connections. HOT PATH, and `O(n)`: every pick reads every candidate's
//! active count (one relaxed atomic load each; about a microsecond for 1000 backends). The
//! other policies are `O(1)` or `O(log n)`; prefer `p2c_ewma` for very large pools.
//!
//! The score is HAProxy's: `(active + 1) / weight`, lowest wins. Under load that keeps each
//! backend's share of the open connections proportional to its weight; when everything is
//! idle it sends every connection to the heaviest backend (ties are broken at random), which
//! is what "least loaded relative to capacity" means.

use super::Tier;

/// The best position among those `usable` says yes to, scanning from `start` so that ties go
/// to a random one; `start` itself when none is usable.
pub(crate) fn first(tier: &Tier, start: u32, mut usable: impl FnMut(u32) -> bool) -> u32 {
    let n = tier.len() as u32;
    let start = start.min(n.saturating_sub(1));
    let (mut best, mut best_load, mut best_weight) = (None, 0u64, 1u64);
    for pos in (start..n).chain(0..start) {
        let live = tier.live(pos);
        // `usable` (which may read the clock) only for backends with an ejection on record.
        if live.ejected_until() != 0 && !usable(pos) {
            continue;
        }
        // Both factors < 2³², so the cross products fit in a u64.
        let load = live.active().min(u64::from(u32::MAX - 1)) + 1;
        let weight = u64::from(tier.weight(pos));
        // load / weight < best_load / best_weight, exactly.
        if best.is_none() || load * best_weight < best_load * weight {
            (best, best_load, best_weight) = (Some(pos), load, weight);
        }
    }
    best.unwrap_or(start)
}
