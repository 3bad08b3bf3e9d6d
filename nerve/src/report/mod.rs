//! The reporters: what writes a service's desired state somewhere, one file each
//! ([`zookeeper`], [`file`], [`console`]), their status, and the per-service write limiter
//! (token bucket) between the desired state and them.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::desired::{Desired, State};

pub mod console;
pub mod file;
pub mod zookeeper;

pub use file::write_atomic;

/// Reporter-side state, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct ReportStatus {
    /// Full path of our node, when registered.
    pub node: Option<String>,
    /// The last reconcile error, cleared on success.
    pub last_error: Option<String>,
    /// The desired state last written successfully.
    pub applied: Option<State>,
    /// True once ZooKeeper was connected and matched the desired state (systemd readiness
    /// waits for it; the file and console reporters leave it false).
    pub reconciled: bool,
}

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

#[cfg(test)]
mod tests;
