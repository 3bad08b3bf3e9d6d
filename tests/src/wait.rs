//! Waiting for a condition with a deadline, instead of sleeping and hoping.
//!
//! Every helper polls its closure until it reports success or the deadline passes, with a short,
//! growing pause between attempts (5 ms doubling up to 100 ms). On timeout it panics with a message
//! naming what was awaited, how long and how many attempts it took, and (for the `*_ok` variants)
//! the last error seen, so a failing test says *why* it gave up.
//!
//! [`consistently`] is the opposite: a condition that must hold at every poll for a whole
//! period ("nothing changes for this long"), failing at the first violation with what was
//! seen, instead of a sleep followed by one check.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Pause schedule shared by the sync and async variants.
#[derive(Debug)]
struct Poll {
    started: Instant,
    deadline: Instant,
    pause: Duration,
    attempts: u32,
}

impl Poll {
    fn new(timeout: Duration) -> Poll {
        let started = Instant::now();
        Poll {
            started,
            deadline: started + timeout,
            pause: FIRST_PAUSE,
            attempts: 0,
        }
    }

    /// Counts an attempt; returns the pause to take before the next one, or `None` if the deadline
    /// has passed.
    fn next_pause(&mut self) -> Option<Duration> {
        self.attempts += 1;
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let pause = self.pause.min(self.deadline - now);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Some(pause)
    }

    /// Time left before the deadline (zero once it has passed).
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    #[track_caller]
    fn give_up(&self, what: &str, timeout: Duration, last: Option<&str>) -> ! {
        let last = last.map(|l| format!("; last state: {l}")).unwrap_or_default();
        panic!(
            "timed out after {:.1?} (limit {timeout:?}, {} attempts) waiting for {what}{last}",
            self.started.elapsed(),
            self.attempts
        )
    }
}

/// Polls `f` until it returns `Some(T)` or `timeout` passes; panics naming `what` on timeout.
///
/// `f` is always called at least once, even with a zero timeout.
#[track_caller]
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let mut poll = Poll::new(timeout);
    loop {
        if let Some(value) = f() {
            return value;
        }
        match poll.next_pause() {
            Some(pause) => std::thread::sleep(pause),
            None => poll.give_up(what, timeout, None),
        }
    }
}

/// Like [`eventually`], but `f` returns a `Result`; the last error is included in the panic message.
#[track_caller]
pub fn eventually_ok<T, E: Debug>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, E>) -> T {
    let mut poll = Poll::new(timeout);
    loop {
        let err = match f() {
            Ok(value) => return value,
            Err(err) => err,
        };
        match poll.next_pause() {
            Some(pause) => std::thread::sleep(pause),
            None => poll.give_up(what, timeout, Some(&format!("{err:?}"))),
        }
    }
}

/// Polls `f` for `period` (at the same pace as [`eventually`], and once more at the end):
/// every call must return `Ok`. Panics at the first `Err`, naming `what`, when in the period
/// it happened and what was seen. Returns the last `Ok` value.
///
/// For "nothing changes for this long" assertions: `consistently("the weight stays at 1",
/// Duration::from_secs(3), || match weight() { Some(1) => Ok(()), w => Err(w) })`.
#[track_caller]
pub fn consistently<T, E: Debug>(what: &str, period: Duration, mut f: impl FnMut() -> Result<T, E>) -> T {
    let mut poll = Poll::new(period);
    loop {
        match f() {
            Ok(value) => match poll.next_pause() {
                Some(pause) => std::thread::sleep(pause),
                None => return value,
            },
            Err(seen) => panic!(
                "{what} stopped holding after {:.1?} of {period:?} (attempt {}): saw {seen:?}",
                poll.started.elapsed(),
                poll.attempts + 1
            ),
        }
    }
}

/// [`consistently`] inside a tokio runtime (requires the time driver): the runtime's other
/// tasks keep running between checks.
pub async fn consistently_async<T, E: Debug>(
    what: &str,
    period: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> T {
    let mut poll = Poll::new(period);
    loop {
        match f() {
            Ok(value) => match poll.next_pause() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return value,
            },
            Err(seen) => panic!(
                "{what} stopped holding after {:.1?} of {period:?} (attempt {}): saw {seen:?}",
                poll.started.elapsed(),
                poll.attempts + 1
            ),
        }
    }
}

/// Async variant of [`eventually`] (requires a tokio runtime with the time driver).
///
/// Each attempt is itself bounded by the time left, so an attempt that hangs (e.g. a ZooKeeper
/// request queued while the client reconnects) cannot push the wait past its deadline.
///
/// To use a borrowed value inside the future, move a reference in:
/// `let c = &client; eventually_async("...", t, || async move { c.get_data("/x").await.ok() })`.
pub async fn eventually_async<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut poll = Poll::new(timeout);
    loop {
        let attempt_limit = poll.remaining().max(FIRST_PAUSE);
        let last = match tokio::time::timeout(attempt_limit, f()).await {
            Ok(Some(value)) => return value,
            Ok(None) => None,
            Err(_) => Some(format!("attempt still pending after {attempt_limit:?}")),
        };
        match poll.next_pause() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => poll.give_up(what, timeout, last.as_deref()),
        }
    }
}

/// Async variant of [`eventually_ok`]: the last error (or a hung last attempt) is included in the
/// panic message.
pub async fn eventually_ok_async<T, E, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut poll = Poll::new(timeout);
    loop {
        let attempt_limit = poll.remaining().max(FIRST_PAUSE);
        let last = match tokio::time::timeout(attempt_limit, f()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(err)) => format!("{err:?}"),
            Err(_) => format!("attempt still pending after {attempt_limit:?}"),
        };
        match poll.next_pause() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => poll.give_up(what, timeout, Some(&last)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_condition_holds() {
        let mut n = 0;
        let got = eventually("n reaches 3", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(got, 3);
    }

    #[test]
    fn panics_with_what_and_last_error() {
        let result = std::panic::catch_unwind(|| {
            eventually_ok("the impossible", Duration::from_millis(30), || {
                Err::<(), _>("still no")
            })
        });
        let payload = result.expect_err("must time out");
        let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("the impossible") && msg.contains("still no"),
            "{msg}"
        );
    }

    #[test]
    fn consistently_holds_for_the_whole_period() {
        let started = Instant::now();
        let mut calls = 0;
        let last = consistently("calls succeed", Duration::from_millis(120), || {
            calls += 1;
            Ok::<_, ()>(calls)
        });
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert_eq!(last, calls);
        assert!(calls >= 3, "{calls} polls");
    }

    #[test]
    fn consistently_fails_at_the_first_violation_with_what_was_seen() {
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| {
            let mut n = 0;
            consistently("n stays below 3", Duration::from_secs(30), || {
                n += 1;
                if n < 3 {
                    Ok(())
                } else {
                    Err(format!("n = {n}"))
                }
            })
        });
        let payload = result.expect_err("must fail");
        let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("n stays below 3") && msg.contains("n = 3"), "{msg}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "failed at once, not at the end"
        );
    }

    #[tokio::test]
    async fn async_attempts_are_bounded_by_deadline() {
        let started = Instant::now();
        let result = tokio::spawn(async {
            eventually_async("a hung future", Duration::from_millis(50), || {
                std::future::pending::<Option<()>>()
            })
            .await
        })
        .await;
        assert!(result.is_err(), "must panic");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
