//! The one accept loop of every listener, TCP and HTTP: it backs off on errors and never
//! dies, takes a `max_connections` permit before `accept` when there is a limit, and serves
//! what is left in the listen backlog when it stops.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::metrics::cells::IntCounter;
use common::net::{AcceptBackoff, AcceptRetry};
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Most connections taken from the backlog at once when an accept loop stops.
const BACKLOG_DRAIN_MAX: usize = 4096;

/// A connection limit: `permits` taken before `accept`, `limited` counting the waits.
pub(crate) struct Limit<'a> {
    pub(crate) permits: &'a Arc<Semaphore>,
    pub(crate) limited: &'a IntCounter,
}

/// Accepts connections until `cancel` or `stop` fires and hands each to `spawn` (with its
/// permit, under a limit). Accept errors (e.g. too many open files) back off through
/// [`AcceptBackoff`] (rate-limited warnings, labelled `what`); the loop never dies.
///
/// With a `limit`, a permit is taken *before* `accept`: past the limit, clients wait in the
/// listen backlog (not accepted, not reset) until a connection ends.
///
/// `stop` ends only this loop (a config reload may serve the same socket with a new one).
/// When either fires, the connections already completed in the listen backlog are taken and
/// handed to `spawn` before the loop returns ([`take_backlog`]): on shutdown or when a
/// service is removed, they would otherwise be reset with the socket.
pub(crate) async fn serve(
    listener: &TcpListener,
    what: &'static str,
    limit: Option<Limit<'_>>,
    cancel: &CancellationToken,
    stop: &CancellationToken,
    mut spawn: impl FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>),
) {
    let mut backoff = AcceptBackoff::new(what);
    let mut permit = None;
    loop {
        if let (Some(limit), None) = (&limit, &permit) {
            permit = match limit.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    limit.limited.inc();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = stop.cancelled() => return,
                        p = limit.permits.clone().acquire_owned() => match p {
                            Ok(p) => Some(p),
                            // Never closed: the semaphore lives as long as the service.
                            Err(_) => return,
                        },
                    }
                }
            };
        }
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.on_success();
                spawn(stream, peer, permit.take());
            }
            Err(err) => {
                if let AcceptRetry::After(pause) = backoff.on_error(&err) {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    for (stream, peer) in take_backlog(listener) {
        spawn(stream, peer, None);
    }
}

/// Takes, without waiting, the connections the kernel already completed in the listen
/// backlog (at most [`BACKLOG_DRAIN_MAX`]), so that stopping an accept loop or closing a
/// listener (shutdown, or a reload that retires a service) does not reset connections their
/// clients already see as established. A non-blocking `accept(2)` on the socket itself:
/// tokio's `accept` would only try once the reactor has reported the socket readable, and
/// could miss connections queued since.
pub(crate) fn take_backlog(listener: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let socket = SockRef::from(listener);
    let mut taken = Vec::new();
    while taken.len() < BACKLOG_DRAIN_MAX {
        let accepted = socket.accept().and_then(|(conn, addr)| {
            let peer = addr
                .as_socket()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP peer"))?;
            let std_stream = std::net::TcpStream::from(conn);
            std_stream.set_nonblocking(true)?;
            Ok((TcpStream::from_std(std_stream)?, peer))
        });
        match accepted {
            Ok(c) => taken.push(c),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(err) => {
                debug!(error = %err, "accepting from the backlog failed");
                break;
            }
        }
    }
    if !taken.is_empty() {
        debug!(
            taken = taken.len(),
            "serving the connections left in the listen backlog"
        );
    }
    taken
}
