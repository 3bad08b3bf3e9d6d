//! synapse's Prometheus metrics, registered in an injected `Registry`. Label handles are
//! resolved once per service and once per backend (when it joins a route table), never per
//! connection.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// All synapse metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    connections: IntCounterVec,
    no_backend: IntCounterVec,
    rejected: IntCounterVec,
    idle_closed: IntCounterVec,
    backends: IntGaugeVec,
    invalid_nodes: IntCounterVec,
    unavailable_nodes: IntGaugeVec,
    updates: IntCounterVec,
    stale: IntGaugeVec,
    bytes: IntCounterVec,
    backend_active: IntGaugeVec,
    backend_connections: IntCounterVec,
    backend_failures: IntCounterVec,
}

/// Handles for one service.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    /// Client connections accepted.
    pub connections: IntCounter,
    /// Client connections closed because no backend could be reached.
    pub no_backend: IntCounter,
    /// Client connections closed unserved, by reason.
    pub rejected: Rejected,
    /// Proxied connections closed after `idle_timeout` without traffic.
    pub idle_closed: IntCounter,
    /// Backends in the current route table.
    pub backends: IntGauge,
    /// Znodes that could not be decoded.
    pub invalid_nodes: IntCounter,
    /// Nodes present but marked unavailable (go-nerve `available: false`).
    pub unavailable_nodes: IntGauge,
    /// Route tables installed.
    pub updates: IntCounter,
    /// 1 while the path is empty and the previous backends are kept.
    pub stale: IntGauge,
    /// Bytes from clients to backends.
    pub bytes_up: IntCounter,
    /// Bytes from backends to clients.
    pub bytes_down: IntCounter,
}

/// `synapse_connections_rejected_total` handles of one service, one per `reason`.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// `not_synced`: no first sync from ZooKeeper within `first_sync_timeout`.
    pub not_synced: IntCounter,
    /// `no_backend`: synced, but no backend in the table or none reachable.
    pub no_backend: IntCounter,
    /// `shutdown`: synapse stopped while the connection waited for the first sync.
    pub shutdown: IntCounter,
}

/// Handles for one backend of one service.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Connections open now.
    pub active: IntGauge,
    /// Connections established.
    pub connections: IntCounter,
    /// Connection attempts that failed (refused or timed out).
    pub failures: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric in `registry`.
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let svc = &["service"];
        let be = &["service", "backend"];
        let m = Metrics {
            connections: IntCounterVec::new(
                Opts::new("synapse_connections_total", "Client connections accepted"),
                svc,
            )?,
            no_backend: IntCounterVec::new(
                Opts::new(
                    "synapse_no_backend_total",
                    "Client connections closed because no backend could be reached",
                ),
                svc,
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "synapse_connections_rejected_total",
                    "Client connections closed without being proxied, by reason \
                     (not_synced, no_backend, shutdown)",
                ),
                &["service", "reason"],
            )?,
            idle_closed: IntCounterVec::new(
                Opts::new(
                    "synapse_idle_timeouts_total",
                    "Proxied connections closed after idle_timeout without traffic",
                ),
                svc,
            )?,
            backends: IntGaugeVec::new(Opts::new("synapse_backends", "Backends in the route table"), svc)?,
            invalid_nodes: IntCounterVec::new(
                Opts::new(
                    "synapse_invalid_nodes_total",
                    "Znodes skipped because they could not be decoded",
                ),
                svc,
            )?,
            unavailable_nodes: IntGaugeVec::new(
                Opts::new(
                    "synapse_unavailable_nodes",
                    "Nodes skipped because they are marked unavailable",
                ),
                svc,
            )?,
            updates: IntCounterVec::new(
                Opts::new("synapse_route_updates_total", "Route tables installed"),
                svc,
            )?,
            stale: IntGaugeVec::new(
                Opts::new(
                    "synapse_using_previous_backends",
                    "1 while ZooKeeper lists no backend and the previous ones are kept",
                ),
                svc,
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "synapse_bytes_total",
                    "Bytes proxied, by direction (up = client to backend)",
                ),
                &["service", "direction"],
            )?,
            backend_active: IntGaugeVec::new(
                Opts::new(
                    "synapse_backend_connections_active",
                    "Open connections per backend",
                ),
                be,
            )?,
            backend_connections: IntCounterVec::new(
                Opts::new(
                    "synapse_backend_connections_total",
                    "Connections established per backend",
                ),
                be,
            )?,
            backend_failures: IntCounterVec::new(
                Opts::new(
                    "synapse_backend_connect_failures_total",
                    "Failed connection attempts per backend",
                ),
                be,
            )?,
        };
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.no_backend.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.idle_closed.clone()))?;
        registry.register(Box::new(m.backends.clone()))?;
        registry.register(Box::new(m.invalid_nodes.clone()))?;
        registry.register(Box::new(m.unavailable_nodes.clone()))?;
        registry.register(Box::new(m.updates.clone()))?;
        registry.register(Box::new(m.stale.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.backend_active.clone()))?;
        registry.register(Box::new(m.backend_connections.clone()))?;
        registry.register(Box::new(m.backend_failures.clone()))?;
        Ok(m)
    }

    /// Resolves the handles of one service.
    pub fn service(&self, service: &str) -> ServiceMetrics {
        ServiceMetrics {
            connections: self.connections.with_label_values(&[service]),
            no_backend: self.no_backend.with_label_values(&[service]),
            rejected: Rejected {
                not_synced: self.rejected.with_label_values(&[service, "not_synced"]),
                no_backend: self.rejected.with_label_values(&[service, "no_backend"]),
                shutdown: self.rejected.with_label_values(&[service, "shutdown"]),
            },
            idle_closed: self.idle_closed.with_label_values(&[service]),
            backends: self.backends.with_label_values(&[service]),
            invalid_nodes: self.invalid_nodes.with_label_values(&[service]),
            unavailable_nodes: self.unavailable_nodes.with_label_values(&[service]),
            updates: self.updates.with_label_values(&[service]),
            stale: self.stale.with_label_values(&[service]),
            bytes_up: self.bytes.with_label_values(&[service, "up"]),
            bytes_down: self.bytes.with_label_values(&[service, "down"]),
        }
    }

    /// Resolves the handles of one backend (`host:port`).
    pub fn backend(&self, service: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            active: self.backend_active.with_label_values(&[service, backend]),
            connections: self.backend_connections.with_label_values(&[service, backend]),
            failures: self.backend_failures.with_label_values(&[service, backend]),
        }
    }

    /// Drops the series of a backend that left the route table.
    pub fn forget_backend(&self, service: &str, backend: &str) {
        let _ = self.backend_active.remove_label_values(&[service, backend]);
        let _ = self.backend_connections.remove_label_values(&[service, backend]);
        let _ = self.backend_failures.remove_label_values(&[service, backend]);
    }
}
