//! Heap allocation counts, for measuring the data path's cost (bench only).
//!
//! Built with the `count-alloc` feature (`cargo build --release -p synapse --features
//! count-alloc`), the process's global allocator is the system allocator wrapped by
//! `stats_alloc`, which counts every allocation, reallocation and free (one atomic add each).
//! The counts are served on the admin API as `GET /debug/alloc`; `bench/run.sh --only count`
//! divides their change over a load run by the requests served. Without the feature nothing
//! is wrapped and [`snapshot`] returns `None`.
//!
//! The wrapper is a crate because implementing `GlobalAlloc` needs `unsafe`, which this
//! workspace forbids.

/// Allocation counters since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocCounts {
    /// Allocations (`alloc` and `alloc_zeroed`).
    pub allocations: u64,
    /// Frees.
    pub deallocations: u64,
    /// Reallocations (a `Vec` or `String` growing in place or moving).
    pub reallocations: u64,
    /// Bytes ever allocated (growth by reallocation included).
    pub bytes_allocated: u64,
    /// Bytes ever freed (shrinking by reallocation included).
    pub bytes_deallocated: u64,
}

impl AllocCounts {
    /// Heap bytes in use now (allocated minus freed).
    pub fn live_bytes(&self) -> u64 {
        self.bytes_allocated.saturating_sub(self.bytes_deallocated)
    }

    /// The counts as the JSON object `GET /debug/alloc` serves.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "allocations": self.allocations,
            "deallocations": self.deallocations,
            "reallocations": self.reallocations,
            "bytes_allocated": self.bytes_allocated,
            "bytes_deallocated": self.bytes_deallocated,
            "live_bytes": self.live_bytes(),
        })
    }
}

#[cfg(feature = "count-alloc")]
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// The counts so far, or `None` when built without the `count-alloc` feature.
pub fn snapshot() -> Option<AllocCounts> {
    #[cfg(feature = "count-alloc")]
    {
        let s = GLOBAL.stats();
        Some(AllocCounts {
            allocations: s.allocations as u64,
            deallocations: s.deallocations as u64,
            reallocations: s.reallocations as u64,
            bytes_allocated: s.bytes_allocated as u64,
            bytes_deallocated: s.bytes_deallocated as u64,
        })
    }
    #[cfg(not(feature = "count-alloc"))]
    None
}
