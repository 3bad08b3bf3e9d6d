//! Signals: SIGTERM or SIGINT cancels a `CancellationToken` once (a second signal while
//! draining is logged and ignored: the drain has its own deadline). SIGHUP is a reload
//! request, handed to the agent through [`ReloadRequests`]; an agent that does not reload
//! drops it, and a SIGHUP is then logged and ignored (its default action would kill the
//! agent).
//!
//! A reload request carries a [`Reloading`] the agent finishes with its outcome, so that
//! whoever must know when a reload is over (logs here; systemd's `RELOADING=1` … `READY=1`)
//! hooks in this one place. SIGHUPs that arrive while a reload is pending are folded into it.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install signal handler: {0}")]
pub struct SignalError(#[from] std::io::Error);

/// One pending reload: the agent re-reads its config, then calls [`Reloading::finish`].
/// Dropping it unfinished counts as finished (outcome unknown).
#[derive(Debug)]
pub struct Reloading {
    done: Option<oneshot::Sender<Result<(), String>>>,
}

impl Reloading {
    /// Reports how the reload went: `Err` carries a one-line reason (the old config runs
    /// on).
    pub fn finish(mut self, outcome: Result<(), String>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

/// The stream of reload requests (SIGHUP) of the process. Drop it to ignore SIGHUP.
#[derive(Debug)]
pub struct ReloadRequests {
    rx: Option<mpsc::Receiver<Reloading>>,
}

impl ReloadRequests {
    /// Requests that never come (an agent run in process, in tests).
    pub fn never() -> ReloadRequests {
        ReloadRequests { rx: None }
    }

    /// A stream fed by hand, and its feeder (tests, or an API that triggers reloads).
    pub fn channel() -> (ReloadSender, ReloadRequests) {
        let (tx, rx) = mpsc::channel(1);
        (ReloadSender { tx }, ReloadRequests { rx: Some(rx) })
    }

    /// The next request; pends forever once no more can come.
    pub async fn next(&mut self) -> Reloading {
        match &mut self.rx {
            Some(rx) => match rx.recv().await {
                Some(r) => r,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// Sends reload requests (see [`ReloadRequests::channel`]).
#[derive(Debug, Clone)]
pub struct ReloadSender {
    tx: mpsc::Sender<Reloading>,
}

/// What became of a reload request.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The agent reloaded (or tried to: `Err` holds why the new config was refused).
    Done(Result<(), String>),
    /// A reload is already pending; this request is folded into it.
    Pending,
    /// The agent does not reload.
    Unsupported,
}

impl ReloadSender {
    /// Asks for a reload and waits until the agent has handled it.
    pub async fn request(&self) -> ReloadOutcome {
        let (done, rx) = oneshot::channel();
        match self.tx.try_send(Reloading { done: Some(done) }) {
            Ok(()) => match rx.await {
                Ok(outcome) => ReloadOutcome::Done(outcome),
                Err(_) => ReloadOutcome::Done(Ok(())),
            },
            Err(mpsc::error::TrySendError::Full(_)) => ReloadOutcome::Pending,
            Err(mpsc::error::TrySendError::Closed(_)) => ReloadOutcome::Unsupported,
        }
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT; turns SIGHUP into reload requests.
/// Returns once the handlers are installed.
pub fn cancel_on_signals(token: CancellationToken) -> Result<ReloadRequests, SignalError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (reload, requests) = ReloadRequests::channel();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    // Handled aside: a reload may take a while, and SIGTERM must still work.
                    let reload = reload.clone();
                    tokio::spawn(async move { on_hangup(&reload).await });
                    continue;
                }
            };
            if token.is_cancelled() {
                warn!(signal = name, "already shutting down");
            } else {
                info!(signal = name, "shutting down");
                token.cancel();
            }
        }
    });
    Ok(requests)
}

async fn on_hangup(reload: &ReloadSender) {
    // systemd (ExecReload=kill -HUP, or Type=notify-reload) waits from RELOADING=1 to READY=1.
    crate::notify::reloading("reloading the config");
    // The agent logs its reload (what changed, or every problem of a refused file).
    let status = match reload.request().await {
        ReloadOutcome::Done(Ok(())) => {
            debug!(signal = "SIGHUP", "reload done");
            "running: config reloaded"
        }
        ReloadOutcome::Done(Err(why)) => {
            debug!(signal = "SIGHUP", error = %why, "reload refused");
            "running: the new config was refused, the previous one runs on"
        }
        ReloadOutcome::Pending => {
            // The pending reload says READY=1 when it is over, not this request.
            debug!(signal = "SIGHUP", "a reload is already pending");
            return;
        }
        ReloadOutcome::Unsupported => {
            warn!(
                signal = "SIGHUP",
                "this agent does not reload its config; signal ignored"
            );
            "running: this agent does not reload its config"
        }
    };
    crate::notify::reloaded(status);
}

#[cfg(test)]
mod tests;
