//! The `console` reporter: one log line per change of the desired state.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::ReportStatus;
use crate::desired::{Desired, State};

/// The console reporter: one log line per change, until `cancel`.
pub async fn console_loop(
    mut desired: watch::Receiver<Desired>,
    status: watch::Sender<ReportStatus>,
    cancel: CancellationToken,
) {
    loop {
        let want = desired.borrow_and_update().clone();
        let payload = want
            .payload
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        info!(reporter = "console", state = ?want.state, payload = payload.as_deref().unwrap_or(""), "desired state");
        status.send_modify(|s| {
            s.node = want.payload.is_some().then(|| "console".to_string());
            s.applied = Some(want.state.clone());
        });
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = desired.changed() => if r.is_err() { cancel.cancelled().await; break },
        }
    }
    info!(reporter = "console", "deregistered");
    status.send_modify(|s| {
        s.node = None;
        s.applied = Some(State::Absent);
    });
}
