//! Upgrades that keep the registrations: a new nerve started with `--takeover` resumes the
//! running one's ZooKeeper sessions (id and password, over `upgrade_socket`, see
//! [`common::handoff`]), so the ephemeral nodes never disappear.
//!
//! The running nerve, when a successor connects: stops its ZooKeeper reporters without
//! deleting their nodes (as a reload hands a node to a service's new form), lets go of its
//! sessions without closing them, and hands over the sessions, each service's health and
//! nodes, and its admin listener. It then exits without deregistering anything.
//!
//! The successor resumes each session (a session expired meanwhile is replaced by a new one,
//! as after a crash), starts every service from the health it was handed (a healthy service
//! starts up and adopts its node as it is: readers see nothing), runs its checks, and
//! reconciles as a reload would: a changed payload is rewritten in place, a node no service
//! of the new config claims is deleted. If no successor resumes a session within its timeout,
//! ZooKeeper expires it and its nodes go.
//!
//! A nerve can also hand over to a successor that starts after it has exited: `nerve ctl
//! park` (`POST /park`) stops it the same way, but the state goes to a file beside the
//! upgrade socket (`<upgrade_socket>.parked`, mode 0600, never logged) instead of a socket;
//! a nerve started with `--takeover` that finds no running nerve resumes from that file
//! (and removes it at once), so the nodes survive a restart that does not overlap, as long
//! as it takes less than the session timeout. A nerve started without `--takeover` removes
//! a parked file it finds (the nodes then expire with their sessions, as after a crash).
//!
//! A plain SIGTERM is not a handoff: nerve deregisters, drains and exits as always.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::handoff::{Successor, Takeover};
use common::registry::{Registry, SessionSecret};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::{Reporter, ServiceConfig};
use crate::maintenance::Services;
// Defined with the service wiring that takes it; named here too, where it is made.
pub use crate::service::Inherit;

/// How long a successor may take to resume the sessions and start its services.
const SUCCESSOR_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the reporters and sessions may take to stop for the handoff.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a nerve hands over (JSON inside the protocol's offer; the descriptor is the admin
/// listener).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The sessions (with their secrets).
    sessions: Vec<SessionSecret>,
    /// Per service (by name): its health and its nodes.
    services: HashMap<String, Handed>,
}

/// One service as handed over.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Handed {
    /// Healthy at the handoff.
    healthy: bool,
    /// Its ZooKeeper nodes.
    nodes: Vec<HandedNode>,
}

/// One node held by a ZooKeeper reporter at the handoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HandedNode {
    connect: String,
    /// `scheme:user` of the session's auth.
    auth: Option<String>,
    zk_path: String,
    instance_id: String,
    /// The node's full path.
    path: String,
}

fn auth_name(z: &crate::config::ZkReporter) -> Option<String> {
    z.zk_auth.as_ref().map(|a| {
        format!(
            "{}:{}",
            a.scheme,
            a.credentials.split(':').next().unwrap_or_default()
        )
    })
}

/// What a successor got from its predecessor.
#[derive(Debug, Default)]
pub struct Inheritance {
    services: HashMap<String, Handed>,
    /// The predecessor's admin listener.
    pub admin: Option<std::net::TcpListener>,
    /// Handed nodes of configured services that no reporter of theirs claims.
    unclaimed: Vec<HandedNode>,
}

impl Inheritance {
    /// What `svc` starts from: the predecessor's service of the same name, its nodes
    /// adopted by the reporters that would write them (same ensemble, auth, path and
    /// instance).
    pub fn take(&mut self, svc: &ServiceConfig) -> Option<Inherit> {
        let handed = self.services.remove(&svc.name)?;
        let mut kept = Vec::new();
        let mut claimed = Vec::new();
        for r in &svc.reporters {
            let Reporter::Zookeeper(z) = r else { continue };
            let matching = handed.nodes.iter().find(|n| {
                n.connect == z.zk_hosts
                    && n.auth == auth_name(z)
                    && n.zk_path == z.zk_path
                    && n.instance_id == svc.instance_id
            });
            if let Some(n) = matching {
                claimed.push(n.clone());
                kept.push(r.clone());
            }
        }
        self.unclaimed
            .extend(handed.nodes.iter().filter(|n| !claimed.contains(n)).cloned());
        Some(Inherit {
            healthy: handed.healthy,
            kept,
        })
    }

    /// Deletes, through the resumed sessions, the handed-over nodes no service claimed (a
    /// service the new config removed, or whose node is now written elsewhere).
    pub fn delete_orphans(
        self,
        services: &[ServiceConfig],
        registry: &Registry,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let orphans = self
            .services
            .into_values()
            .flat_map(|h| h.nodes)
            .chain(self.unclaimed);
        for node in orphans {
            // The session of that ensemble and auth, if the new config still uses it.
            let auth = services.iter().flat_map(|s| &s.reporters).find_map(|r| match r {
                Reporter::Zookeeper(z) if z.zk_hosts == node.connect && auth_name(z) == node.auth => {
                    Some(z.zk_auth.clone())
                }
                _ => None,
            });
            let Some(auth) = auth else {
                info!(zk.node = %node.path, "node of a removed service: it goes when its session expires");
                continue;
            };
            let session = registry.session_with_auth(&node.connect, auth.as_ref());
            tracker.spawn(async move {
                let deadline = tokio::time::Instant::now() + STOP_TIMEOUT * 6;
                loop {
                    match common::registry::delete_own_node(&session, &node.path).await {
                        Ok(deleted) => {
                            if deleted {
                                info!(zk.node = %node.path, "deregistered a node no service of the new config claims");
                            }
                            return;
                        }
                        Err(e) if tokio::time::Instant::now() >= deadline => {
                            warn!(zk.node = %node.path, error = %e, "cannot delete a node no service claims; it goes with its session");
                            return;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        }
    }
}

/// Why a takeover failed.
#[derive(Debug, thiserror::Error)]
#[error("takeover failed: {0}")]
pub struct TakeoverError(String);

/// Connects to the nerve serving `path`, receives its sessions (handed to `registry` to
/// resume), its services' state and its admin listener; with no nerve there, resumes from
/// what a parked nerve left beside `path` (no predecessor to confirm to, then). `Ok(None)`
/// when there is neither.
pub async fn take_over(
    path: &std::path::Path,
    registry: &Registry,
) -> Result<Option<(Option<Takeover>, Inheritance)>, TakeoverError> {
    let p = path.to_path_buf();
    let joined = tokio::task::spawn_blocking(move || Takeover::connect(&p, "nerve")).await;
    let result = joined.map_err(|e| TakeoverError(format!("handoff task failed: {e}")))?;
    let (takeover, offer) = match result {
        Ok(r) => r,
        Err(common::handoff::HandoffError::NoPeer { path, source }) => {
            let parked = parked_path(&path);
            return match take_parked(&parked)? {
                Some(state) => {
                    info!(
                        parked = %parked.display(),
                        sessions = state.sessions.len(),
                        services = state.services.len(),
                        "takeover: no running nerve; resuming the sessions a parked nerve left"
                    );
                    registry.resume(state.sessions);
                    Ok(Some((
                        None,
                        Inheritance {
                            services: state.services,
                            admin: None,
                            unclaimed: Vec::new(),
                        },
                    )))
                }
                None => {
                    warn!(upgrade_socket = %path.display(), error = %source, "takeover: no running nerve to take over and none parked; starting fresh");
                    Ok(None)
                }
            };
        }
        Err(e) => return Err(TakeoverError(e.to_string())),
    };
    let state: State = match serde_json::from_value(offer.state) {
        Ok(s) => s,
        Err(e) => {
            // The old nerve has let go already: its sessions expire unless resumed.
            return Err(TakeoverError(format!(
                "unusable state from the running nerve: {e}"
            )));
        }
    };
    let admin = offer.fds.into_iter().next().map(std::net::TcpListener::from);
    info!(
        old_pid = offer.pid,
        sessions = state.sessions.len(),
        services = state.services.len(),
        "takeover: received the running nerve's sessions"
    );
    registry.resume(state.sessions);
    Ok(Some((
        Some(takeover),
        Inheritance {
            services: state.services,
            admin,
            unclaimed: Vec::new(),
        },
    )))
}

/// A request to park (`POST /park`): answered with what was done, or why not.
pub type ParkRequest = oneshot::Sender<Result<String, String>>;

/// How the running nerve handed its registrations over (the caller then exits without
/// deregistering).
#[derive(Debug)]
pub enum Handoff {
    /// To a successor that connected to the upgrade socket (kept until exit).
    Successor(Successor),
    /// To whoever starts with `--takeover` before the sessions expire (parked in a file).
    Parked,
}

/// The running nerve's side: serves successors on `path` one at a time, and park requests;
/// returns once the registrations are handed over. Pends forever without a socket (park
/// requests are then refused).
pub async fn serve(
    path: Option<&std::path::Path>,
    services: Services,
    registry: Arc<Registry>,
    admin: OwnedFd,
    mut parks: mpsc::Receiver<ParkRequest>,
    session_timeout: Duration,
) -> Handoff {
    let socket = match path.map(common::handoff::UpgradeSocket::bind) {
        None => return refuse_parks(parks, "parking needs `upgrade_socket` in the config").await,
        Some(Err(e)) => {
            warn!(error = %e, "upgrades by --takeover are disabled");
            let why = format!("the upgrade socket is unusable: {e}");
            return refuse_parks(parks, &why).await;
        }
        Some(Ok(s)) => Arc::new(s),
    };
    info!(upgrade_socket = %socket.path().display(), "listening for a successor (--takeover)");
    let parked = parked_path(socket.path());
    let mut successor = loop {
        let reply = tokio::select! {
            s = socket.accept() => break s,
            Some(reply) = parks.recv() => reply,
        };
        // The file is made before anything stops: a nerve that cannot park goes on serving.
        let file = match ParkedFile::create(&parked) {
            Ok(f) => f,
            Err(e) => {
                warn!(parked = %parked.display(), error = %e, "cannot park: going on");
                let _ = reply.send(Err(format!("cannot write {}: {e}", parked.display())));
                continue;
            }
        };
        info!(parked = %parked.display(), "parking: handing the ZooKeeper sessions to the next nerve started with --takeover");
        let state = stop_for_handoff(&services, &registry).await;
        let answer = match file.finish(&state) {
            Ok(()) => {
                info!(parked = %parked.display(), "parked: exiting without deregistering (the nodes stay until the sessions expire unless a nerve started with --takeover resumes them)");
                Ok(format!(
                    "parked in {}: start nerve with --takeover within the session timeout ({session_timeout:?}) to keep the registrations\n",
                    parked.display()
                ))
            }
            Err(e) => {
                error!(parked = %parked.display(), error = %e, "parking failed after the reporters stopped: exiting; the nodes go when the sessions expire");
                Err(format!(
                    "parking failed: {e}; nerve exits, the nodes go with their sessions"
                ))
            }
        };
        let _ = reply.send(answer);
        // The successor finds no socket, then the file.
        socket.unlink();
        return Handoff::Parked;
    };
    info!(
        successor_pid = successor.pid,
        "takeover requested: handing the ZooKeeper sessions over"
    );
    // Later successors are refused while this one is served (and after: this process ends).
    let listening = socket.clone();
    let refuser = tokio::spawn(async move {
        let socket = listening;
        loop {
            let other = socket.accept().await;
            warn!(
                successor_pid = other.pid,
                "takeover refused: another takeover is in progress"
            );
            tokio::task::spawn_blocking(move || {
                other.refuse("another takeover is in progress; this one loses")
            });
        }
    });
    let state = stop_for_handoff(&services, &registry).await;
    let json = serde_json::to_value(&state).unwrap_or_default();
    let result = tokio::task::spawn_blocking(move || {
        let r = successor
            .offer(json, &[std::os::fd::AsFd::as_fd(&admin)])
            .and_then(|()| successor.wait_ready(SUCCESSOR_READY_TIMEOUT))
            .and_then(|()| {
                // The successor binds the path once told we stop: it must be free then.
                socket.unlink();
                successor.stopping()
            });
        (successor, r)
    })
    .await;
    refuser.abort();
    match result {
        Ok((successor, Ok(()))) => {
            info!(
                successor_pid = successor.pid,
                "the successor resumed the sessions: exiting without deregistering"
            );
            common::notify::main_pid(successor.pid);
            Handoff::Successor(successor)
        }
        Ok((successor, Err(e))) => {
            // The sessions are let go: they expire (their nodes with them) unless the
            // successor resumed them before it failed.
            warn!(successor_pid = successor.pid, error = %e, "the successor did not confirm the takeover; exiting (the sessions expire unless it resumed them)");
            Handoff::Successor(successor)
        }
        Err(e) => {
            warn!(error = %e, "takeover task failed; exiting (the sessions expire unless resumed)");
            std::future::pending().await
        }
    }
}

/// Stops every reporter without deleting its node (or emptying its file), lets go of the sessions without
/// closing them, and says what was left.
async fn stop_for_handoff(services: &Services, registry: &Registry) -> State {
    let handles = services.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut ended = Vec::new();
    for h in &handles {
        // Every reporter: ZooKeeper ones leave their node, file ones their file, as they are.
        for r in &h.reports {
            r.keep.store(true, Ordering::Release);
            r.cancel.cancel();
            let mut status = r.status.clone();
            ended.push(async move { while status.changed().await.is_ok() {} });
        }
    }
    if tokio::time::timeout(STOP_TIMEOUT, futures::future::join_all(ended))
        .await
        .is_err()
    {
        warn!("a reporter did not stop in time for the handoff");
    }
    let mut state = State::default();
    for h in &handles {
        let mut handed = Handed {
            healthy: h.check.borrow().healthy,
            nodes: Vec::new(),
        };
        for r in &h.reports {
            let Reporter::Zookeeper(z) = &r.config else {
                continue;
            };
            if let Some(path) = r.status.borrow().node.clone() {
                handed.nodes.push(HandedNode {
                    connect: z.zk_hosts.clone(),
                    auth: auth_name(z),
                    zk_path: z.zk_path.clone(),
                    instance_id: h.config.instance_id.clone(),
                    path,
                });
            }
        }
        state.services.insert(h.config.name.clone(), handed);
    }
    state.sessions = registry.export();
    registry.detach(STOP_TIMEOUT).await;
    state
}

/// Answers every park request with `why`; never returns.
async fn refuse_parks(mut parks: mpsc::Receiver<ParkRequest>, why: &str) -> Handoff {
    while let Some(reply) = parks.recv().await {
        let _ = reply.send(Err(format!("{why}\n")));
    }
    std::future::pending().await
}

/// Where a parked nerve leaves its state: `<upgrade_socket>.parked`.
pub fn parked_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".parked");
    PathBuf::from(name)
}

/// A parked state being written: a new file of mode 0600 (never one already there, never
/// through a symlink), renamed into place once complete.
struct ParkedFile {
    file: std::fs::File,
    tmp: PathBuf,
    path: PathBuf,
}

impl ParkedFile {
    fn create(path: &Path) -> std::io::Result<ParkedFile> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // A leftover of an interrupted park (ours: the directory is the operator's).
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(ParkedFile {
            file,
            tmp,
            path: path.to_path_buf(),
        })
    }

    fn finish(mut self, state: &State) -> std::io::Result<()> {
        let written = serde_json::to_vec(state)
            .map_err(std::io::Error::other)
            .and_then(|json| self.file.write_all(&json))
            .and_then(|()| self.file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        written
    }
}

/// Reads and removes what a parked nerve left at `path` (used once). `Ok(None)` when there
/// is nothing. A file another user could have written or read is refused (and left there).
fn take_parked(path: &Path) -> Result<Option<State>, TakeoverError> {
    let refuse = |why: String| TakeoverError(format!("{}: {why}", path.display()));
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(e.to_string())),
    };
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file".to_string()));
    }
    let uid = rustix::process::geteuid();
    if meta.uid() != uid.as_raw() && !uid.is_root() {
        return Err(refuse(format!(
            "owned by uid {}, not by this user: refused",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:o} lets other users read it: refused",
            meta.mode() & 0o777
        )));
    }
    let text = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
    // Used once, whatever it holds: the secret does not outlive its reading.
    if let Err(e) = std::fs::remove_file(path) {
        warn!(parked = %path.display(), error = %e, "cannot remove the parked state");
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| refuse(format!("unusable parked state: {e}")))
}

/// At a start without `--takeover`: a parked state nobody will resume is removed (its
/// sessions expire and their nodes go, as after a crash).
pub fn discard_parked(socket: &Path) {
    let parked = parked_path(socket);
    if std::fs::symlink_metadata(&parked).is_ok() {
        match std::fs::remove_file(&parked) {
            Ok(()) => {
                warn!(parked = %parked.display(), "a parked nerve's state was left; started without --takeover, so it is discarded (its nodes go when their sessions expire)")
            }
            Err(e) => warn!(parked = %parked.display(), error = %e, "cannot remove a parked nerve's state"),
        }
    }
}
