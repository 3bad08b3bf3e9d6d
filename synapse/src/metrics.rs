//! synapse's Prometheus metrics, registered in an injected `Registry`. Label handles are
//! resolved once per service and once per backend (when it joins a route table), never per
//! connection.

use std::sync::{Arc, OnceLock};

pub mod cells;

pub use cells::{BackendMetrics, BackendSeries};
use cells::{Family, Sample, ServiceSeries, CONNECT_BUCKETS};

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    services: ServiceSeries<ServiceMetrics>,
    backend_series: BackendSeries,
    reloads: IntCounterVec,
    state_file_writes: IntCounterVec,
    file_output_writes: IntCounterVec,
    http: HttpMetrics,
}

/// Handles for one service: atomic cells, rendered by [`SERVICE_FAMILIES`] at scrape.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    /// Client connections accepted.
    pub connections: cells::IntCounter,
    /// Client connections closed because no backend could be reached.
    pub no_backend: cells::IntCounter,
    /// Client connections closed unserved, by reason.
    pub rejected: Rejected,
    /// Proxied connections closed after `idle_timeout` without traffic.
    pub idle_closed: cells::IntCounter,
    /// Backends in the current route table.
    pub backends: cells::IntGauge,
    /// Znodes that could not be decoded.
    pub invalid_nodes: cells::IntCounter,
    /// Nodes present but marked unavailable (go-nerve `available: false`).
    pub unavailable_nodes: cells::IntGauge,
    /// Route tables installed.
    pub updates: cells::IntCounter,
    /// 1 while the path is empty and the previous backends are kept.
    pub stale: cells::IntGauge,
    /// Bytes from clients to backends.
    pub bytes_up: cells::IntCounter,
    /// Bytes from backends to clients.
    pub bytes_down: cells::IntCounter,
    /// Connections to a removed backend closed at the end of `removal_grace`.
    pub grace_closed: cells::IntCounter,
    /// Removed backends whose connections are still open (within `removal_grace`).
    pub draining: cells::IntGauge,
    /// 1 while the route table is in panic mode (set when `/metrics` is read).
    pub panic: cells::IntGauge,
    /// Time to build a route table (balancer included).
    pub build_time: cells::Histogram,
    /// Updates received from ZooKeeper (before debouncing).
    pub watch_updates: cells::IntCounter,
    /// From the first ZooKeeper update of a batch to its table's install (debounce and
    /// build).
    pub update_delay: cells::Histogram,
    /// 1 while the default servers stand in for ZooKeeper's.
    pub using_defaults: cells::IntGauge,
    /// 1 while the table comes from the state file (no ZooKeeper listing since start).
    pub from_cache: cells::IntGauge,
    /// Available nodes refused by the label filters.
    pub filtered: cells::IntGauge,
    /// 1 while locality is configured and too few local backends are usable.
    pub locality_failover: cells::IntGauge,
    /// Times the accept loop waited because `max_connections` were open.
    pub limited: cells::IntCounter,
}

/// `synapse_connections_rejected_total` handles of one service, one per `reason`.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// `not_synced`: no first sync from ZooKeeper within `first_sync_timeout`.
    pub not_synced: cells::IntCounter,
    /// `no_backend`: synced, but no backend in the table or none reachable.
    pub no_backend: cells::IntCounter,
    /// `shutdown`: synapse stopped while the connection waited for the first sync.
    pub shutdown: cells::IntCounter,
}

impl ServiceMetrics {
    /// Fresh cells, registered nowhere (tests; [`Metrics::service`] registers them).
    pub fn detached() -> ServiceMetrics {
        ServiceMetrics {
            connections: Default::default(),
            no_backend: Default::default(),
            rejected: Rejected {
                not_synced: Default::default(),
                no_backend: Default::default(),
                shutdown: Default::default(),
            },
            idle_closed: Default::default(),
            backends: Default::default(),
            invalid_nodes: Default::default(),
            unavailable_nodes: Default::default(),
            updates: Default::default(),
            stale: Default::default(),
            bytes_up: Default::default(),
            bytes_down: Default::default(),
            grace_closed: Default::default(),
            draining: Default::default(),
            panic: Default::default(),
            build_time: cells::Histogram::new(BUILD_BUCKETS),
            watch_updates: Default::default(),
            update_delay: cells::Histogram::new(CONNECT_BUCKETS),
            using_defaults: Default::default(),
            from_cache: Default::default(),
            filtered: Default::default(),
            locality_failover: Default::default(),
            limited: Default::default(),
        }
    }
}

/// A family of [`ServiceMetrics`] with the `service` label alone.
const fn one(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&ServiceMetrics, usize) -> Sample,
) -> Family<ServiceMetrics> {
    Family {
        name,
        help,
        kind,
        label: None,
        read,
    }
}

const COUNTER: MetricType = MetricType::COUNTER;
const GAUGE: MetricType = MetricType::GAUGE;
const HISTOGRAM: MetricType = MetricType::HISTOGRAM;

/// The per-service families: names, help texts, types and labels as the `prometheus`
/// vectors that held them before (the alert rules and dashboards read them).
pub const SERVICE_FAMILIES: [Family<ServiceMetrics>; 21] = [
    one(
        "synapse_connections_total",
        "Client connections accepted",
        COUNTER,
        |m, _| (&m.connections).into(),
    ),
    one(
        "synapse_no_backend_total",
        "Client connections closed because no backend could be reached",
        COUNTER,
        |m, _| (&m.no_backend).into(),
    ),
    Family {
        name: "synapse_connections_rejected_total",
        help: "Client connections closed without being proxied, by reason \
               (not_synced, no_backend, shutdown)",
        kind: COUNTER,
        label: Some(("reason", &["not_synced", "no_backend", "shutdown"])),
        read: |m, i| {
            let r = &m.rejected;
            [&r.not_synced, &r.no_backend, &r.shutdown][i.min(2)].into()
        },
    },
    one(
        "synapse_idle_timeouts_total",
        "Proxied connections closed after idle_timeout without traffic",
        COUNTER,
        |m, _| (&m.idle_closed).into(),
    ),
    one(
        "synapse_backends",
        "Backends in the route table",
        GAUGE,
        |m, _| (&m.backends).into(),
    ),
    one(
        "synapse_invalid_nodes_total",
        "Znodes skipped because they could not be decoded",
        COUNTER,
        |m, _| (&m.invalid_nodes).into(),
    ),
    one(
        "synapse_unavailable_nodes",
        "Nodes skipped because they are marked unavailable",
        GAUGE,
        |m, _| (&m.unavailable_nodes).into(),
    ),
    one(
        "synapse_route_updates_total",
        "Route tables installed",
        COUNTER,
        |m, _| (&m.updates).into(),
    ),
    one(
        "synapse_using_previous_backends",
        "1 while ZooKeeper lists no backend and the previous ones are kept",
        GAUGE,
        |m, _| (&m.stale).into(),
    ),
    Family {
        name: "synapse_bytes_total",
        help: "Bytes proxied, by direction (up = client to backend)",
        kind: COUNTER,
        label: Some(("direction", &["up", "down"])),
        read: |m, i| if i == 0 { &m.bytes_up } else { &m.bytes_down }.into(),
    },
    one(
        "synapse_removal_grace_closed_total",
        "Connections to removed backends closed at the end of removal_grace",
        COUNTER,
        |m, _| (&m.grace_closed).into(),
    ),
    one(
        "synapse_backends_draining",
        "Removed backends whose connections are still open within removal_grace",
        GAUGE,
        |m, _| (&m.draining).into(),
    ),
    one(
        "synapse_outlier_panic",
        "1 while too few backends are usable and ejection is ignored",
        GAUGE,
        |m, _| (&m.panic).into(),
    ),
    one(
        "synapse_route_table_build_seconds",
        "Time to build a route table and its balancer",
        HISTOGRAM,
        |m, _| (&m.build_time).into(),
    ),
    one(
        "synapse_watch_updates_total",
        "Updates received from ZooKeeper, before debouncing",
        COUNTER,
        |m, _| (&m.watch_updates).into(),
    ),
    one(
        "synapse_route_update_delay_seconds",
        "From the first ZooKeeper update of a batch to the install of its table \
         (debounce window and build)",
        HISTOGRAM,
        |m, _| (&m.update_delay).into(),
    ),
    one(
        "synapse_using_default_servers",
        "1 while the default servers stand in for ZooKeeper's backends",
        GAUGE,
        |m, _| (&m.using_defaults).into(),
    ),
    one(
        "synapse_synced_from_cache",
        "1 while the route table comes from the state file (ZooKeeper not listed since start)",
        GAUGE,
        |m, _| (&m.from_cache).into(),
    ),
    one(
        "synapse_filtered_nodes",
        "Available nodes refused by the service's label filters",
        GAUGE,
        |m, _| (&m.filtered).into(),
    ),
    one(
        "synapse_locality_failover",
        "1 while too few local backends are usable and every zone is used",
        GAUGE,
        |m, _| (&m.locality_failover).into(),
    ),
    one(
        "synapse_max_connections_reached_total",
        "Times the listener stopped accepting because max_connections were open",
        COUNTER,
        |m, _| (&m.limited).into(),
    ),
];

impl Metrics {
    /// Creates and registers every metric in `registry`.
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let m = Metrics {
            services: ServiceSeries::new(&SERVICE_FAMILIES, ServiceMetrics::detached)?,
            backend_series: BackendSeries::new()?,
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
        // The cells (`services`, `backend_series`, HTTP `services`) are not registered: they
        // are written by [`Metrics::render`] a chunk at a time rather than gathered at once.
        registry.register(Box::new(m.reloads.clone()))?;
        registry.register(Box::new(m.state_file_writes.clone()))?;
        registry.register(Box::new(m.file_output_writes.clone()))?;
        Ok(m)
    }

    /// Every metric in the Prometheus text format: those of `registry` (ZooKeeper, reloads,
    /// writes, the HTTP per-backend vectors) and the cells (per service, per backend), one
    /// family after the other sorted by name, as `Registry::gather` and `TextEncoder` would
    /// write them had the cells been registered. The cells' families are written a chunk of
    /// series at a time (see [`cells`]).
    pub fn render(&self, registry: &Registry) -> String {
        let gathered = registry.gather();
        let mut families: Vec<(&str, Option<&MetricFamily>)> =
            gathered.iter().map(|f| (f.name(), Some(f))).collect();
        families.extend(
            self.backend_series
                .names()
                .chain(self.services.names())
                .chain(self.http.services.names())
                .map(|n| (n, None)),
        );
        families.sort_by(|a, b| a.0.cmp(b.0));
        // One allocation of about the final size: a large one is mapped afresh and given
        // back whole, where a doubling buffer leaves holes in the heap.
        let mut out = Vec::with_capacity(self.size_hint());
        let mut scratch = Vec::new();
        for (name, gathered) in families {
            match gathered {
                Some(f) => {
                    if let Err(err) = TextEncoder::new().encode(std::slice::from_ref(f), &mut out) {
                        tracing::warn!(error = %err, metric = name, "metrics encoding failed");
                    }
                }
                None => {
                    self.backend_series.encode(name, &mut out, &mut scratch);
                    self.services.encode(name, &mut out, &mut scratch);
                    self.http.services.encode(name, &mut out, &mut scratch);
                }
            }
        }
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// About the size of [`render`](Self::render)'s text, a little over.
    fn size_hint(&self) -> usize {
        // Per backend: 6 series and a histogram of 14 buckets, about 110 bytes a line; per
        // service about 60 lines of about 90 bytes (more for HTTP ones).
        64 * 1024
            + self.backend_series.count() * 2560
            + self.services.count() * 6144
            + self.http.services.count() * 4096
    }

    /// Resolves the handles of one service: the same cells each time for the same name,
    /// until [`forget_service`](Self::forget_service).
    pub fn service(&self, service: &str) -> ServiceMetrics {
        self.services.get(service)
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
        self.services.remove(service);
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
    pub const fn as_str(self) -> &'static str {
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
    services: ServiceSeries<HttpServiceMetrics>,
    unrouted: IntCounterVec,
    backend_responses: IntCounterVec,
    backend_response_time: HistogramVec,
    backend_grpc: IntCounterVec,
    backend_streams: IntGaugeVec,
}

/// HTTP handles of one service: atomic cells, rendered by [`HTTP_SERVICE_FAMILIES`] at
/// scrape.
#[derive(Debug, Clone)]
pub struct HttpServiceMetrics {
    /// Responses to clients by status class ([`code_class`]), synapse's own included.
    pub requests: [cells::IntCounter; 5],
    /// From a request's arrival to its response headers, retries included.
    pub response_time: cells::Histogram,
    /// Retries, by [`RetryReason`] (index = discriminant).
    pub retries: [cells::IntCounter; 4],
    /// Retries not made because the retry budget was spent.
    pub budget_exhausted: cells::IntCounter,
    /// Answers made by synapse itself, by [`ProxyError`] (index = discriminant).
    pub errors: [cells::IntCounter; 6],
}

impl HttpServiceMetrics {
    /// Fresh cells, registered nowhere.
    fn detached() -> HttpServiceMetrics {
        HttpServiceMetrics {
            requests: Default::default(),
            response_time: cells::Histogram::new(RESPONSE_BUCKETS),
            retries: Default::default(),
            budget_exhausted: Default::default(),
            errors: Default::default(),
        }
    }
}

/// The `reason` values of `synapse_http_retries_total`, index = [`RetryReason`].
const RETRY_REASONS: [&str; 4] = ["status", "error", "timeout", "refused"];

/// The `reason` values of `synapse_http_proxy_errors_total`, index = [`ProxyError`].
const PROXY_ERRORS: [&str; 6] = [
    ProxyError::ALL[0].as_str(),
    ProxyError::ALL[1].as_str(),
    ProxyError::ALL[2].as_str(),
    ProxyError::ALL[3].as_str(),
    ProxyError::ALL[4].as_str(),
    ProxyError::ALL[5].as_str(),
];

/// The per-service families of `mode: http` services, as the `prometheus` vectors that held
/// them before.
pub const HTTP_SERVICE_FAMILIES: [Family<HttpServiceMetrics>; 5] = [
    Family {
        name: "synapse_http_requests_total",
        help: "HTTP responses sent to clients, by status class (synapse's own answers included)",
        kind: COUNTER,
        label: Some(("code_class", &CODE_CLASSES)),
        read: |m, i| (&m.requests[i.min(4)]).into(),
    },
    Family {
        name: "synapse_http_response_seconds",
        help: "From a request's arrival to its response headers, retries included",
        kind: HISTOGRAM,
        label: None,
        read: |m, _| (&m.response_time).into(),
    },
    Family {
        name: "synapse_http_retries_total",
        help: "Requests sent again to another backend, by reason (status, error, timeout, refused)",
        kind: COUNTER,
        label: Some(("reason", &RETRY_REASONS)),
        read: |m, i| (&m.retries[i.min(3)]).into(),
    },
    Family {
        name: "synapse_http_retry_budget_exhausted_total",
        help: "Retries not made because the retry budget was spent",
        kind: COUNTER,
        label: None,
        read: |m, _| (&m.budget_exhausted).into(),
    },
    Family {
        name: "synapse_http_proxy_errors_total",
        help: "Requests answered by synapse itself, by reason (no_backend, not_synced, \
               backend_failed, timeout, bad_request, client_timeout)",
        kind: COUNTER,
        label: Some(("reason", &PROXY_ERRORS)),
        read: |m, i| (&m.errors[i.min(5)]).into(),
    },
];

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
        let m = HttpMetrics {
            services: ServiceSeries::new(&HTTP_SERVICE_FAMILIES, HttpServiceMetrics::detached)?,
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
        registry.register(Box::new(m.unrouted.clone()))?;
        registry.register(Box::new(m.backend_responses.clone()))?;
        registry.register(Box::new(m.backend_response_time.clone()))?;
        registry.register(Box::new(m.backend_grpc.clone()))?;
        registry.register(Box::new(m.backend_streams.clone()))?;
        Ok(m)
    }

    /// Resolves the handles of one `mode: http` service: the same cells each time for the
    /// same name (kept when the service is removed, as the vectors that held them kept
    /// theirs).
    pub fn service(&self, service: &str) -> HttpServiceMetrics {
        self.services.get(service)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `render` writes what one registry holding the cells as collectors would write: the
    /// same families, help, types, label order and series order, chunks included.
    #[test]
    fn render_writes_what_a_registry_of_the_cells_would() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        for s in 0..3u64 {
            let name = format!("s{s}");
            let sm = m.service(&name);
            sm.connections.inc_by(s);
            sm.rejected.shutdown.inc();
            sm.bytes_up.inc_by(10);
            sm.backends.set(70);
            sm.update_delay.observe(0.001 * s as f64);
            // More backends than a chunk, with keys that sort differently by backend than
            // by service.
            for b in 0..70 {
                let bm = m.backend(&name, &format!("10.0.{b}.{s}:80"));
                bm.connections.inc_by(b);
                bm.connect_time.observe(0.0003 * b as f64);
            }
        }
        let h = m.http().service("web");
        h.requests[1].inc();
        h.errors[ProxyError::Timeout as usize].inc();
        h.retries[RetryReason::Refused as usize].inc();
        h.response_time.observe(0.02);
        m.http().unrouted("127.0.0.1:80").inc();
        m.reload(true);
        let ours = m.render(&registry);

        registry.register(Box::new(m.services.clone())).unwrap();
        registry.register(Box::new(m.backend_series.clone())).unwrap();
        registry.register(Box::new(m.http.services.clone())).unwrap();
        let reference = common::metrics::render(&registry);
        assert_eq!(ours, reference);
        assert!(ours.contains("synapse_connections_rejected_total{reason=\"shutdown\",service=\"s1\"} 1"));
        assert!(ours.contains("synapse_http_proxy_errors_total{reason=\"timeout\",service=\"web\"} 1"));
        assert_eq!(
            ours.matches("# TYPE synapse_backend_connect_seconds histogram")
                .count(),
            1
        );

        // A forgotten service's series are gone.
        m.forget_service("s0");
        assert!(!m
            .render(&registry)
            .contains("synapse_connections_total{service=\"s0\"}"));
    }
}
