//! nerve's Prometheus metrics, registered in an injected `Registry`. Label handles are
//! resolved once per service (and check), never per check round.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// All nerve metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    checks: IntCounterVec,
    check_seconds: HistogramVec,
    check_up: IntGaugeVec,
    up: IntGaugeVec,
    registered: IntGaugeVec,
    zk_writes: IntCounterVec,
    zk_errors: IntCounterVec,
    zk_failures: IntCounterVec,
    weight: IntGaugeVec,
    maintenance: IntGaugeVec,
    write_latency: HistogramVec,
    hook_runs: IntCounterVec,
}

/// Handles for one service.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    /// 1 when the service passes its checks (after hysteresis).
    pub up: IntGauge,
    /// 1 when its node exists in ZooKeeper.
    pub registered: IntGauge,
    /// Per check, in config order.
    pub checks: Vec<CheckMetrics>,
    /// ZooKeeper writes: created, updated, deleted.
    pub zk_created: IntCounter,
    /// See `zk_created`.
    pub zk_updated: IntCounter,
    /// See `zk_created`.
    pub zk_deleted: IntCounter,
    /// Failed reconcile attempts.
    pub zk_errors: IntCounter,
    /// Failed ZooKeeper operations, by operation (`create`, `set`, `delete`, `list`, ...).
    pub zk_failures: IntCounterVec,
    /// The weight in the desired state (0 when absent or unavailable).
    pub weight: IntGauge,
    /// 1 when the operator disabled the service (or every service).
    pub disabled: IntGauge,
    /// 1 when the operator forces it in.
    pub forced: IntGauge,
    /// Seconds from a desired-state change to its ZooKeeper write.
    pub write_latency: Histogram,
    /// Hook runs (`hook_runs.with_label_values(&[service, hook, result])`).
    pub hook_runs: IntCounterVec,
    /// The service name, for the `zk_failures` label.
    pub service: String,
}

/// Handles for one check.
#[derive(Debug, Clone)]
pub struct CheckMetrics {
    /// Passing runs.
    pub ok: IntCounter,
    /// Failing runs.
    pub fail: IntCounter,
    /// Run durations, in seconds.
    pub seconds: Histogram,
    /// 1 when the check is up (after its hysteresis).
    pub up: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric in `registry`.
    pub fn new(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let checks = IntCounterVec::new(
            Opts::new("nerve_checks_total", "Health check runs by result"),
            &["service", "check", "result"],
        )?;
        let check_seconds = HistogramVec::new(
            HistogramOpts::new("nerve_check_duration_seconds", "Health check duration")
                .buckets(exponential_buckets(0.0005, 4.0, 8)?),
            &["service", "check"],
        )?;
        let check_up = IntGaugeVec::new(
            Opts::new(
                "nerve_check_up",
                "1 when the check is up (after its rise/fall hysteresis)",
            ),
            &["service", "check"],
        )?;
        let up = IntGaugeVec::new(
            Opts::new("nerve_service_up", "1 when the service is healthy"),
            &["service"],
        )?;
        let registered = IntGaugeVec::new(
            Opts::new(
                "nerve_service_registered",
                "1 when the service's node exists in ZooKeeper",
            ),
            &["service"],
        )?;
        let zk_writes = IntCounterVec::new(
            Opts::new("nerve_zk_writes_total", "ZooKeeper writes by operation"),
            &["service", "op"],
        )?;
        let zk_errors = IntCounterVec::new(
            Opts::new(
                "nerve_zk_errors_total",
                "Failed attempts to make ZooKeeper match the desired state",
            ),
            &["service"],
        )?;
        let zk_failures = IntCounterVec::new(
            Opts::new(
                "nerve_zk_failures_total",
                "Failed ZooKeeper operations by operation",
            ),
            &["service", "op"],
        )?;
        let weight = IntGaugeVec::new(
            Opts::new(
                "nerve_service_weight",
                "Weight in the desired state (0 when absent or unavailable)",
            ),
            &["service"],
        )?;
        let maintenance = IntGaugeVec::new(
            Opts::new(
                "nerve_service_maintenance",
                "1 when the operator state is in effect (state: disabled, forced)",
            ),
            &["service", "state"],
        )?;
        let write_latency = HistogramVec::new(
            HistogramOpts::new(
                "nerve_desired_to_write_seconds",
                "Time from a desired-state change to its ZooKeeper write",
            )
            .buckets(exponential_buckets(0.001, 4.0, 9)?),
            &["service"],
        )?;
        let hook_runs = IntCounterVec::new(
            Opts::new(
                "nerve_hook_runs_total",
                "Hook command runs by hook (pre_available, on_disable, drained) and result",
            ),
            &["service", "hook", "result"],
        )?;
        registry.register(Box::new(hook_runs.clone()))?;
        registry.register(Box::new(zk_failures.clone()))?;
        registry.register(Box::new(weight.clone()))?;
        registry.register(Box::new(maintenance.clone()))?;
        registry.register(Box::new(write_latency.clone()))?;
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(check_seconds.clone()))?;
        registry.register(Box::new(check_up.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(registered.clone()))?;
        registry.register(Box::new(zk_writes.clone()))?;
        registry.register(Box::new(zk_errors.clone()))?;
        Ok(Metrics {
            checks,
            check_seconds,
            check_up,
            up,
            registered,
            zk_writes,
            zk_errors,
            zk_failures,
            weight,
            maintenance,
            write_latency,
            hook_runs,
        })
    }

    /// Resolves the handles of one service; `checks` are its check names (the `check`
    /// label), in config order.
    pub fn service(&self, service: &str, checks: &[&str]) -> ServiceMetrics {
        let checks = checks
            .iter()
            .map(|check| CheckMetrics {
                ok: self.checks.with_label_values(&[service, check, "ok"]),
                fail: self.checks.with_label_values(&[service, check, "fail"]),
                seconds: self.check_seconds.with_label_values(&[service, check]),
                up: self.check_up.with_label_values(&[service, check]),
            })
            .collect();
        ServiceMetrics {
            up: self.up.with_label_values(&[service]),
            registered: self.registered.with_label_values(&[service]),
            checks,
            zk_created: self.zk_writes.with_label_values(&[service, "create"]),
            zk_updated: self.zk_writes.with_label_values(&[service, "set"]),
            zk_deleted: self.zk_writes.with_label_values(&[service, "delete"]),
            zk_errors: self.zk_errors.with_label_values(&[service]),
            zk_failures: self.zk_failures.clone(),
            weight: self.weight.with_label_values(&[service]),
            disabled: self.maintenance.with_label_values(&[service, "disabled"]),
            forced: self.maintenance.with_label_values(&[service, "forced"]),
            write_latency: self.write_latency.with_label_values(&[service]),
            hook_runs: self.hook_runs.clone(),
            service: service.to_string(),
        }
    }
}
