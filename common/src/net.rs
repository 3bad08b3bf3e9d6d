//! Connection plumbing shared by synapse's proxy and the admin servers: an accept-error
//! backoff with a rate-limited log ([`AcceptBackoff`]), and idle tracking of connections
//! ([`Activity`], [`Tracked`], [`idle`]).
//!
//! Idle tracking adds one relaxed atomic add per read and per write and no clock read: a
//! watcher task samples the counters a few times per timeout period instead.

use std::borrow::Borrow;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// First pause after an accept error.
pub const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while errors go on.
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Time without any accept error after which the pause starts again from
/// [`ACCEPT_PAUSE_MIN`].
pub const ACCEPT_QUIET: Duration = Duration::from_secs(5);
/// At most one accept-error warning per this period; the others are counted and reported in
/// the next line.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// What an accept loop does after an error (see [`AcceptBackoff::on_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptRetry {
    /// The error concerned one pending connection only (it was aborted or reset before it
    /// was accepted): accept the next one at once.
    Now,
    /// The error concerns the process or the listener (out of file descriptors, of memory,
    /// ...): sleep this long before trying again.
    After(Duration),
}

/// Backoff state of one accept loop.
///
/// A resource error (typically `EMFILE`: too many open files) doubles the pause, from 5 ms up
/// to 1 s. Successful accepts in between do not reset it: under fd exhaustion every freed
/// descriptor lets one accept through, and resetting there turned the loop into a busy loop
/// that logged every 5 ms. The pause goes back to its minimum only after
/// [`ACCEPT_QUIET`] without any error. Warnings are rate-limited to one per
/// [`ACCEPT_LOG_EVERY`], each telling how many errors were not logged since the previous one.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    pause: Duration,
    last_error: Option<Instant>,
    last_log: Option<Instant>,
    suppressed: u64,
    errors: u64,
}

impl AcceptBackoff {
    /// A fresh state; `what` names the loop in log lines (e.g. `"proxy"`, `"admin"`).
    pub fn new(what: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            what,
            pause: ACCEPT_PAUSE_MIN,
            last_error: None,
            last_log: None,
            suppressed: 0,
            errors: 0,
        }
    }

    /// Records a successful accept. After a quiet period, resets the pause and logs once
    /// that accepting works again.
    pub fn on_success(&mut self) {
        let Some(last) = self.last_error else { return };
        if last.elapsed() < ACCEPT_QUIET {
            return;
        }
        info!(
            accept.loop = self.what,
            errors = self.errors,
            "accepting again after accept errors"
        );
        *self = AcceptBackoff::new(self.what);
    }

    /// Records an accept error, logs it (rate-limited) and says when to try again.
    pub fn on_error(&mut self, err: &io::Error) -> AcceptRetry {
        if is_per_connection(err) {
            debug!(accept.loop = self.what, error = %err, "pending connection failed before accept");
            return AcceptRetry::Now;
        }
        let now = Instant::now();
        if self
            .last_error
            .is_some_and(|last| now.duration_since(last) >= ACCEPT_QUIET)
        {
            self.pause = ACCEPT_PAUSE_MIN;
        }
        let pause = self.pause;
        self.last_error = Some(now);
        self.errors += 1;
        let log_due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_LOG_EVERY);
        if log_due {
            warn!(
                accept.loop = self.what,
                error = %err,
                retry_in = ?pause,
                suppressed = self.suppressed,
                "accept failed"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.pause = (self.pause * 2).min(ACCEPT_PAUSE_MAX);
        AcceptRetry::After(pause)
    }

    /// Errors recorded since the last reset.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

/// Errors that concern one pending connection, not the listener: retrying at once is right.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}

/// Byte counters of one stream, bumped by [`Tracked`].
#[derive(Debug, Default)]
pub struct Activity {
    read: AtomicU64,
    written: AtomicU64,
}

impl Activity {
    /// Bytes read from the stream so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to the stream so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes moved in either direction: it changes whenever the stream makes progress.
    pub fn total(&self) -> u64 {
        self.read().wrapping_add(self.written())
    }
}

/// A stream that counts the bytes read from and written to it in an [`Activity`], borrowed
/// (`&Activity`) or shared (`Arc<Activity>`, for streams that must be `'static`, e.g. handed
/// to hyper with upgrades).
#[derive(Debug)]
pub struct Tracked<S, A> {
    inner: S,
    activity: A,
}

impl<S, A: Borrow<Activity>> Tracked<S, A> {
    /// Wraps `inner`, counting into `activity`.
    pub fn new(inner: S, activity: A) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin, A: Borrow<Activity> + Unpin> AsyncRead for Tracked<S, A> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.activity.borrow().read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, A: Borrow<Activity> + Unpin> AsyncWrite for Tracked<S, A> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.activity
                .borrow()
                .written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.activity
                .borrow()
                .written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How many times per timeout period [`idle`] samples the activity: a connection is closed
/// between `timeout` and `timeout * (1 + 1/IDLE_SAMPLES)` after its last byte.
const IDLE_SAMPLES: u32 = 4;

/// Completes once `progress()` has not changed for `timeout` (at most a quarter of `timeout`
/// later). Never completes when `timeout` is zero (no idle timeout).
///
/// `progress` is a cheap counter read, typically [`Activity::total`] of the streams of a
/// connection; race this future with the connection's work and drop both when it wins.
pub async fn idle<F>(timeout: Duration, progress: F)
where
    F: Fn() -> u64,
{
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    let period = (timeout / IDLE_SAMPLES).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = progress();
    let mut quiet_ticks = 0;
    loop {
        tick.tick().await;
        let now = progress();
        if now != last {
            last = now;
            quiet_ticks = 0;
            continue;
        }
        quiet_ticks += 1;
        // The last byte moved before the first quiet tick, so after IDLE_SAMPLES quiet ticks
        // at least `timeout` has passed since.
        if quiet_ticks >= IDLE_SAMPLES {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
