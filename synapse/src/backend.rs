//! One backend's live state, shared by every route table that contains it. The leaf of the
//! model: it imports nothing from the rest of synapse but the metric handle types, so the
//! balancers, tables, the outlier detector and the data path all build on it.
//!
//! - [`live`]: active connections, latency EWMA, ejection deadline (atomics; HOT PATH).
//! - [`outlier`]: consecutive failures and ejection history, with the settings they follow.
//! - [`BackendState`]: the above, plus the closing token, the metric handles and an opaque
//!   [`Slot`] the data path fills once per backend (HTTP mode: its connection pool), so the
//!   model never depends on the proxy's types.

mod live;
mod outlier;

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

pub use live::{now_ns, ns_at, Attempt, InFlight, Live, DEFAULT_RTT, EWMA_DECAY, FAILURE_PENALTY};
pub use outlier::{
    Outlier, OutlierConfig, DEFAULT_BASE_EJECTION, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_MAX_EJECTED_PERCENT,
    DEFAULT_MAX_EJECTION, DEFAULT_PANIC_THRESHOLD_PERCENT,
};

use crate::metrics::BackendMetrics;

/// Live state of one backend, shared by every table that contains it.
#[derive(Debug)]
pub struct BackendState {
    /// `host:port`, the backend's identity.
    pub key: String,
    /// Metric handles, resolved once.
    pub metrics: BackendMetrics,
    /// Active connections, latency EWMA, ejection deadline; shared with the balancers.
    pub live: Arc<Live>,
    /// Consecutive failures and ejection history.
    pub outlier: Outlier,
    /// Cancelled when the backend has left the table and its `removal_grace` is over: its
    /// remaining connections close.
    pub closing: CancellationToken,
    /// What the data path keeps per backend, set up at the backend's first use (HTTP mode:
    /// the keep-alive connection pool and HTTP metric handles).
    pub slot: Slot,
}

impl BackendState {
    /// Fresh state for the backend `key` (`host:port`).
    pub fn new(key: String, metrics: BackendMetrics) -> BackendState {
        BackendState {
            key,
            metrics,
            live: Arc::new(Live::new()),
            outlier: Outlier::default(),
            closing: CancellationToken::new(),
            slot: Slot::default(),
        }
    }
}

/// A value of a type the model does not know, set once (the data path's per-backend state).
/// Reading it costs an atomic load and a type check.
#[derive(Default)]
pub struct Slot(OnceLock<Box<dyn Any + Send + Sync>>);

impl Slot {
    /// The value, if it was set and is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get()?.downcast_ref()
    }

    /// The value, set by `init` if there was none. None when it holds another type than `T`
    /// (one data path owns a backend's slot, so that does not happen).
    pub fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Slot(set)"
        } else {
            "Slot(empty)"
        })
    }
}
