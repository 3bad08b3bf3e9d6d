//! The upgrade handoff between a running agent and its successor, over a unix socket.
//!
//! The running ("old") process listens on its `upgrade_socket` path (mode 0600; only a peer
//! of the same user, or root, is served). A successor started with `--takeover` connects:
//!
//! ```text
//! successor                                old process
//!   Hello {version, agent, pid}     ──►
//!                                   ◄──    Offer {version, pid, fds: N, state}  (or Refused)
//!                                   ◄──    N file descriptors (SCM_RIGHTS, in chunks)
//!   (starts serving with them)
//!   Ready                           ──►    unlinks its socket path, stops accepting
//!                                   ◄──    Stopping
//!   (binds its own upgrade socket)         drains, exits; the connection closes
//! ```
//!
//! or `Abort {reason}` instead of `Ready`, after which the old process serves on as if
//! nothing happened. Frames are a 4-byte big-endian length and a JSON message; the state is
//! the agent's own JSON (listener addresses in fd order, route members, a ZooKeeper
//! session). The old process serves one handoff at a time: a second successor is refused
//! with a reason it logs. The descriptors are duplicates: a listening socket handed over
//! keeps its accept queue, served by whichever process accepts first.
//!
//! The calls are blocking (short, bounded by timeouts): async callers run them in
//! `spawn_blocking`.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The protocol version both sides must speak.
pub const VERSION: u32 = 1;
/// Largest frame accepted (a state with many services and members fits well below).
const MAX_FRAME: usize = 64 << 20;
/// Descriptors per `SCM_RIGHTS` message (the kernel takes at most 253).
const FDS_PER_MESSAGE: usize = 64;
/// How long one side waits for the other's next message during the exchange.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handoff failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The upgrade socket cannot be bound.
    #[error("cannot listen on the upgrade socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process already serves the upgrade socket.
    #[error("another process already serves the upgrade socket {path}")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// No process serves the upgrade socket.
    #[error("no running agent serves the upgrade socket {path}: {source}")]
    NoPeer {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The other side refused the handoff.
    #[error("the running agent refused the takeover: {reason}")]
    Refused {
        /// Its reason.
        reason: String,
    },
    /// The other side broke the protocol (wrong version, unexpected message, bad JSON).
    #[error("upgrade protocol: {0}")]
    Protocol(String),
    /// The connection failed (peer gone, timeout).
    #[error("upgrade connection: {0}")]
    Io(#[from] io::Error),
}

/// The messages of the protocol.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Hello {
        version: u32,
        agent: String,
        pid: u32,
    },
    Offer {
        version: u32,
        pid: u32,
        fds: usize,
        state: serde_json::Value,
    },
    Refused {
        reason: String,
    },
    Ready,
    Abort {
        reason: String,
    },
    Stopping,
}

impl Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Offer { .. } => "offer",
            Message::Refused { .. } => "refused",
            Message::Ready => "ready",
            Message::Abort { .. } => "abort",
            Message::Stopping => "stopping",
        }
    }
}

fn write_frame(stream: &mut UnixStream, msg: &Message) -> Result<(), HandoffError> {
    let body = serde_json::to_vec(msg).map_err(|e| HandoffError::Protocol(e.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_FRAME)
        .ok_or_else(|| HandoffError::Protocol(format!("message of {} bytes is too large", body.len())))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&body)?;
    stream.flush()?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before it.
fn read_frame(stream: &mut UnixStream) -> Result<Option<Message>, HandoffError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(HandoffError::Protocol(format!("frame of {len} bytes announced")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| HandoffError::Protocol(format!("bad message: {e}")))
}

fn expect_frame(stream: &mut UnixStream, waiting_for: &str) -> Result<Message, HandoffError> {
    read_frame(stream)?.ok_or_else(|| {
        HandoffError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the other process closed the connection before its {waiting_for}"),
        ))
    })
}

fn send_fds(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> Result<(), HandoffError> {
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(chunk)) {
            return Err(HandoffError::Protocol(
                "descriptor chunk does not fit".to_string(),
            ));
        }
        // One marker byte per chunk: the descriptors travel with it.
        let sent = rustix::net::sendmsg(stream, &[IoSlice::new(b"F")], &mut control, SendFlags::NOSIGNAL)
            .map_err(io::Error::from)?;
        if sent != 1 {
            return Err(HandoffError::Protocol("descriptor marker not sent".to_string()));
        }
    }
    Ok(())
}

fn recv_fds(stream: &UnixStream, count: usize) -> Result<Vec<OwnedFd>, HandoffError> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let got = rustix::net::recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        if got.bytes == 0 {
            return Err(HandoffError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the other process closed the connection after {} of {count} descriptors",
                    out.len()
                ),
            )));
        }
        if byte != *b"F" {
            return Err(HandoffError::Protocol("expected a descriptor marker".to_string()));
        }
        let before = out.len();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                out.extend(fds);
            }
        }
        if out.len() == before {
            return Err(HandoffError::Protocol(
                "a descriptor marker came without descriptors".to_string(),
            ));
        }
    }
    if out.len() > count {
        return Err(HandoffError::Protocol(format!(
            "{} descriptors received, {count} announced",
            out.len()
        )));
    }
    Ok(out)
}

/// A socket path's identity, to unlink it only while it is still ours.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The running agent's end: the listening upgrade socket. Dropping it removes the socket
/// file if it is still the one it bound.
#[derive(Debug)]
pub struct UpgradeSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl UpgradeSocket {
    /// Listens on `path` (mode 0600). A leftover socket file nobody serves is replaced; one
    /// another process serves is an error ([`HandoffError::InUse`]).
    pub fn bind(path: &Path) -> Result<UpgradeSocket, HandoffError> {
        let bind_err = |source| HandoffError::Bind {
            path: path.to_path_buf(),
            source,
        };
        if std::fs::symlink_metadata(path).is_ok() {
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(HandoffError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                Err(e) => return Err(bind_err(e)),
            }
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
        // Peers are also checked by uid at accept; the mode keeps others from connecting.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        Ok(UpgradeSocket {
            listener,
            path: path.to_path_buf(),
            id: identity(path),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next successor: a peer of our user (or root) that said hello in our protocol
    /// version. Peers of other users are dropped (logged); one speaking another version is
    /// refused. Errors of one connection are logged and the wait goes on.
    pub async fn accept(&self) -> Successor {
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "upgrade socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "upgrade socket: cannot use a connection");
                    continue;
                }
            };
            match tokio::task::spawn_blocking(move || Successor::greet(stream)).await {
                Ok(Ok(s)) => return s,
                Ok(Err(e)) => warn!(error = %e, "upgrade socket: a takeover attempt failed before it began"),
                Err(e) => warn!(error = %e, "upgrade socket: greeting task failed"),
            }
        }
    }

    /// Removes the socket file now (if it is still ours): the successor binds its own.
    pub fn unlink(&self) {
        if self.id.is_some() && identity(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for UpgradeSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// A successor connected to the running agent.
#[derive(Debug)]
pub struct Successor {
    stream: UnixStream,
    /// Its process id (from the socket's peer credentials).
    pub pid: u32,
    /// Its agent name (`nerve`, `synapse`).
    pub agent: String,
}

impl Successor {
    fn greet(stream: UnixStream) -> Result<Successor, HandoffError> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        stream.set_write_timeout(Some(STEP_TIMEOUT))?;
        let cred = rustix::net::sockopt::socket_peercred(&stream).map_err(io::Error::from)?;
        let me = rustix::process::geteuid();
        if cred.uid != me && !cred.uid.is_root() {
            return Err(HandoffError::Protocol(format!(
                "peer pid {} runs as uid {}, not ours ({}): ignored",
                cred.pid.as_raw_nonzero(),
                cred.uid.as_raw(),
                me.as_raw()
            )));
        }
        let pid = cred.pid.as_raw_nonzero().get().unsigned_abs();
        let mut s = Successor {
            stream,
            pid,
            agent: String::new(),
        };
        match expect_frame(&mut s.stream, "hello")? {
            Message::Hello { version, agent, .. } if version == VERSION => {
                s.agent = agent;
                Ok(s)
            }
            Message::Hello { version, .. } => {
                let reason = format!("protocol version {version} asked, this process speaks {VERSION}");
                let _ = write_frame(
                    &mut s.stream,
                    &Message::Refused {
                        reason: reason.clone(),
                    },
                );
                Err(HandoffError::Protocol(reason))
            }
            other => Err(HandoffError::Protocol(format!(
                "expected hello, got {}",
                other.kind()
            ))),
        }
    }

    /// Refuses this successor with `reason` (it logs it and exits).
    pub fn refuse(mut self, reason: &str) {
        let _ = write_frame(
            &mut self.stream,
            &Message::Refused {
                reason: reason.to_string(),
            },
        );
    }

    /// Sends the state and the descriptors (in the order the state names them).
    pub fn offer(&mut self, state: serde_json::Value, fds: &[BorrowedFd<'_>]) -> Result<(), HandoffError> {
        write_frame(
            &mut self.stream,
            &Message::Offer {
                version: VERSION,
                pid: std::process::id(),
                fds: fds.len(),
                state,
            },
        )?;
        send_fds(&self.stream, fds)
    }

    /// Waits (up to `timeout`) for the successor to say it serves. `Err` when it aborted,
    /// went away or stayed silent: the running agent then serves on.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), HandoffError> {
        self.stream.set_read_timeout(Some(timeout))?;
        match expect_frame(&mut self.stream, "ready")? {
            Message::Ready => Ok(()),
            Message::Abort { reason } => Err(HandoffError::Refused { reason }),
            other => Err(HandoffError::Protocol(format!(
                "expected ready, got {}",
                other.kind()
            ))),
        }
    }

    /// Tells the successor this process stops accepting now. Keep the `Successor` until
    /// the process ends: the connection's end tells the successor it is gone.
    pub fn stopping(&mut self) -> Result<(), HandoffError> {
        write_frame(&mut self.stream, &Message::Stopping)
    }
}

/// What the running agent handed over.
pub struct Offer {
    /// Its process id.
    pub pid: u32,
    /// The agent's state (its own JSON).
    pub state: serde_json::Value,
    /// The descriptors, in the order the state names them.
    pub fds: Vec<OwnedFd>,
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The state may carry a session secret: never printed.
        f.debug_struct("Offer")
            .field("pid", &self.pid)
            .field("fds", &self.fds.len())
            .finish_non_exhaustive()
    }
}

/// The successor's end of a handoff.
#[derive(Debug)]
pub struct Takeover {
    stream: UnixStream,
    /// The running agent's process id.
    pub old_pid: u32,
}

impl Takeover {
    /// Connects to the agent serving `path` and receives its offer.
    pub fn connect(path: &Path, agent: &str) -> Result<(Takeover, Offer), HandoffError> {
        let mut stream = UnixStream::connect(path).map_err(|source| HandoffError::NoPeer {
            path: path.to_path_buf(),
            source,
        })?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        stream.set_write_timeout(Some(STEP_TIMEOUT))?;
        write_frame(
            &mut stream,
            &Message::Hello {
                version: VERSION,
                agent: agent.to_string(),
                pid: std::process::id(),
            },
        )?;
        match expect_frame(&mut stream, "offer")? {
            Message::Offer {
                version,
                pid,
                fds,
                state,
            } => {
                if version != VERSION {
                    return Err(HandoffError::Protocol(format!(
                        "offer in protocol version {version}, this process speaks {VERSION}"
                    )));
                }
                let fds = recv_fds(&stream, fds)?;
                Ok((Takeover { stream, old_pid: pid }, Offer { pid, state, fds }))
            }
            Message::Refused { reason } => Err(HandoffError::Refused { reason }),
            other => Err(HandoffError::Protocol(format!(
                "expected an offer, got {}",
                other.kind()
            ))),
        }
    }

    /// Tells the old process this one serves; waits for its "stopping".
    pub fn ready(&mut self) -> Result<(), HandoffError> {
        write_frame(&mut self.stream, &Message::Ready)?;
        match expect_frame(&mut self.stream, "stopping")? {
            Message::Stopping => Ok(()),
            other => Err(HandoffError::Protocol(format!(
                "expected stopping, got {}",
                other.kind()
            ))),
        }
    }

    /// Gives the handoff up: the old process serves on.
    pub fn abort(mut self, reason: &str) {
        let _ = write_frame(
            &mut self.stream,
            &Message::Abort {
                reason: reason.to_string(),
            },
        );
    }

    /// Waits (up to `timeout`) for the old process to end (its end of the connection
    /// closes). True when it did.
    pub fn wait_gone(mut self, timeout: Duration) -> bool {
        if self.stream.set_read_timeout(Some(timeout)).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return e.kind() == io::ErrorKind::ConnectionReset,
            }
        }
    }
}

/// Duplicates `fd` (the handed-over copy; the original stays in use here).
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Borrows every descriptor of `fds` (for [`Successor::offer`]).
pub fn borrow_all(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

#[cfg(test)]
mod tests;
