//! Signals to a `CancellationToken`: SIGTERM or SIGINT cancels the token once. A second
//! signal while draining is logged and ignored (the drain has its own deadline). SIGHUP is
//! caught (its default action would kill the agent) and counted on a `watch` channel, the
//! reload signal of an agent that listens to it ([`signals`]); otherwise it is logged and
//! ignored.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install signal handler: {0}")]
pub struct SignalError(#[from] std::io::Error);

/// Cancels `token` on the first SIGTERM or SIGINT; ignores SIGHUP. Returns once the handlers
/// are installed.
pub fn cancel_on_signals(token: CancellationToken) -> Result<(), SignalError> {
    signals(token).map(drop)
}

/// Cancels `token` on the first SIGTERM or SIGINT; counts SIGHUPs on the returned channel
/// (a reload request each; while nobody holds the receiver they are logged and ignored).
/// Returns once the handlers are installed.
pub fn signals(token: CancellationToken) -> Result<tokio::sync::watch::Receiver<u64>, SignalError> {
    let (reload, reload_rx) = tokio::sync::watch::channel(0u64);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    if reload.receiver_count() == 0 {
                        warn!(signal = "SIGHUP", "config reload is not supported; signal ignored");
                    } else {
                        info!(signal = "SIGHUP", "reload requested");
                        reload.send_modify(|n| *n += 1);
                    }
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
    Ok(reload_rx)
}
