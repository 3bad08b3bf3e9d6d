//! Weighted random. HOT PATH: [`Cumulative::draw`] is a binary search, `O(log n)`, exact.

use std::fmt;

/// Prefix sums of the weights; a draw is a binary search for a uniform point below the total.
pub(crate) struct Cumulative {
    sums: Box<[u64]>,
}

impl fmt::Debug for Cumulative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cumulative")
            .field("len", &self.sums.len())
            .field("total", &self.total())
            .finish()
    }
}

impl Cumulative {
    pub(crate) fn build(weights: &[u32]) -> Cumulative {
        let sums = weights
            .iter()
            .scan(0u64, |acc, &w| {
                *acc += u64::from(w);
                Some(*acc)
            })
            .collect();
        Cumulative { sums }
    }

    fn total(&self) -> u64 {
        self.sums.last().copied().unwrap_or(0)
    }

    /// The position owning the point `bits` maps to: position `i` with probability
    /// `weights[i] / total`. None when the total weight is 0.
    pub(crate) fn draw(&self, bits: u64) -> Option<u32> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let point = ((u128::from(bits) * u128::from(total)) >> 64) as u64;
        let pos = self.sums.partition_point(|&s| s <= point);
        u32::try_from(pos).ok()
    }
}
