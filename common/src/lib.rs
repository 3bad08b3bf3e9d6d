//! Shared parts of the nerve / synapse sidecar pair.
//!
//! Layout:
//! - [`config`]: reading YAML/JSON config files, key-path errors, durations.
//! - [`codec`]: the node payload codec (airbnb nerve, go-nerve, Finagle serversets). Pure.
//! - [`registry`]: the only module that talks to ZooKeeper: sessions, registration, watches.
//! - [`telemetry`]: `tracing` subscriber setup.
//! - [`metrics`]: Prometheus rendering.
//! - [`admin`]: the small localhost HTTP admin server.
//! - [`net`]: accept-error backoff and connection idle tracking (proxy and admin servers).
//! - [`shutdown`]: signals to a `CancellationToken`.
//! - [`notify`]: systemd notifications (`READY=1`, `STATUS=`, `WATCHDOG=1`, ...).
//! - [`cli`]: what both `main`s do once their CLI is parsed.
//! - [`alloc_count`]: heap allocation counts (feature `count-alloc`, bench only).
//! - [`handoff`]: the upgrade handoff to a successor process (unix socket, `SCM_RIGHTS`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod alloc_count;
pub mod cli;
pub mod codec;
pub mod config;
pub mod handoff;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod registry;
pub mod shutdown;
pub mod telemetry;

/// This machine's hostname (`localhost` when it cannot be read as UTF-8).
pub fn hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "localhost".to_string())
}
