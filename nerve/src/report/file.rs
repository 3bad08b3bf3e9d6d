//! The `file` reporter: the desired state as a JSON file, replaced atomically.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::ReportStatus;
use crate::desired::{Desired, State};

/// The file reporter: writes the desired state to `path` as JSON (atomically) at each
/// change, and `absent` on shutdown.
pub async fn file_loop(
    service: String,
    path: PathBuf,
    mut desired: watch::Receiver<Desired>,
    status: watch::Sender<ReportStatus>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let want = desired.borrow_and_update().clone();
        let wait = match write_state(&path, &service, &want) {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                status.send_modify(|s| {
                    s.node = want.payload.is_some().then(|| path.display().to_string());
                    s.last_error = None;
                    s.applied = Some(want.state.clone());
                });
                None
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot write the state file of the file reporter");
                status.send_modify(|s| s.last_error = Some(e.to_string()));
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                Some(wait)
            }
        };
        let retry = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = desired.changed() => if r.is_err() { cancel.cancelled().await; break },
            _ = retry => {}
        }
    }
    if let Err(e) = write_state(&path, &service, &Desired::default()) {
        warn!(file = %path.display(), error = %e, "cannot write the state file on shutdown");
    }
    status.send_modify(|s| {
        s.node = None;
        s.applied = Some(State::Absent);
    });
}

/// `{"service", "state": "available"|"unavailable"|"absent", "node": payload or null}`.
pub fn state_json(service: &str, d: &Desired) -> serde_json::Value {
    let state = match d.state {
        State::Absent => "absent",
        State::Available { .. } => "available",
        State::Unavailable { .. } => "unavailable",
    };
    let node = d
        .payload
        .as_ref()
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok());
    json!({ "service": service, "state": state, "node": node })
}

fn write_state(path: &Path, service: &str, d: &Desired) -> std::io::Result<()> {
    let body = format!("{:#}\n", state_json(service, d));
    write_atomic(path, body.as_bytes())
}

/// Replaces `path` with `data` atomically: readers see the old file or the new one, never
/// a partial one (temporary file in the same directory, synced, then renamed over it).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
