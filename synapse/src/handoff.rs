//! Upgrades without a lost connection: the listening sockets a synapse starts with may come
//! from its predecessor (`--takeover`, over `upgrade_socket`, see [`common::handoff`]) or
//! from systemd (socket activation, `LISTEN_FDS`), and a running synapse hands its own to a
//! successor.
//!
//! The state handed over names the listeners (in descriptor order) by address and carries
//! each service's known members, so the successor routes at once, before ZooKeeper
//! answers. The successor serves on the very same sockets: a client queued in a listen
//! backlog is accepted by whichever process accepts first, and none is reset. Once the
//! successor says it serves, the old process stops accepting and drains as on SIGTERM
//! (in-flight TCP sessions finish, keep-alive HTTP connections close after their current
//! response) up to `drain_timeout`, then exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use common::codec::{self, Node};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Sockets (and route members) a synapse starts with instead of binding.
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: HashMap<SocketAddr, std::net::TcpListener>,
    /// Per service: the members its predecessor routed to.
    pub members: HashMap<String, Vec<(String, Node)>>,
}

/// How a synapse is started (beyond its config).
#[derive(Debug, Default)]
pub struct Upgrade {
    /// `--takeover`: take the sockets and routes of the synapse serving `upgrade_socket`.
    pub takeover: bool,
    /// Sockets passed by the service manager (systemd socket activation).
    pub inherited: Inherited,
}

/// Why inherited sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// `LISTEN_FDS` names a descriptor that is not a listening TCP socket.
    #[error("LISTEN_FDS: descriptor {index} is not a usable TCP listener: {source}")]
    Systemd {
        /// Position among the passed descriptors (fd 3 + index).
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The handed-over state does not describe the descriptors.
    #[error("takeover: {0}")]
    State(String),
}

/// The state a synapse hands over (JSON, inside the protocol's offer).
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The listeners' addresses, in descriptor order.
    listeners: Vec<SocketAddr>,
    /// Per service: `(znode id, node JSON)` of its known members.
    members: HashMap<String, Vec<(String, serde_json::Value)>>,
}

impl Inherited {
    /// The sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`), by their bound address.
    /// Call it from `main`, before any thread starts: it unsets the variables (children do
    /// not inherit them).
    pub fn from_systemd() -> Result<Inherited, InheritError> {
        let mut fds = listenfd::ListenFd::from_env();
        let mut out = Inherited::default();
        for index in 0..fds.len() {
            let listener = match fds.take_tcp_listener(index) {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(source) => return Err(InheritError::Systemd { index, source }),
            };
            let addr = listener
                .local_addr()
                .map_err(|source| InheritError::Systemd { index, source })?;
            out.listeners.insert(addr, listener);
        }
        Ok(out)
    }

    /// Adds what a predecessor handed over.
    fn absorb(&mut self, offer: common::handoff::Offer) -> Result<(), InheritError> {
        let state: State =
            serde_json::from_value(offer.state).map_err(|e| InheritError::State(e.to_string()))?;
        if state.listeners.len() != offer.fds.len() {
            return Err(InheritError::State(format!(
                "{} listeners named, {} descriptors received",
                state.listeners.len(),
                offer.fds.len()
            )));
        }
        for (addr, fd) in state.listeners.into_iter().zip(offer.fds) {
            self.listeners.insert(addr, std::net::TcpListener::from(fd));
        }
        for (service, members) in state.members {
            let decoded = members
                .into_iter()
                .filter_map(|(id, node)| {
                    codec::decode(&id, node.to_string().as_bytes())
                        .map_err(|e| warn!(service = %service, zk.node = %id, error = %e, "takeover: skipping a member that does not decode"))
                        .ok()
                        .map(|n| (id, n))
                })
                .collect();
            self.members.insert(service, decoded);
        }
        Ok(())
    }

    /// How many sockets are held.
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    /// True when no socket is held.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The inherited socket bound to `addr`, else a new one.
    pub async fn listener(&mut self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        match self.inherited(addr)? {
            Some(l) => Ok(l),
            None => TcpListener::bind(addr).await,
        }
    }

    /// The inherited socket bound to `addr`, if there is one (the caller binds a new one its
    /// own way otherwise, e.g. the admin port with its larger backlog).
    pub fn inherited(&mut self, addr: SocketAddr) -> std::io::Result<Option<TcpListener>> {
        match self.listeners.remove(&addr) {
            Some(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Closes the inherited sockets no listener took (logged: the config no longer names
    /// their address).
    pub fn close_unused(&mut self) {
        for addr in self.listeners.keys() {
            warn!(listen = %addr, "inherited socket not in the config: closed");
        }
        self.listeners.clear();
    }
}

/// The handed-over state and descriptors for a successor: every listener (address and a
/// duplicate of its socket) and every service's known members.
pub fn package(
    listeners: &[(SocketAddr, &dyn AsFd)],
    services: &[std::sync::Arc<crate::service::Service>],
) -> std::io::Result<(serde_json::Value, Vec<OwnedFd>)> {
    let mut fds = Vec::with_capacity(listeners.len());
    let mut addrs = Vec::with_capacity(listeners.len());
    for (addr, l) in listeners {
        fds.push(common::handoff::dup(l.as_fd())?);
        addrs.push(*addr);
    }
    let members = services
        .iter()
        .map(|s| {
            let snapshot = s.snapshot();
            let list = snapshot
                .known
                .members
                .iter()
                .filter_map(|(id, node)| {
                    serde_json::from_slice(&codec::encode(node))
                        .ok()
                        .map(|v| (id.clone(), v))
                })
                .collect();
            (s.config.name.clone(), list)
        })
        .collect();
    let state = State {
        listeners: addrs,
        members,
    };
    let json = serde_json::to_value(&state).map_err(std::io::Error::other)?;
    Ok((json, fds))
}

/// Connects to the synapse serving `path` and takes its sockets and routes. `Ok(None)` when
/// no synapse serves it (a fresh start).
pub async fn take_over(
    path: &std::path::Path,
    into: &mut Inherited,
) -> Result<Option<common::handoff::Takeover>, crate::RunError> {
    let p = path.to_path_buf();
    let joined = tokio::task::spawn_blocking(move || common::handoff::Takeover::connect(&p, "synapse")).await;
    let result = joined.map_err(|e| crate::RunError::Takeover(format!("handoff task failed: {e}")))?;
    match result {
        Ok((takeover, offer)) => {
            let (pid, fds) = (offer.pid, offer.fds.len());
            if let Err(e) = into.absorb(offer) {
                takeover.abort(&e.to_string());
                return Err(crate::RunError::Takeover(e.to_string()));
            }
            info!(
                old_pid = pid,
                sockets = fds,
                "takeover: received the running synapse's sockets and routes"
            );
            Ok(Some(takeover))
        }
        Err(common::handoff::HandoffError::NoPeer { path, source }) => {
            warn!(upgrade_socket = %path.display(), error = %source, "takeover: no running synapse to take over; starting fresh");
            Ok(None)
        }
        Err(common::handoff::HandoffError::Io(e)) => {
            // It died or hung mid-handoff: what it held is bound afresh (if it still holds a
            // port, that bind fails and this process exits; it serves on).
            warn!(error = %e, "takeover: the running synapse went away during the handoff; binding the sockets");
            Ok(None)
        }
        Err(e) => Err(crate::RunError::Takeover(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
