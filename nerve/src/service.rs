//! One service: its wiring ([`start_service`]: checks, desired state, write limiter,
//! reporters, disable sequence), the check loop that feeds the hysteresis, and the desire
//! loop that turns health, operator state and warm-up into the desired state (DESIGN §3.4).
//! The reporters live in [`crate::report`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::registry::{NodeOptions, Registration, Registry};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::check::{Check, Hysteresis, Report};
use crate::config::ServiceConfig;
use crate::metrics::ServiceMetrics;
use crate::report::ReportStatus;

pub use crate::desired::Desired;
use crate::desired::{Inputs, Operator, State};

/// One check's state, for the admin API.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// Its name (`name`, else `<index>_<type>`).
    pub name: String,
    /// Its type (`tcp`, `http`, `https`, `exec`, `redis`, `grpc`).
    pub kind: &'static str,
    /// What it checks (address, URL or command line).
    pub target: String,
    /// Up after its rise/fall hysteresis.
    pub up: bool,
    /// Runs so far.
    pub runs: u64,
    /// Whether the latest run passed (`None` before the first one ends).
    pub last_ok: Option<bool>,
    /// Why the latest run failed.
    pub last_error: Option<String>,
    /// What the latest run printed (`exec`).
    pub last_output: Option<String>,
    /// How long the latest run took.
    pub last_duration: Option<Duration>,
    /// Passing runs in a row (0 after a failure).
    pub consecutive_successes: u64,
    /// Failing runs in a row (0 after a success).
    pub consecutive_failures: u64,
}

impl CheckState {
    fn new(check: &Check) -> CheckState {
        CheckState {
            name: check.config().name.clone(),
            kind: check.config().kind.label(),
            target: check.target(),
            up: false,
            runs: 0,
            last_ok: None,
            last_error: None,
            last_output: None,
            last_duration: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }
}

/// Check-side state of a service, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct CheckStatus {
    /// Healthy: every check is up.
    pub healthy: bool,
    /// Per check, in config order.
    pub checks: Vec<CheckState>,
}

impl CheckStatus {
    /// `name: error` of every check whose latest run failed, joined with `; `.
    pub fn failures(&self) -> Option<String> {
        let list: Vec<String> = self
            .checks
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.name, c.last_error.as_deref()?)))
            .collect();
        (!list.is_empty()).then(|| list.join("; "))
    }
}

/// Live view of one service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    /// Its config.
    pub config: ServiceConfig,
    /// Check state.
    pub check: watch::Receiver<CheckStatus>,
    /// Per reporter, in config order.
    pub reports: Vec<ReporterHandle>,
    /// The desired state, as the reporters see it.
    pub desired: watch::Receiver<Desired>,
    /// The write limiter's state.
    pub limit: watch::Receiver<crate::report::LimitStatus>,
    /// The operator's state (maintenance API).
    pub operator: watch::Sender<Operator>,
    /// Stops the service (its reporters deregister). Fires `stopping` too.
    pub cancel: CancellationToken,
    /// Takes the service down without stopping its reporters (SIGTERM's first step): checks
    /// stop, the desired state turns down, the disable sequence runs.
    pub stopping: CancellationToken,
    /// The disable sequence (hooks).
    pub drain: watch::Receiver<crate::hooks::DrainStatus>,
}

/// One reporter of a service, for the admin API.
#[derive(Debug, Clone)]
pub struct ReporterHandle {
    /// `zookeeper`, `file` or `console`.
    pub kind: &'static str,
    /// Where it writes.
    pub target: String,
    /// Its state.
    pub status: watch::Receiver<ReportStatus>,
    /// Its config.
    pub config: crate::config::Reporter,
    /// Set before stopping it: leave the node for the reporter that replaces it.
    pub keep: Arc<std::sync::atomic::AtomicBool>,
    /// Stops it alone (a child of the service's token).
    pub cancel: CancellationToken,
}

/// Spread of a check's interval: each wait is the interval ±10 %, so that checks started
/// together (every service of a host, every host after a fleet restart) drift apart.
const JITTER: f64 = 0.1;

/// One finished run, from a check's scheduler to the service's aggregator.
#[derive(Debug)]
struct Run {
    index: usize,
    report: Report,
    took: Duration,
}

/// Runs the checks of a service until `cancel` fires: each on its own schedule (interval
/// with jitter, timeout) through its own hysteresis; the service is up when every check is
/// up. Publishes the desired state and the status.
///
/// Everything runs inside this one future, so that `cancel` abandons every check at once
/// (a check against a wedged server, a command and its process group) with no task left.
pub async fn check_loop(
    config: ServiceConfig,
    initially_up: bool,
    status: watch::Sender<CheckStatus>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
) {
    let checks: Vec<Check> = config.checks.iter().cloned().map(Check::new).collect();
    status.send_modify(|s| {
        s.checks = checks
            .iter()
            .map(|c| CheckState {
                up: initially_up,
                ..CheckState::new(c)
            })
            .collect();
        s.healthy = initially_up;
    });
    metrics.up.set(i64::from(initially_up));
    let (tx, mut rx) = mpsc::channel::<Run>(checks.len().max(1));
    let schedulers = futures::future::join_all(
        checks
            .iter()
            .enumerate()
            .map(|(index, check)| schedule(index, check, tx.clone())),
    );
    drop(tx);
    let aggregate = async {
        let mut hysteresis: Vec<Hysteresis> = checks
            .iter()
            .map(|c| Hysteresis::starting(c.config().rise.get(), c.config().fall.get(), initially_up))
            .collect();
        let mut service_up = initially_up;
        while let Some(Run { index, report, took }) = rx.recv().await {
            let (Some(check), Some(h), Some(m)) = (
                checks.get(index),
                hysteresis.get_mut(index),
                metrics.checks.get(index),
            ) else {
                continue;
            };
            let name = check.config().name.as_str();
            m.seconds.observe(took.as_secs_f64());
            let ok = report.result.is_ok();
            if ok {
                m.ok.inc()
            } else {
                m.fail.inc()
            }
            let error = report.result.as_ref().err().map(|e| e.to_string());
            if let Some(e) = &error {
                debug!(check = name, error = %e, "check failed");
            }
            if let Some(up) = h.observe(ok) {
                m.up.set(i64::from(up));
                if up {
                    info!(check = name, "check is up");
                } else {
                    warn!(
                        check = name,
                        error = error.as_deref().unwrap_or(""),
                        output = report.output.as_deref().unwrap_or(""),
                        "check is down"
                    );
                }
            }
            let all_up = hysteresis.iter().all(Hysteresis::is_up);
            status.send_modify(|s| {
                s.healthy = all_up;
                if let Some(c) = s.checks.get_mut(index) {
                    c.up = hysteresis[index].is_up();
                    c.runs += 1;
                    c.last_ok = Some(ok);
                    c.last_duration = Some(took);
                    c.last_output = report.output;
                    if ok {
                        c.consecutive_successes += 1;
                        c.consecutive_failures = 0;
                    } else {
                        c.consecutive_failures += 1;
                        c.consecutive_successes = 0;
                    }
                    c.last_error = error;
                }
            });
            if all_up != service_up {
                service_up = all_up;
                if all_up {
                    info!("service is up");
                } else {
                    let down: Vec<&str> = checks
                        .iter()
                        .zip(&hysteresis)
                        .filter(|(_, h)| !h.is_up())
                        .map(|(c, _)| c.config().name.as_str())
                        .collect();
                    warn!(checks = ?down, "service is down");
                }
                metrics.up.set(i64::from(all_up));
            }
        }
    };
    // `biased`: once shutdown is asked, no further run starts or is counted.
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        _ = schedulers => {}
        _ = aggregate => {}
    }
}

/// Runs one check forever: the first run at once, then one every interval (±[`JITTER`])
/// counted from the start of the previous one (right after it, if it took longer).
async fn schedule(index: usize, check: &Check, tx: mpsc::Sender<Run>) {
    let interval = check.config().interval;
    loop {
        let started = Instant::now();
        let report = check.run().await;
        let took = started.elapsed();
        if tx.send(Run { index, report, took }).await.is_err() {
            return;
        }
        tokio::time::sleep_until((started + jittered(interval)).into()).await;
    }
}

/// `interval` ±[`JITTER`], uniformly.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` is keyed differently: a random number without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (random % 10_001) as f64 / 10_000.0; // 0..=1
    interval.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0))
}

/// Publishes the desired state of service `config` whenever its health or its operator
/// state changes (and only when the desired state itself changes), until both inputs close
/// or `stopping` fires: then it publishes the down state (`shutting down`) and ends.
///
/// Before each change to available (from absent or unavailable) the `pre_available` hook
/// runs; while it fails the service stays down with the hook's error as the reason, and the
/// hook runs again at the next evaluation (the next check run or operator change).
///
/// The warm-up ramp climbs one level per step wakeup, after the stability command passed;
/// any other wakeup re-evaluates at the current level (the level is state, never derived
/// from the time elapsed).
pub async fn desire_loop(
    config: ServiceConfig,
    mut check: watch::Receiver<CheckStatus>,
    mut operator: watch::Receiver<Operator>,
    desired: watch::Sender<Desired>,
    metrics: ServiceMetrics,
    stopping: CancellationToken,
) {
    let mut eval = Evaluator {
        config: &config,
        was_healthy: check.borrow().healthy,
        ramp: None,
    };
    loop {
        if stopping.is_cancelled() {
            break;
        }
        let (c, o) = (
            check.borrow_and_update().clone(),
            operator.borrow_and_update().clone(),
        );
        metrics.disabled.set(i64::from(o.disabled));
        metrics.forced.set(i64::from(o.force));
        let mut state = eval.evaluate(&c, &o, None);
        let was_available = matches!(desired.borrow().state, State::Available { .. });
        if let (State::Available { .. }, false, Some(hook)) =
            (&state, was_available, &config.hooks.pre_available)
        {
            let result = tokio::select! {
                biased;
                _ = stopping.cancelled() => break,
                r = crate::hooks::run("pre_available", hook, &metrics) => r,
            };
            match result {
                Ok(()) => state = eval.evaluate(&c, &o, None),
                Err(e) => {
                    warn!(hook = "pre_available", error = %e, "hook failed; the service stays unavailable and tries again at the next evaluation");
                    let why = format!("pre_available hook failed: {e}");
                    state = eval.evaluate(&c, &o, Some(&why));
                }
            }
        }
        // The ramp runs while the service is available, from the moment it becomes so: held
        // back by the hook or disabled, it waits at weight 1 (else a hook failing for longer
        // than the warm-up would let the service in at full weight).
        let available = matches!(state, State::Available { .. });
        if !available || !was_available {
            eval.restart_ramp();
        }
        let next_step = if available { eval.next_step() } else { None };
        publish(&desired, &config, &metrics, state);
        let step = async {
            match next_step {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stopping.cancelled() => break,
            r = check.changed() => if r.is_err() { stopping.cancelled().await; break },
            r = operator.changed() => if r.is_err() { stopping.cancelled().await; break },
            // The only place the ramp climbs: a check or operator wakeup past a step's due
            // time re-evaluates at the current level, and this arm then runs at once.
            _ = step => {
                let stable = match config.warmup.as_ref().and_then(|w| Some((w.stability_command.as_ref()?, w.stability_timeout))) {
                    None => true,
                    Some((cmd, timeout)) => {
                        let report = tokio::select! {
                            biased;
                            _ = stopping.cancelled() => break,
                            r = crate::check::exec::run(cmd, timeout) => r,
                        };
                        match report.result {
                            Ok(()) => true,
                            Err(e) => {
                                warn!(error = %e, output = report.output.as_deref().unwrap_or(""), "stability command failed during warm-up; restarting the ramp");
                                false
                            }
                        }
                    }
                };
                if stable {
                    eval.climb();
                } else {
                    eval.restart_ramp();
                }
            }
        }
    }
    let state = if config.expose_unavailable {
        State::Unavailable {
            reason: "shutting down".to_string(),
        }
    } else {
        State::Absent
    };
    publish(&desired, &config, &metrics, state);
}

/// Sends `state` when it differs from the current one.
fn publish(desired: &watch::Sender<Desired>, config: &ServiceConfig, metrics: &ServiceMetrics, state: State) {
    metrics.weight.set(match &state {
        State::Available { weight } => i64::from(*weight),
        _ => 0,
    });
    desired.send_if_modified(|d| {
        if d.state == state {
            return false;
        }
        match &state {
            State::Absent => info!("desired: absent"),
            State::Available { weight } => info!(weight, "desired: available"),
            State::Unavailable { reason } => info!(reason, "desired: unavailable"),
        }
        *d = Desired::new(state, config);
        true
    });
}

/// The desire loop's memory between two rounds: the previous health and the warm-up ramp.
struct Evaluator<'a> {
    config: &'a ServiceConfig,
    was_healthy: bool,
    /// The warm-up in progress.
    ramp: Option<Ramp>,
}

/// A warm-up in progress. Its level is state, not a function of the clock: it climbs only
/// through [`Evaluator::climb`], on the step wakeup that ran the stability command, so that
/// no other wakeup (a check run, an operator change) can raise the weight unchecked.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    /// Steps climbed so far (`0`: weight 1).
    level: u32,
    /// When this ramp (re)started; step `i` is due `step_due(w, i)` after it. Tokio's clock
    /// (the runtime's timers use it; tests may pause it).
    started: tokio::time::Instant,
}

impl Evaluator<'_> {
    /// The desired state for check status `c` and operator state `o` (held back by `held`).
    fn evaluate(&mut self, c: &CheckStatus, o: &Operator, held: Option<&str>) -> State {
        let config = self.config;
        if c.healthy && !self.was_healthy {
            self.ramp = config.warmup.as_ref().map(|_| Ramp {
                level: 0,
                started: tokio::time::Instant::now(),
            });
            if self.ramp.is_some() {
                info!("service turned healthy; warming up");
            }
        } else if !c.healthy {
            self.ramp = None;
        }
        self.was_healthy = c.healthy;
        let target = o.weight.unwrap_or(config.weight);
        let warmup = match (&config.warmup, self.ramp) {
            (Some(w), Some(r)) => {
                let ceiling = ramp_ceiling(w, target, r.level);
                if ceiling.is_none() {
                    self.ramp = None;
                }
                ceiling
            }
            _ => None,
        };
        let down: Vec<String> = c
            .checks
            .iter()
            .filter(|c| !c.up)
            .map(|c| c.name.clone())
            .collect();
        crate::desired::desired(&Inputs {
            healthy: c.healthy,
            down_checks: &down,
            operator: o,
            weight: config.weight,
            expose_unavailable: config.expose_unavailable,
            warmup,
            held,
        })
    }

    /// When the ramp's next step is due (none when no ramp runs).
    fn next_step(&self) -> Option<tokio::time::Instant> {
        let (w, r) = (self.config.warmup.as_ref()?, self.ramp?);
        Some(r.started + step_due(w, r.level + 1)?)
    }

    /// The ramp's next step was due and the stability command (if any) passed: one level up.
    fn climb(&mut self) {
        if let Some(r) = &mut self.ramp {
            r.level += 1;
        }
    }

    /// Back to weight 1, the schedule counted from now (a failed stability command, or the
    /// service not available, or only now becoming so).
    fn restart_ramp(&mut self) {
        if let Some(r) = &mut self.ramp {
            *r = Ramp {
                level: 0,
                started: tokio::time::Instant::now(),
            };
        }
    }
}

/// The warm-up ceiling at step `level` of a ramp towards `target`: `target * level / steps`
/// (at least 1); `None` once the ramp is over (full weight).
pub fn ramp_ceiling(w: &crate::config::Warmup, target: u8, level: u32) -> Option<u8> {
    let steps = w.steps.max(1);
    if w.duration.is_zero() || level >= steps {
        return None;
    }
    let ceiling = (u32::from(target) * level / steps).max(1);
    Some(u8::try_from(ceiling).unwrap_or(target))
}

/// When step `level` of a ramp is due, from its start: `duration * level / steps`; `None`
/// past the last step.
pub fn step_due(w: &crate::config::Warmup, level: u32) -> Option<Duration> {
    let steps = w.steps.max(1);
    (level <= steps && !w.duration.is_zero()).then(|| w.duration.mul_f64(f64::from(level) / f64::from(steps)))
}

/// How a service starts when it replaces a running one (a reload's old form, or a
/// predecessor's service).
#[derive(Debug, Clone, Default)]
pub struct Inherit {
    /// Starts healthy (its checks then run as usual).
    pub healthy: bool,
    /// Its reporters whose node was left in place, to adopt.
    pub kept: Vec<crate::config::Reporter>,
}

/// Starts the tasks of one service on `tracker` (checks, desired state, write limiter, one
/// task per reporter), stopped by `cancel` (each reporter deregisters).
pub fn start_service(
    svc: &crate::config::ServiceConfig,
    registry: &Registry,
    metrics: &crate::metrics::Metrics,
    tracker: &TaskTracker,
    operator: crate::desired::Operator,
    takeover: Option<&ServiceHandle>,
    cancel: CancellationToken,
) -> ServiceHandle {
    let inherit = takeover.map(|old| Inherit {
        healthy: old.check.borrow().healthy,
        kept: old
            .reports
            .iter()
            .filter(|r| r.keep.load(std::sync::atomic::Ordering::Acquire))
            .map(|r| r.config.clone())
            .collect(),
    });
    start_service_from(svc, registry, metrics, tracker, operator, inherit, cancel)
}

/// [`start_service`] for a service that replaces a running one described by `inherit` (a
/// reload's old form, or the predecessor's service after `--takeover`).
pub fn start_service_from(
    svc: &crate::config::ServiceConfig,
    registry: &Registry,
    metrics: &crate::metrics::Metrics,
    tracker: &TaskTracker,
    operator: crate::desired::Operator,
    inherit: Option<Inherit>,
    cancel: CancellationToken,
) -> ServiceHandle {
    let initially_up = inherit.as_ref().is_some_and(|i| i.healthy);
    let names: Vec<&str> = svc.checks.iter().map(|c| c.name.as_str()).collect();
    let m = metrics.service(&svc.name, &names);
    // Every channel starts with the state the service starts in, so that no task ever acts
    // on a placeholder: a reloaded healthy service must not be "absent" for an instant.
    let initial = crate::desired::Desired::new(
        crate::desired::desired(&crate::desired::Inputs {
            healthy: initially_up,
            down_checks: &[],
            operator: &operator,
            weight: svc.weight,
            expose_unavailable: svc.expose_unavailable,
            warmup: None,
            held: None,
        }),
        svc,
    );
    let (raw_tx, raw_rx) = watch::channel(initial.clone());
    let (desired_tx, desired_rx) = watch::channel(initial);
    let (operator_tx, operator_rx) = watch::channel(operator);
    let (check_tx, check_rx) = watch::channel(CheckStatus {
        healthy: initially_up,
        checks: Vec::new(),
    });
    let (limit_tx, limit_rx) = watch::channel(crate::report::LimitStatus::default());
    let (drain_tx, drain_rx) = watch::channel(crate::hooks::DrainStatus::default());
    // `cancel` stops everything; `stopping` (fired by `cancel` too) only takes the service
    // down, its reporters writing that.
    let stopping = cancel.child_token();
    let span = tracing::info_span!("service", service = %svc.name);
    tracker.spawn(
        desire_loop(
            svc.clone(),
            check_rx.clone(),
            operator_rx.clone(),
            raw_tx,
            m.clone(),
            stopping.clone(),
        )
        .instrument(span.clone()),
    );
    let bucket = crate::report::TokenBucket::new(
        svc.max_writes_per_second,
        svc.write_burst,
        std::time::Instant::now(),
    );
    tracker.spawn(
        crate::report::limit_loop(raw_rx, desired_tx, bucket, limit_tx, stopping.clone())
            .instrument(span.clone()),
    );
    tracker.spawn(
        check_loop(svc.clone(), initially_up, check_tx, m.clone(), stopping.clone()).instrument(span.clone()),
    );
    let mut reports = Vec::new();
    for reporter in &svc.reporters {
        let (report_tx, report_rx) = watch::channel(ReportStatus::default());
        let keep = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rcancel = cancel.child_token();
        // The node of the service this one replaces, left in place for us.
        let inherited = inherit.as_ref().is_some_and(|i| i.kept.contains(reporter));
        let rspan = tracing::info_span!(parent: &span, "reporter", reporter = reporter.kind(), target = %reporter.target());
        match reporter {
            crate::config::Reporter::Zookeeper(z) => {
                let session = registry.session_with_auth(&z.zk_hosts, z.zk_auth.as_ref());
                let name = format!("{}_{}", svc.instance_id, svc.name);
                let mut registration = Registration::with_options(
                    session.clone(),
                    &z.zk_path,
                    &name,
                    NodeOptions {
                        sequential: z.node_type == crate::config::NodeType::EphemeralSequential,
                        path_encoding: z.use_path_encoding.then(|| svc.instance_id.clone()),
                        protected: z.zk_auth.is_some(),
                    },
                );
                if inherited {
                    registration.take_over();
                }
                tracker.spawn(
                    crate::report::zookeeper::report_loop(
                        registration,
                        keep.clone(),
                        session,
                        desired_rx.clone(),
                        report_tx,
                        m.clone(),
                        rcancel.clone(),
                        stopping.clone(),
                    )
                    .instrument(rspan),
                );
            }
            crate::config::Reporter::File { path } => {
                let run = crate::report::file::file_loop(
                    svc.name.clone(),
                    path.clone(),
                    desired_rx.clone(),
                    report_tx,
                    rcancel.clone(),
                );
                tracker.spawn(unless_kept(run, rcancel.clone(), keep.clone()).instrument(rspan));
            }
            crate::config::Reporter::Console => {
                let run =
                    crate::report::console::console_loop(desired_rx.clone(), report_tx, rcancel.clone());
                tracker.spawn(unless_kept(run, rcancel.clone(), keep.clone()).instrument(rspan));
            }
        }
        reports.push(ReporterHandle {
            config: reporter.clone(),
            keep,
            cancel: rcancel,
            kind: reporter.kind(),
            target: reporter.target(),
            status: report_rx,
        });
    }
    tracker.spawn(
        crate::hooks::disable_loop(
            svc.hooks.clone(),
            operator_rx,
            reports.iter().map(|r| r.status.clone()).collect(),
            stopping.clone(),
            cancel.clone(),
            drain_tx,
            m,
        )
        .instrument(span),
    );
    ServiceHandle {
        config: svc.clone(),
        check: check_rx,
        reports,
        desired: desired_rx,
        limit: limit_rx,
        operator: operator_tx,
        cancel,
        stopping,
        drain: drain_rx,
    }
}

/// Runs a file or console reporter; when it is stopped with `keep` set (handed to a
/// successor process, which writes from then on), it ends at once, without writing the
/// "absent" state it writes when stopped otherwise.
async fn unless_kept(
    run: impl std::future::Future<Output = ()>,
    cancel: CancellationToken,
    keep: Arc<std::sync::atomic::AtomicBool>,
) {
    tokio::pin!(run);
    let mut cancelled = false;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if !cancelled => {
                if keep.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                cancelled = true;
            }
            _ = &mut run => return,
        }
    }
}

#[cfg(test)]
mod tests;
