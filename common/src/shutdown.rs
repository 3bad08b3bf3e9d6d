//! Signals to a `CancellationToken`: SIGTERM or SIGINT cancels the token once. A second
//! signal while draining is logged and ignored (the drain has its own deadline). SIGHUP is
//! caught (its default action would kill the agent) and logged: config reload is not built
//! yet.

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
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    // systemd (ExecReload=kill -HUP, or Type=notify-reload) waits for
                    // RELOADING=1 ... READY=1; a reload implementation goes between the two.
                    crate::notify::reloading("reloading");
                    warn!(signal = "SIGHUP", "config reload is not supported yet; signal ignored");
                    crate::notify::reloaded("running (reload not supported yet: config unchanged)");
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
    Ok(())
}
