//! Hook commands, and the disable sequence of a service.
//!
//! A disable (the operator's, per service or global, or SIGTERM's) goes: the desired state
//! turns down (node deleted, or marked `"available": false`); once every reporter has
//! written it (at most [`DOWN_WAIT`]), `on_disable` runs, then `drained` runs every
//! `interval` until it exits 0 or `max_wait` from the disable is over, then the sequence
//! waits out `min_disable_time` from the disable. An enable during the sequence aborts it
//! (a running command is killed with its process group). Commands run through the `exec`
//! check's runner ([`crate::check::exec::run`]).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Hook, Hooks};
use crate::desired::{Operator, State};
use crate::metrics::ServiceMetrics;
use crate::report::ReportStatus;

/// Longest wait for the reporters to write the down state before the disable hooks run
/// anyway (ZooKeeper unreachable: the node goes when the session expires).
pub const DOWN_WAIT: Duration = Duration::from_secs(5);

/// Runs `hook` once (named `name` in logs and metrics); `Err` carries why it failed, with
/// the end of its output.
pub async fn run(name: &'static str, hook: &Hook, metrics: &ServiceMetrics) -> Result<(), String> {
    let started = Instant::now();
    let report = crate::check::exec::run(&hook.command, hook.timeout).await;
    let result = if report.result.is_ok() { "ok" } else { "fail" };
    metrics
        .hook_runs
        .with_label_values(&[metrics.service.as_str(), name, result])
        .inc();
    let output = report.output.unwrap_or_default();
    match report.result {
        Ok(()) => {
            info!(hook = name, took = ?started.elapsed(), "hook succeeded");
            Ok(())
        }
        Err(e) if output.is_empty() => Err(e.to_string()),
        Err(e) => Err(format!("{e}: {output}")),
    }
}

/// Where a service's disable sequence is, for `disable?wait=`, SIGTERM and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainStatus {
    /// Disabled (by the operator, or for shutdown), as the sequence task last saw it.
    pub disabled: bool,
    /// The sequence's phase.
    pub phase: Phase,
}

impl DrainStatus {
    /// Disabled, and the sequence of that disable is over.
    pub fn done(&self) -> bool {
        self.disabled && matches!(self.phase, Phase::Done { .. })
    }
}

/// A phase of the disable sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Phase {
    /// Enabled: nothing to do.
    #[default]
    Idle,
    /// Running since this instant.
    Running {
        /// When the disable happened.
        since: Instant,
    },
    /// Over.
    Done {
        /// False when `drained` never exited 0 within `max_wait`.
        drained: bool,
    },
}

/// The service's disable sequence, on each operator disable and on `stopping` (SIGTERM),
/// published on `status`, until `cancel`.
pub async fn disable_loop(
    hooks: Hooks,
    mut operator: watch::Receiver<Operator>,
    reports: Vec<watch::Receiver<ReportStatus>>,
    stopping: CancellationToken,
    cancel: CancellationToken,
    status: watch::Sender<DrainStatus>,
    metrics: ServiceMetrics,
) {
    enum Event {
        Done(bool),
        Stopping,
        Operator(Option<bool>),
        Cancelled,
    }
    type Sequence = Pin<Box<dyn Future<Output = bool> + Send>>;
    let start = |why: &'static str| -> Sequence {
        Box::pin(sequence(
            hooks.clone(),
            reports.clone(),
            metrics.clone(),
            Instant::now(),
            why,
        ))
    };
    // A service that starts disabled (state file, reload) never registered: nothing to drain.
    let mut disabled = operator.borrow_and_update().disabled;
    status.send_replace(DrainStatus {
        disabled,
        phase: if disabled {
            Phase::Done { drained: true }
        } else {
            Phase::Idle
        },
    });
    let mut running: Option<Sequence> = None;
    let mut stopping_seen = false;
    let mut operator_open = true;
    loop {
        let event = {
            let run = async {
                match running.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Event::Cancelled,
                drained = run => Event::Done(drained),
                _ = stopping.cancelled(), if !stopping_seen => Event::Stopping,
                r = operator.changed(), if operator_open && !stopping_seen => {
                    Event::Operator(r.ok().map(|()| operator.borrow_and_update().disabled))
                }
            }
        };
        match event {
            Event::Cancelled => return,
            Event::Done(drained) => {
                running = None;
                status.send_modify(|s| s.phase = Phase::Done { drained });
            }
            Event::Stopping => {
                stopping_seen = true;
                // Already disabled: its sequence runs or ran; SIGTERM waits for it.
                if !disabled {
                    disabled = true;
                    running = Some(start("shutdown"));
                    status.send_replace(DrainStatus {
                        disabled,
                        phase: Phase::Running {
                            since: Instant::now(),
                        },
                    });
                }
            }
            Event::Operator(None) => operator_open = false,
            Event::Operator(Some(now)) if now == disabled => {}
            Event::Operator(Some(true)) => {
                disabled = true;
                running = Some(start("operator disable"));
                status.send_replace(DrainStatus {
                    disabled,
                    phase: Phase::Running {
                        since: Instant::now(),
                    },
                });
            }
            Event::Operator(Some(false)) => {
                disabled = false;
                if running.take().is_some() {
                    info!("enabled during the disable sequence; sequence aborted");
                }
                status.send_replace(DrainStatus::default());
            }
        }
    }
}

/// One disable sequence (see the module docs), started at `since`. False when `drained`
/// never exited 0 within its `max_wait`.
async fn sequence(
    hooks: Hooks,
    reports: Vec<watch::Receiver<ReportStatus>>,
    metrics: ServiceMetrics,
    since: Instant,
    why: &'static str,
) -> bool {
    if !hooks.any_disable() {
        return true;
    }
    info!(why, "disable sequence started");
    let down = async {
        for mut r in reports {
            let _ = r
                .wait_for(|s| !matches!(s.applied, Some(State::Available { .. })))
                .await;
        }
    };
    if tokio::time::timeout(DOWN_WAIT, down).await.is_err() {
        warn!("the down state is not written yet; running the disable hooks anyway");
    }
    if let Some(hook) = &hooks.on_disable {
        if let Err(e) = run("on_disable", hook, &metrics).await {
            warn!(hook = "on_disable", error = %e, "hook failed");
        }
    }
    let mut drained = true;
    if let Some(d) = &hooks.drained {
        let deadline = since + d.max_wait;
        loop {
            match run("drained", &d.hook, &metrics).await {
                Ok(()) => break,
                Err(e) if Instant::now() + d.interval >= deadline => {
                    warn!(hook = "drained", error = %e, max_wait = ?d.max_wait, "not drained within max_wait; going on");
                    drained = false;
                    break;
                }
                Err(e) => {
                    tracing::debug!(hook = "drained", error = %e, "not drained yet");
                    tokio::time::sleep(d.interval).await;
                }
            }
        }
    }
    tokio::time::sleep_until((since + hooks.min_disable_time).into()).await;
    info!(took = ?since.elapsed(), drained, "disable sequence over");
    drained
}

#[cfg(test)]
mod tests;
