//! synapse's Prometheus metrics, registered in an injected `Registry`. Label handles are
//! resolved once per service and once per backend (when it joins a route table), never per
//! connection.

use std::sync::{Arc, OnceLock};

pub mod cells;

use cells::CONNECT_BUCKETS;
pub use cells::{BackendMetrics, BackendSeries};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The `grpc_status` label values: gRPC status code names, index = code.
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Buckets of `synapse_route_table_build_seconds`: 10 µs to 250 ms.
const BUILD_BUCKETS: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

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
    backend_series: BackendSeries,
    grace_closed: IntCounterVec,
    draining: IntGaugeVec,
    panic: IntGaugeVec,
    build_time: HistogramVec,
    watch_updates: IntCounterVec,
    update_delay: HistogramVec,
    using_defaults: IntGaugeVec,
    from_cache: IntGaugeVec,
    filtered: IntGaugeVec,
    locality_failover: IntGaugeVec,
    limited: IntCounterVec,
    reloads: IntCounterVec,
    state_file_writes: IntCounterVec,
    file_output_writes: IntCounterVec,
    http: HttpMetrics,
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
    /// Connections to a removed backend closed at the end of `removal_grace`.
    pub grace_closed: IntCounter,
    /// Removed backends whose connections are still open (within `removal_grace`).
    pub draining: IntGauge,
    /// 1 while the route table is in panic mode (set when `/metrics` is read).
    pub panic: IntGauge,
    /// Time to build a route table (balancer included).
    pub build_time: Histogram,
    /// Updates received from ZooKeeper (before debouncing).
    pub watch_updates: IntCounter,
    /// From the first ZooKeeper update of a batch to its table's install (debounce and
    /// build).
    pub update_delay: Histogram,
    /// 1 while the default servers stand in for ZooKeeper's.
    pub using_defaults: IntGauge,
    /// 1 while the table comes from the state file (no ZooKeeper listing since start).
    pub from_cache: IntGauge,
    /// Available nodes refused by the label filters.
    pub filtered: IntGauge,
    /// 1 while locality is configured and too few local backends are usable.
    pub locality_failover: IntGauge,
    /// Times the accept loop waited because `max_connections` were open.
    pub limited: IntCounter,
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

impl Metrics {
    /// Creates and registers every metric in `registry`.
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let svc = &["service"];
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
            backend_series: BackendSeries::new()?,
            grace_closed: IntCounterVec::new(
                Opts::new(
                    "synapse_removal_grace_closed_total",
                    "Connections to removed backends closed at the end of removal_grace",
                ),
                svc,
            )?,
            draining: IntGaugeVec::new(
                Opts::new(
                    "synapse_backends_draining",
                    "Removed backends whose connections are still open within removal_grace",
                ),
                svc,
            )?,
            panic: IntGaugeVec::new(
                Opts::new(
                    "synapse_outlier_panic",
                    "1 while too few backends are usable and ejection is ignored",
                ),
                svc,
            )?,
            build_time: HistogramVec::new(
                HistogramOpts::new(
                    "synapse_route_table_build_seconds",
                    "Time to build a route table and its balancer",
                )
                .buckets(BUILD_BUCKETS.to_vec()),
                svc,
            )?,
            watch_updates: IntCounterVec::new(
                Opts::new(
                    "synapse_watch_updates_total",
                    "Updates received from ZooKeeper, before debouncing",
                ),
                svc,
            )?,
            update_delay: HistogramVec::new(
                HistogramOpts::new(
                    "synapse_route_update_delay_seconds",
                    "From the first ZooKeeper update of a batch to the install of its table \
                     (debounce window and build)",
                )
                .buckets(CONNECT_BUCKETS.to_vec()),
                svc,
            )?,
            using_defaults: IntGaugeVec::new(
                Opts::new(
                    "synapse_using_default_servers",
                    "1 while the default servers stand in for ZooKeeper's backends",
                ),
                svc,
            )?,
            from_cache: IntGaugeVec::new(
                Opts::new(
                    "synapse_synced_from_cache",
                    "1 while the route table comes from the state file (ZooKeeper not listed since start)",
                ),
                svc,
            )?,
            filtered: IntGaugeVec::new(
                Opts::new(
                    "synapse_filtered_nodes",
                    "Available nodes refused by the service's label filters",
                ),
                svc,
            )?,
            locality_failover: IntGaugeVec::new(
                Opts::new(
                    "synapse_locality_failover",
                    "1 while too few local backends are usable and every zone is used",
                ),
                svc,
            )?,
            limited: IntCounterVec::new(
                Opts::new(
                    "synapse_max_connections_reached_total",
                    "Times the listener stopped accepting because max_connections were open",
                ),
                svc,
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "synapse_config_reloads_total",
                    "Config reloads (SIGHUP), by result (ok, failed)",
                ),
                &["result"],
            )?,
            state_file_writes: IntCounterVec::new(
                Opts::new(
                    "synapse_state_file_writes_total",
                    "Writes of the state file, by result (ok, error)",
                ),
                &["result"],
            )?,
            file_output_writes: IntCounterVec::new(
                Opts::new(
                    "synapse_file_output_writes_total",
                    "Writes of file_output files, by result (ok, error)",
                ),
                &["result"],
            )?,
            http: HttpMetrics::new(registry)?,
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
        registry.register(Box::new(m.backend_series.clone()))?;
        registry.register(Box::new(m.grace_closed.clone()))?;
        registry.register(Box::new(m.draining.clone()))?;
        registry.register(Box::new(m.panic.clone()))?;
        registry.register(Box::new(m.build_time.clone()))?;
        registry.register(Box::new(m.watch_updates.clone()))?;
        registry.register(Box::new(m.update_delay.clone()))?;
        registry.register(Box::new(m.using_defaults.clone()))?;
        registry.register(Box::new(m.from_cache.clone()))?;
        registry.register(Box::new(m.filtered.clone()))?;
        registry.register(Box::new(m.locality_failover.clone()))?;
        registry.register(Box::new(m.limited.clone()))?;
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.state_file_writes.clone()))?;
        registry.register(Box::new(m.file_output_writes.clone()))?;
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
            grace_closed: self.grace_closed.with_label_values(&[service]),
            draining: self.draining.with_label_values(&[service]),
            panic: self.panic.with_label_values(&[service]),
            build_time: self.build_time.with_label_values(&[service]),
            watch_updates: self.watch_updates.with_label_values(&[service]),
            update_delay: self.update_delay.with_label_values(&[service]),
            using_defaults: self.using_defaults.with_label_values(&[service]),
            from_cache: self.from_cache.with_label_values(&[service]),
            filtered: self.filtered.with_label_values(&[service]),
            locality_failover: self.locality_failover.with_label_values(&[service]),
            limited: self.limited.with_label_values(&[service]),
        }
    }

    /// Counts a config reload: `ok` or `failed`.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// Counts a write of the state file.
    pub fn state_file_write(&self, ok: bool) {
        self.state_file_writes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Counts a write of a `file_output` file.
    pub fn file_output_write(&self, ok: bool) {
        self.file_output_writes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Drops the series of a service a reload removed (its backends' are dropped as they
    /// drain).
    pub fn forget_service(&self, service: &str) {
        for v in [
            &self.connections,
            &self.no_backend,
            &self.idle_closed,
            &self.invalid_nodes,
            &self.updates,
            &self.grace_closed,
            &self.watch_updates,
            &self.limited,
        ] {
            let _ = v.remove_label_values(&[service]);
        }
        for v in [
            &self.backends,
            &self.unavailable_nodes,
            &self.stale,
            &self.draining,
            &self.panic,
            &self.using_defaults,
            &self.from_cache,
            &self.filtered,
            &self.locality_failover,
        ] {
            let _ = v.remove_label_values(&[service]);
        }
        for reason in ["not_synced", "no_backend", "shutdown"] {
            let _ = self.rejected.remove_label_values(&[service, reason]);
        }
        for direction in ["up", "down"] {
            let _ = self.bytes.remove_label_values(&[service, direction]);
        }
        let _ = self.build_time.remove_label_values(&[service]);
        let _ = self.update_delay.remove_label_values(&[service]);
    }

    /// Resolves the handles of one backend (`host:port`).
    pub fn backend(&self, service: &str, backend: &str) -> BackendMetrics {
        self.backend_series.get(service, backend)
    }

    /// The HTTP-mode metrics.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// Drops the series of a backend that left the route table.
    pub fn forget_backend(&self, service: &str, backend: &str) {
        self.http.forget_backend(service, backend);
        self.backend_series.remove(service, backend);
    }
}

/// Buckets of the HTTP response-time histograms: 500 µs to 60 s.
const RESPONSE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Status classes, the `code_class` label values (index = first digit - 1).
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`CODE_CLASSES`] of a status code (600 and above count as `5xx`).
pub fn code_class(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

/// Why synapse answered a request itself (`reason` of `synapse_http_proxy_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// 503: no backend in the table, or none reachable.
    NoBackend,
    /// 503: no first sync from ZooKeeper within `first_sync_timeout`.
    NotSynced,
    /// 502: the backend reset or closed the connection, or sent a malformed response.
    BackendFailed,
    /// 504: `request_timeout` or `try_timeout` ran out.
    Timeout,
    /// 400: the request body could not be read (for a replayable request).
    BadRequest,
    /// 408: a replayable request body did not arrive within `request_timeout`.
    ClientTimeout,
}

impl ProxyError {
    const ALL: [ProxyError; 6] = [
        ProxyError::NoBackend,
        ProxyError::NotSynced,
        ProxyError::BackendFailed,
        ProxyError::Timeout,
        ProxyError::BadRequest,
        ProxyError::ClientTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyError::NoBackend => "no_backend",
            ProxyError::NotSynced => "not_synced",
            ProxyError::BackendFailed => "backend_failed",
            ProxyError::Timeout => "timeout",
            ProxyError::BadRequest => "bad_request",
            ProxyError::ClientTimeout => "client_timeout",
        }
    }
}

/// Why a request was retried (`reason` of `synapse_http_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The backend answered 502 or 503.
    Status,
    /// The connection failed after the request was sent, before any response byte.
    Error,
    /// `try_timeout` ran out.
    Timeout,
    /// The backend refused the stream (HTTP/2 `REFUSED_STREAM`, or a stream past its
    /// `GOAWAY`), or answered gRPC `UNAVAILABLE` before any message: it did not process it.
    Refused,
}

/// HTTP-mode metrics.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    response_time: HistogramVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    errors: IntCounterVec,
    unrouted: IntCounterVec,
    backend_responses: IntCounterVec,
    backend_response_time: HistogramVec,
    backend_grpc: IntCounterVec,
    backend_streams: IntGaugeVec,
}

/// HTTP handles of one service.
#[derive(Debug, Clone)]
pub struct HttpServiceMetrics {
    /// Responses to clients by status class ([`code_class`]), synapse's own included.
    pub requests: [IntCounter; 5],
    /// From a request's arrival to its response headers, retries included.
    pub response_time: Histogram,
    /// Retries, by [`RetryReason`] (index = discriminant).
    pub retries: [IntCounter; 4],
    /// Retries not made because the retry budget was spent.
    pub budget_exhausted: IntCounter,
    /// Answers made by synapse itself, by [`ProxyError`] (index = discriminant).
    pub errors: [IntCounter; 6],
}

/// HTTP handles of one backend.
#[derive(Debug, Clone)]
pub struct HttpBackendMetrics {
    /// Responses by status class.
    pub responses: [IntCounter; 5],
    /// From sending the request to this backend to its response headers.
    pub response_time: Histogram,
    /// Open HTTP/2 streams to this backend.
    pub streams: IntGauge,
    /// gRPC calls by `grpc-status` (index = code), resolved at the backend's first gRPC
    /// answer so that plain HTTP backends get no such series.
    pub grpc: GrpcCounters,
}

/// `synapse_backend_grpc_responses_total` of one backend, resolved on first use.
#[derive(Debug, Clone)]
pub struct GrpcCounters {
    vec: IntCounterVec,
    service: String,
    backend: String,
    cells: Arc<OnceLock<Arc<[IntCounter; 17]>>>,
}

impl GrpcCounters {
    /// The counters, by code (index = the code's value).
    pub fn get(&self) -> &Arc<[IntCounter; 17]> {
        self.cells.get_or_init(|| {
            Arc::new(GRPC_STATUS_NAMES.map(|c| {
                self.vec
                    .with_label_values(&[self.service.as_str(), self.backend.as_str(), c])
            }))
        })
    }
}

impl HttpMetrics {
    fn new(registry: &Registry) -> Result<HttpMetrics, prometheus::Error> {
        let svc = &["service"];
        let m = HttpMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "synapse_http_requests_total",
                    "HTTP responses sent to clients, by status class (synapse's own answers included)",
                ),
                &["service", "code_class"],
            )?,
            response_time: HistogramVec::new(
                HistogramOpts::new(
                    "synapse_http_response_seconds",
                    "From a request's arrival to its response headers, retries included",
                )
                .buckets(RESPONSE_BUCKETS.to_vec()),
                svc,
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "synapse_http_retries_total",
                    "Requests sent again to another backend, by reason (status, error, timeout, refused)",
                ),
                &["service", "reason"],
            )?,
            budget_exhausted: IntCounterVec::new(
                Opts::new(
                    "synapse_http_retry_budget_exhausted_total",
                    "Retries not made because the retry budget was spent",
                ),
                svc,
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "synapse_http_proxy_errors_total",
                    "Requests answered by synapse itself, by reason (no_backend, not_synced, \
                     backend_failed, timeout, bad_request, client_timeout)",
                ),
                &["service", "reason"],
            )?,
            unrouted: IntCounterVec::new(
                Opts::new(
                    "synapse_http_unrouted_total",
                    "Requests to a shared HTTP listener that matched no route (answered 404)",
                ),
                &["listen"],
            )?,
            backend_responses: IntCounterVec::new(
                Opts::new(
                    "synapse_backend_http_responses_total",
                    "HTTP responses per backend, by status class",
                ),
                &["service", "backend", "code_class"],
            )?,
            backend_response_time: HistogramVec::new(
                HistogramOpts::new(
                    "synapse_backend_http_response_seconds",
                    "From sending a request to a backend to its response headers",
                )
                .buckets(RESPONSE_BUCKETS.to_vec()),
                &["service", "backend"],
            )?,
            backend_grpc: IntCounterVec::new(
                Opts::new(
                    "synapse_backend_grpc_responses_total",
                    "gRPC calls per backend, by grpc-status (from the trailers, or a trailers-only answer)",
                ),
                &["service", "backend", "grpc_status"],
            )?,
            backend_streams: IntGaugeVec::new(
                Opts::new(
                    "synapse_backend_http2_streams",
                    "HTTP/2 streams open to a backend (requests in flight on its multiplexed connection)",
                ),
                &["service", "backend"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.response_time.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.budget_exhausted.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.unrouted.clone()))?;
        registry.register(Box::new(m.backend_responses.clone()))?;
        registry.register(Box::new(m.backend_response_time.clone()))?;
        registry.register(Box::new(m.backend_grpc.clone()))?;
        registry.register(Box::new(m.backend_streams.clone()))?;
        Ok(m)
    }

    /// Resolves the handles of one `mode: http` service.
    pub fn service(&self, service: &str) -> HttpServiceMetrics {
        HttpServiceMetrics {
            requests: CODE_CLASSES.map(|c| self.requests.with_label_values(&[service, c])),
            response_time: self.response_time.with_label_values(&[service]),
            retries: ["status", "error", "timeout", "refused"]
                .map(|r| self.retries.with_label_values(&[service, r])),
            budget_exhausted: self.budget_exhausted.with_label_values(&[service]),
            errors: ProxyError::ALL.map(|e| self.errors.with_label_values(&[service, e.as_str()])),
        }
    }

    /// Resolves the handles of one backend of a `mode: http` service (once, at its first
    /// request).
    pub fn backend(&self, service: &str, backend: &str) -> HttpBackendMetrics {
        HttpBackendMetrics {
            responses: CODE_CLASSES.map(|c| self.backend_responses.with_label_values(&[service, backend, c])),
            response_time: self.backend_response_time.with_label_values(&[service, backend]),
            streams: self.backend_streams.with_label_values(&[service, backend]),
            grpc: GrpcCounters {
                vec: self.backend_grpc.clone(),
                service: service.to_string(),
                backend: backend.to_string(),
                cells: Arc::default(),
            },
        }
    }

    /// The 404 counter of a shared listener.
    pub fn unrouted(&self, listen: &str) -> IntCounter {
        self.unrouted.with_label_values(&[listen])
    }

    fn forget_backend(&self, service: &str, backend: &str) {
        for c in CODE_CLASSES {
            let _ = self.backend_responses.remove_label_values(&[service, backend, c]);
        }
        let _ = self
            .backend_response_time
            .remove_label_values(&[service, backend]);
        let _ = self.backend_streams.remove_label_values(&[service, backend]);
        for c in GRPC_STATUS_NAMES {
            let _ = self.backend_grpc.remove_label_values(&[service, backend, c]);
        }
    }
}
