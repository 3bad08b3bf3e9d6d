//! What the TCP and HTTP proxies share on the way to a backend: waiting for a service's
//! first sync, connecting with a timeout, TCP keepalive.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::service::Service;
use crate::table::{Backend, Target};

/// Interval between keepalive probes once the first one is sent.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel drops the connection.
const KEEPALIVE_RETRIES: u32 = 6;

/// Why a connection that arrived before the first sync was not served.
pub(crate) enum NotSynced {
    TimedOut,
    Shutdown,
}

/// Waits until the service's first route table is installed, up to `first_sync_timeout`.
pub(crate) async fn first_sync(service: &Service, cancel: &CancellationToken) -> Result<(), NotSynced> {
    let mut synced = service.first_sync.subscribe();
    let wait = tokio::time::timeout(service.config.first_sync_timeout, synced.wait_for(|s| *s));
    tokio::select! {
        _ = cancel.cancelled() => Err(NotSynced::Shutdown),
        r = wait => match r {
            Ok(Ok(_)) => Ok(()),
            // The sender lives in the service, so a closed channel only happens at teardown.
            Ok(Err(_)) => Err(NotSynced::Shutdown),
            Err(_) => Err(NotSynced::TimedOut),
        },
    }
}

/// True where an accepted socket inherits `TCP_NODELAY` and the keepalive settings of its
/// listening socket (Linux copies the listener's socket at accept): they are then set once on
/// the listener, not with 5 `setsockopt` calls per connection.
const ACCEPTED_INHERIT: bool = cfg!(target_os = "linux");

/// Turns TCP keepalive on (`idle` before the first probe; zero leaves it off).
pub(crate) fn keepalive(stream: &TcpStream, idle: Duration) {
    set_keepalive(SockRef::from(stream), idle, false);
}

fn set_keepalive(socket: SockRef<'_>, idle: Duration, turn_off: bool) {
    let result = if idle.is_zero() {
        if !turn_off {
            return;
        }
        socket.set_keepalive(false)
    } else {
        let params = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        socket.set_tcp_keepalive(&params)
    };
    if let Err(err) = result {
        debug!(error = %err, "cannot set TCP keepalive");
    }
}

/// Prepares a listening socket whose accepted client sockets need `TCP_NODELAY` and TCP
/// keepalive (`idle`; zero: off): where they are inherited, set here once. Called by each
/// accept loop as it starts (a reload may change `idle` for the same socket).
pub(crate) fn prepare_listener(listener: &TcpListener, idle: Duration) {
    if !ACCEPTED_INHERIT {
        return;
    }
    let socket = SockRef::from(listener);
    if let Err(err) = socket.set_tcp_nodelay(true) {
        debug!(error = %err, "cannot set TCP_NODELAY on a listener");
    }
    set_keepalive(socket, idle, true);
}

/// Gives an accepted client socket `TCP_NODELAY` and TCP keepalive (`idle`), unless it
/// inherited them from its listener ([`prepare_listener`]).
pub(crate) fn prepare_client(stream: &TcpStream, idle: Duration) {
    if ACCEPTED_INHERIT {
        return;
    }
    let _ = stream.set_nodelay(true);
    keepalive(stream, idle);
}

/// Connects to `backend` within `timeout` (a hostname is resolved here).
pub(crate) async fn connect(backend: &Backend, timeout: Duration) -> std::io::Result<TcpStream> {
    let fut = async {
        match &backend.target {
            Target::Addr(addr) => TcpStream::connect(addr).await,
            Target::Host(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}
