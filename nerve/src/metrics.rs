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
        }
    }
}
