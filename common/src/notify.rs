//! systemd's service notification protocol (`sd_notify`), spoken over the datagram socket
//! named by `NOTIFY_SOCKET`, so that both agents can run as `Type=notify` units.
//!
//! What the agents send:
//! - `STATUS=` lines along the way (`systemctl status` shows the last one);
//! - `READY=1` once the agent does its job: nerve after the first write of every reporter of
//!   every service (a ZooKeeper reporter's with its session connected), synapse after the
//!   first sync of every service ([`ready_after`]);
//! - `RELOADING=1` (with `MONOTONIC_USEC=`, which `Type=notify-reload` needs) when a SIGHUP
//!   arrives, then `READY=1` again once it is handled ([`reloading`], [`reloaded`]);
//! - `STOPPING=1` when shutdown starts ([`stopping`]);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` when the unit sets `WatchdogSec=`
//!   ([`watchdog`]), from a task on the agent's runtime, so a stalled runtime stops them.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call is a no-op. The notifier is
//! process-wide, like the variable it comes from: [`init_from_env`] once in `main`, then the
//! free functions anywhere. A failed send is logged (once per kind of message) and otherwise
//! ignored: systemd going away must not stop an agent.
//!
//! The variables are left in the environment: children (exec checks) inherit them, and the
//! units set `NotifyAccess=main`, so systemd ignores anything those children would send.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tracing::{debug, warn};

/// Longest wait for room in the manager's queue for a state change (never for a ping). The
/// manager reads continuously, so in practice a send never waits.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the notification socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` holds something that is not a socket path or an abstract name.
    #[error("NOTIFY_SOCKET={value:?} is not usable: {reason}")]
    BadAddress {
        /// The variable's value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The local datagram socket could not be created.
    #[error("cannot create the notification socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A message could not be sent.
    #[error("cannot send {message:?} to NOTIFY_SOCKET {addr}: {source}")]
    Send {
        /// The socket, as given.
        addr: String,
        /// The first line of the message.
        message: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    /// For state changes: blocking, up to [`SEND_TIMEOUT`], so `READY=1` is not lost to a
    /// momentarily full queue at the manager's end.
    socket: UnixDatagram,
    /// For watchdog pings: non-blocking (a ping that does not fit is dropped; the next one
    /// comes half a period later), so a manager that stops reading cannot stall the runtime
    /// every few seconds.
    pings: UnixDatagram,
    addr: SocketAddr,
    shown: String,
    /// Set once `READY=1` went out (a reload only re-sends it when it had).
    ready: AtomicBool,
    /// Set once `STOPPING=1` went out: no `READY=1` after it (a readiness wait that ends
    /// because the agent is stopping is not readiness).
    stopping: AtomicBool,
    /// A failed send is warned about once; later ones are debug lines.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `addr`: a file system path (`/run/systemd/notify`) or an abstract
    /// socket name written with a leading `@` (`@/org/freedesktop/systemd1/notify/...`).
    pub fn new(addr: &str) -> Result<Notifier, NotifyError> {
        let bad = |reason: &str| NotifyError::BadAddress {
            value: addr.to_string(),
            reason: reason.to_string(),
        };
        let sockaddr = if let Some(name) = addr.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| bad(&e.to_string()))?
        } else if addr.starts_with('/') {
            SocketAddr::from_pathname(addr).map_err(|e| bad(&e.to_string()))?
        } else {
            // systemd ≥ 254 may also hand out `vsock:` addresses (for VMs): not for us.
            return Err(bad("expected an absolute path or an @abstract name"));
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        socket
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(NotifyError::Socket)?;
        let pings = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        pings.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Notifier {
            socket,
            pings,
            addr: sockaddr,
            shown: addr.to_string(),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        })
    }

    /// Reads `NOTIFY_SOCKET`: `None` when it is unset or empty (not run by systemd).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            Ok(_) => Ok(None),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(NotifyError::BadAddress {
                value: v.to_string_lossy().into_owned(),
                reason: "not UTF-8".to_string(),
            }),
        }
    }

    /// Sends one message: newline-separated `KEY=VALUE` assignments. Waits up to 1 s when
    /// the manager's queue is full, except for a bare `WATCHDOG=1`, which is then dropped.
    pub fn send(&self, message: &str) -> Result<(), NotifyError> {
        let socket = if message == "WATCHDOG=1" {
            &self.pings
        } else {
            &self.socket
        };
        socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                addr: self.shown.clone(),
                message: message.lines().next().unwrap_or("").to_string(),
                source,
            })
    }

    fn send_logged(&self, message: &str) {
        match self.send(message) {
            Ok(()) => debug!(message, "notified the service manager"),
            Err(err) if !self.warned.swap(true, Ordering::Relaxed) => {
                warn!(error = %err, "cannot notify the service manager");
            }
            Err(err) => debug!(error = %err, "cannot notify the service manager"),
        }
    }
}

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Sets up the process-wide notifier from `NOTIFY_SOCKET`. True when there is one. Call it
/// once, early; later calls change nothing.
pub fn init_from_env() -> Result<bool, NotifyError> {
    if NOTIFIER.get().is_some() {
        return Ok(true);
    }
    match Notifier::from_env()? {
        Some(n) => {
            let _ = NOTIFIER.set(n);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A `STATUS=` value on one line (systemd shows one line).
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// `STATUS=<status>`.
pub fn status(status: &str) {
    if let Some(n) = NOTIFIER.get() {
        n.send_logged(&format!("STATUS={}", one_line(status)));
    }
}

/// `READY=1` with `STATUS=<status>`: startup is complete.
pub fn ready(status: &str) {
    if let Some(n) = NOTIFIER.get() {
        if n.stopping.load(Ordering::Relaxed) {
            return;
        }
        n.ready.store(true, Ordering::Relaxed);
        n.send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
    }
}

/// `RELOADING=1` with the `CLOCK_MONOTONIC` time in `MONOTONIC_USEC=` (which
/// `Type=notify-reload` uses to match the reload with its SIGHUP). Follow with [`reloaded`].
pub fn reloading(status: &str) {
    if let Some(n) = NOTIFIER.get() {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        n.send_logged(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS={}",
            one_line(status)
        ));
    }
}

/// The reload announced by [`reloading`] is over: `READY=1` again if startup had completed
/// (else only `STATUS=`: `READY=1` still waits for startup).
pub fn reloaded(status: &str) {
    if let Some(n) = NOTIFIER.get() {
        if n.stopping.load(Ordering::Relaxed) {
            return;
        }
        if n.ready.load(Ordering::Relaxed) {
            n.send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
        } else {
            n.send_logged(&format!("STATUS={}", one_line(status)));
        }
    }
}

/// `MAINPID=<pid>`: the unit's main process is now `pid`, a successor this process handed
/// its sockets to (see `synapse --takeover`); sent before this one drains and exits, so the
/// service manager follows the successor instead of stopping the unit.
pub fn main_pid(pid: u32) {
    if let Some(n) = NOTIFIER.get() {
        n.send_logged(&format!("MAINPID={pid}"));
    }
}

/// `STOPPING=1` with `STATUS=<status>`: shutdown has begun.
pub fn stopping(status: &str) {
    if let Some(n) = NOTIFIER.get() {
        n.stopping.store(true, Ordering::Relaxed);
        n.send_logged(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }
}

/// The watchdog period asked for by the service manager (`WATCHDOG_USEC`), when it is meant
/// for this process (`WATCHDOG_PID` unset or equal to our pid) and a notifier is set up.
pub fn watchdog_interval() -> Option<Duration> {
    NOTIFIER.get()?;
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// `WATCHDOG_USEC` / `WATCHDOG_PID` → the period, as systemd's `sd_watchdog_enabled` reads
/// them: a positive number of microseconds, for our pid (or any, when no pid is given).
fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` at once and then every half `period`, forever (abort the task, or let
/// the process exit). It runs on the agent's runtime: if that stalls, the pings stop and
/// systemd restarts the agent.
pub async fn watchdog(period: Duration) {
    let every = (period / 2).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(n) = NOTIFIER.get() {
            n.send_logged("WATCHDOG=1");
        }
    }
}

/// Sends `READY=1` once every future of `pending` (one per service, by name) has completed,
/// saying in `STATUS=` which services it still waits for (`waiting for <what> of: a, b`).
/// With no notifier, it still waits (cheaply) and sends nothing.
pub async fn ready_after<F>(what: &str, pending: Vec<(String, F)>)
where
    F: std::future::Future<Output = ()>,
{
    let total = pending.len();
    let mut left: Vec<String> = pending.iter().map(|(name, _)| name.clone()).collect();
    let mut waiting: futures::stream::FuturesUnordered<_> = pending
        .into_iter()
        .map(|(name, fut)| async move {
            fut.await;
            name
        })
        .collect();
    use futures::StreamExt;
    while !left.is_empty() {
        status(&format!("waiting for {what} of: {}", left.join(", ")));
        match waiting.next().await {
            Some(done) => left.retain(|n| *n != done),
            None => break,
        }
    }
    ready(&format!("ready: {what} done for {total} service(s)"));
}

#[cfg(test)]
mod tests;
