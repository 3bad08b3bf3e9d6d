//! Between the desired state and the reporters: the per-service write limiter (token
//! bucket), and the `file` and `console` reporters (the `zookeeper` one is
//! [`crate::service::report_loop`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::desired::{Desired, State};
use crate::service::ReportStatus;

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(0.001),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes a token if there is one; else how long until there is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The limiter's state, for the status.
#[derive(Debug, Clone, Default)]
pub struct LimitStatus {
    /// A desired state is waiting for its turn since this instant.
    pub deferred_since: Option<Instant>,
    /// Changes held back so far (each later published, or replaced by a newer one).
    pub deferred_total: u64,
}

/// Forwards the desired state from `input` to `output` at most as often as `bucket` allows;
/// while held back, only the latest state is kept (a `watch` channel), so the final state
/// always gets through. Once `stopping` fires, states pass at once (the down state of a
/// shutdown must not wait for a token). Ends when `input` closes.
pub async fn limit_loop(
    mut input: watch::Receiver<Desired>,
    output: watch::Sender<Desired>,
    mut bucket: TokenBucket,
    status: watch::Sender<LimitStatus>,
    stopping: CancellationToken,
) {
    loop {
        if input.changed().await.is_err() {
            return;
        }
        let mut deferred = false;
        while let Err(wait) = bucket.take(Instant::now()) {
            if stopping.is_cancelled() {
                break;
            }
            if !deferred {
                deferred = true;
                status.send_modify(|s| {
                    s.deferred_since = Some(Instant::now());
                    s.deferred_total += 1;
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.cancelled() => {}
            }
        }
        let latest = input.borrow_and_update().clone();
        if deferred {
            status.send_modify(|s| s.deferred_since = None);
        }
        output.send_if_modified(|d| {
            if d.state == latest.state && d.payload == latest.payload {
                return false;
            }
            *d = latest;
            true
        });
    }
}

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

#[cfg(test)]
mod tests;
