//! Smooth weighted round-robin as a precomputed schedule. HOT PATH: [`Schedule::next`] is one
//! atomic add and one array read.
//!
//! nginx's smooth WRR spreads picks best but mutates every backend's counter on every pick
//! (a lock, or a CAS over the whole state). Here the same kind of sequence is computed once,
//! at build time, into an array that an atomic cursor walks:
//!
//! - The sequence is "earliest virtual deadline first": backend `i`'s `k`-th turn is due at
//!   `(k + φᵢ) / wᵢ`, with a per-backend phase `φᵢ ∈ (0, 1]` from the golden-ratio sequence so
//!   equal deadlines do not bunch up. In any window of the schedule each backend is within
//!   about two picks of its exact share, like nginx's algorithm (the tests compare the two),
//!   and the build is `O(S)` with a bucket sort (nginx's own recurrence would be `O(S · n)`).
//! - `S`, the schedule length, is the sum of the weights divided by their gcd, capped at
//!   [`SCHEDULE_CAP`]: past the cap the weights are scaled down proportionally (each kept
//!   ≥ 1), so a weight-1 backend among a thousand weight-255 ones gets about 1/65 536 of the
//!   picks instead of 1/255 001. That is the price of a bounded, lock-free schedule.
//! - The cursor starts at a random offset, so the many tables built during a weight ramp (and
//!   the many synapse hosts routing to one service) do not all start on the same backend.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::reduce;

/// Longest schedule, in entries (4 bytes each): 65 536.
pub const SCHEDULE_CAP: u64 = 1 << 16;

/// A precomputed smooth weighted round-robin sequence of tier positions.
pub(crate) struct Schedule {
    slots: Box<[u32]>,
    cursor: AtomicU64,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("len", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Schedule {
    /// Builds the schedule for `weights` (all > 0); `start` picks the initial cursor.
    pub(crate) fn build(weights: &[u32], start: u64) -> Schedule {
        let slots = sequence(weights);
        let cursor = AtomicU64::new(reduce(start, slots.len()) as u64);
        Schedule { slots, cursor }
    }

    /// The next position in the schedule.
    pub(crate) fn next(&self) -> Option<u32> {
        let n = self.slots.len() as u64;
        if n == 0 {
            return None;
        }
        let c = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.slots.get((c % n) as usize).copied()
    }

    /// A random slot: a weighted draw that leaves the cursor alone (used to replace an
    /// ejected backend's turn without skewing the sequence).
    pub(crate) fn at(&self, bits: u64) -> Option<u32> {
        self.slots.get(reduce(bits, self.slots.len())).copied()
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> &[u32] {
        &self.slots
    }
}

/// The schedule: one period of the earliest-deadline-first sequence over `weights`.
pub(crate) fn sequence(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return Box::new([]);
    }
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x) / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > SCHEDULE_CAP {
        for x in w.iter_mut().filter(|x| **x > 0) {
            let scaled = (u128::from(*x) * u128::from(SCHEDULE_CAP) + u128::from(sum / 2)) / u128::from(sum);
            *x = u64::try_from(scaled).unwrap_or(u64::MAX).max(1);
        }
    }
    // One period: each position takes exactly its (scaled) weight in turns. Its turns' deadlines
    // are all ≤ 1 and the next period's all > 1, so this is exactly the EDF sequence.
    let phases: Vec<u64> = (0..w.len() as u64).map(golden_phase).collect();
    let ties: Vec<u64> = (0..w.len() as u64).collect();
    edf_order(&w, &phases, &ties, &w).into_boxed_slice()
}

/// `φ ∈ [1, 2³²]` (i.e. `(0, 1]` in units of 2⁻³²) from the golden-ratio sequence: consecutive
/// positions get phases as far apart as possible.
fn golden_phase(i: u64) -> u64 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) + 1
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Earliest-virtual-deadline-first turn order: position `i` takes its `k`-th turn at virtual
/// time `(k + phases[i] / 2³²) / weights[i]`, for `k < turns[i]`; the result lists every turn
/// in deadline order. Ties go to the smaller `ties[i]`, then the smaller position. Positions
/// with weight 0 get no turn. Shared by the round-robin schedule and the Maglev fill order.
///
/// Deadlines are `f64`: IEEE arithmetic is deterministic, so every host computes the same
/// order. The sort is a bucket sort on the deadline (deadlines of weighted turns are spread
/// evenly, so buckets hold 0 to 3 turns), `O(total)` rather than a heap's `O(total log n)`:
/// this is most of a rebuild's cost.
pub(crate) fn edf_order(weights: &[u64], phases: &[u64], ties: &[u64], turns: &[u64]) -> Vec<u32> {
    let n = weights.len().min(phases.len()).min(ties.len()).min(turns.len());
    let mut ranked: Vec<usize> = (0..n).filter(|&i| weights[i] > 0 && turns[i] > 0).collect();
    ranked.sort_by_key(|&i| (ties[i], i));
    let deadline = |i: usize, k: u64| (k as f64 + phases[i] as f64 / 4_294_967_296.0) / weights[i] as f64;
    let total: usize = ranked
        .iter()
        .map(|&i| usize::try_from(turns[i]).unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add);
    let last = ranked
        .iter()
        .map(|&i| deadline(i, turns[i] - 1))
        .fold(0f64, f64::max);
    if total == 0 || last <= 0.0 {
        return Vec::new();
    }
    let uniform = ranked
        .windows(2)
        .all(|p| weights[p[0]] == weights[p[1]] && turns[p[0]] == turns[p[1]]);
    if uniform {
        // The common case (every weight equal): the order is one cycle, by first deadline,
        // repeated `turns` times; no sort of the whole sequence needed.
        let mut cycle: Vec<(f64, usize)> = ranked.iter().map(|&i| (deadline(i, 0), i)).collect();
        cycle.sort_by(|x, y| x.0.total_cmp(&y.0));
        let cycle: Vec<u32> = cycle
            .into_iter()
            .map(|(_, i)| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        return cycle.iter().copied().cycle().take(total).collect();
    }
    let buckets = total;
    let scale = buckets as f64 / last;
    let bucket = |d: f64| ((d * scale) as usize).min(buckets - 1);
    // Counting sort by bucket, then sort inside each (small) bucket.
    let mut starts = vec![0usize; buckets + 1];
    for &i in &ranked {
        for k in 0..turns[i] {
            starts[bucket(deadline(i, k)) + 1] += 1;
        }
    }
    for b in 0..buckets {
        starts[b + 1] += starts[b];
    }
    let mut fill = starts.clone();
    let mut sorted = vec![(0f64, 0u32); total];
    for (rank, &i) in ranked.iter().enumerate() {
        for k in 0..turns[i] {
            let d = deadline(i, k);
            let slot = &mut fill[bucket(d)];
            sorted[*slot] = (d, rank as u32);
            *slot += 1;
        }
    }
    for b in 0..buckets {
        let range = &mut sorted[starts[b]..starts[b + 1]];
        if range.len() > 1 {
            range.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        }
    }
    sorted
        .into_iter()
        .map(|(_, rank)| u32::try_from(ranked[rank as usize]).unwrap_or(u32::MAX))
        .collect()
}
