//! The ZooKeeper registry: the only module that talks to ZooKeeper.
//!
//! Layout:
//! - [`session`](self::session): [`Registry`] hands out one [`Session`] per ensemble connect
//!   string (chroot included), shared by every service of the process. A session connects with
//!   a short per-attempt timeout and a small jittered backoff, publishes its [`SessionStatus`] on
//!   a watch channel, and on expiry builds a brand new client. Expiry is an ordinary event,
//!   never a reason to exit.
//! - [`registration`](self::registration): [`Registration`] makes ZooKeeper hold exactly one
//!   ephemeral-sequential node with given data (nerve's side), never two, not even across a
//!   session the client gave up while the ensemble still held it.
//! - [`watch`](self::watch): [`watch()`] turns a service path into a stream of [`WatchUpdate`]s
//!   (synapse's side).
//! - [`fleet`](self::fleet): what keeps thousands of agents gentle with one ensemble: the
//!   splay (random delays after fleet-wide events), following the ensemble's dynamic
//!   configuration, TLS ([`ZkTls`]).
//!
//! Watches are one-shot (children watch on the service path, data or exists watch per child).
//! We never use persistent watches: `zookeeper-client` 0.11.2 does not re-register them after
//! reconnecting to another server. One-shot watches are re-armed by the client library on
//! reconnect, and after every reconnect we re-list the path anyway and send a `Reset`, since
//! events can be missed while disconnected.

use zookeeper_client as zk;

mod fleet;
mod registration;
mod session;
mod watch;

pub use fleet::ZkTls;
pub use registration::{delete_own_node, EnsureOutcome, NodeOptions, Registration};
pub use session::{Registry, RegistryOptions, Session, SessionSecret, SessionStatus, ZkAuth};
pub use watch::{watch, Member, WatchUpdate};

/// Why a registry operation failed. Every variant is retryable: the caller backs off and
/// tries again on the next session event.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No usable ZooKeeper connection right now.
    #[error("not connected to ZooKeeper {connect}")]
    NotConnected {
        /// The ensemble's connect string.
        connect: String,
    },
    /// A ZooKeeper request failed.
    #[error("ZooKeeper {op} {path}: {source}")]
    Zk {
        /// The operation, e.g. `create`.
        op: &'static str,
        /// The znode path.
        path: String,
        /// The client's error.
        source: zk::Error,
    },
    /// The node name is held by a node that is not ours (another process, or a previous run
    /// of nerve whose session the ensemble still holds until it expires).
    #[error("ZooKeeper node {path} exists and is not ours (it goes when its session expires)")]
    Taken {
        /// The znode path.
        path: String,
    },
    /// A znode kept changing between our reads (deleted and created again faster than we
    /// could read it); the caller re-lists.
    #[error("ZooKeeper node {path} kept appearing and vanishing while being read")]
    Unsettled {
        /// The znode path.
        path: String,
    },
}

fn zk_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(zk::Error) -> RegistryError + 'a {
    move |source| RegistryError::Zk {
        op,
        path: path.to_string(),
        source,
    }
}
