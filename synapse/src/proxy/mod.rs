//! The data path: per-service listeners and shared HTTP listeners.
//!
//! - [`tcp`]: `mode: tcp`, one backend connection per client connection, bytes copied both
//!   ways.
//! - [`http`]: `mode: http` services and shared HTTP listeners (`http_listeners`): hyper
//!   server to clients, pooled keep-alive connections to backends, balanced per request.
//! - [`grpc`]: the gRPC protocol as the HTTP proxy reads and writes it.
//! - [`replay`]: a streamed request body kept (up to a limit) for another try.

pub mod grpc;
pub mod http;
pub mod replay;
pub mod tcp;

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Most connections taken from the backlog at once when an accept loop stops.
const BACKLOG_DRAIN_MAX: usize = 4096;

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
