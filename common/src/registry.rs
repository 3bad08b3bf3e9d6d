//! The ZooKeeper registry: the only module that talks to ZooKeeper.
//!
//! - [`Registry`] hands out one [`Session`] per ensemble connect string (chroot included),
//!   shared by every service of the process.
//! - A [`Session`] keeps a ZooKeeper session alive: it connects with backoff, publishes its
//!   [`SessionStatus`] on a watch channel, and on expiry builds a brand new client. Expiry is an
//!   ordinary event, never a reason to exit.
//! - [`Registration`] makes ZooKeeper hold exactly one ephemeral-sequential node with given
//!   data (nerve's side).
//! - [`watch`] turns a service path into a stream of [`WatchUpdate`]s (synapse's side).
//!
//! Watches are one-shot (children watch on the service path, data watch per child). We never
//! use persistent watches: `zookeeper-client` 0.11.2 does not re-register them after
//! reconnecting to another server. One-shot watches are re-armed by the client library on
//! reconnect, and after every reconnect we re-list the path anyway and send a `Reset`, since
//! events can be missed while disconnected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use zookeeper_client as zk;

use crate::codec::{self, DecodeError, Node};

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
}

fn zk_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(zk::Error) -> RegistryError + 'a {
    move |source| RegistryError::Zk {
        op,
        path: path.to_string(),
        source,
    }
}

/// Registry-wide settings.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Requested ZooKeeper session timeout (the server may bound it). Default 10 s.
    pub session_timeout: Duration,
    /// Longest pause between two connection attempts. Default 5 s.
    pub max_backoff: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            session_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// One ZooKeeper session per ensemble per process.
#[derive(Debug)]
pub struct Registry {
    options: RegistryOptions,
    cancel: CancellationToken,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Registry {
    /// A registry whose sessions stop when `cancel` fires.
    pub fn new(options: RegistryOptions, cancel: CancellationToken) -> Self {
        Registry {
            options,
            cancel,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The session for a connect string (`host:port,...[/chroot]`), started on first use.
    pub fn session(&self, connect: &str) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(connect.to_string())
            .or_insert_with(|| Session::start(connect.to_string(), self.options.clone(), self.cancel.clone()))
            .clone()
    }
}

/// The state of a session as seen by its users.
#[derive(Clone, Default)]
pub struct SessionStatus {
    client: Option<zk::Client>,
    /// Counts sessions: bumped each time a new session is established (at start and after
    /// each expiry). Nodes created under an older epoch are gone.
    pub session_epoch: u64,
    /// Counts connections: bumped at each (re)connection, including to another server.
    pub connection_epoch: u64,
    /// True while connected.
    pub connected: bool,
    /// ZooKeeper session id, when there is a session.
    pub session_id: Option<i64>,
}

impl fmt::Debug for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStatus")
            .field("session_epoch", &self.session_epoch)
            .field("connection_epoch", &self.connection_epoch)
            .field("connected", &self.connected)
            .field("session_id", &self.session_id.map(|id| format!("{id:#x}")))
            .finish()
    }
}

/// A ZooKeeper session kept alive in the background.
#[derive(Debug)]
pub struct Session {
    connect: String,
    status: tokio_watch::Receiver<SessionStatus>,
}

impl Session {
    fn start(connect: String, options: RegistryOptions, cancel: CancellationToken) -> Arc<Session> {
        let (tx, rx) = tokio_watch::channel(SessionStatus::default());
        let span = tracing::info_span!("zk_session", zk.connect = %connect);
        tokio::spawn(run_session(connect.clone(), options, tx, cancel).instrument(span));
        Arc::new(Session { connect, status: rx })
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> tokio_watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    fn client(&self) -> Result<(zk::Client, SessionStatus), RegistryError> {
        let status = self.status();
        match (&status.client, status.connected) {
            (Some(c), true) => Ok((c.clone(), status)),
            _ => Err(RegistryError::NotConnected {
                connect: self.connect.clone(),
            }),
        }
    }
}

async fn run_session(
    connect: String,
    options: RegistryOptions,
    tx: tokio_watch::Sender<SessionStatus>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = zk::Client::connector()
            .with_session_timeout(options.session_timeout)
            .connect(&connect);
        let client = tokio::select! {
            _ = cancel.cancelled() => return,
            r = attempt => r,
        };
        let client = match client {
            Ok(c) => c,
            Err(err) => {
                warn!(error = %err, retry_in = ?backoff, "cannot establish ZooKeeper session");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(options.max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let session_id = client.session_id().0;
        info!(session_id = format!("{session_id:#x}"), timeout = ?client.session_timeout(), "ZooKeeper session established");
        let mut states = client.state_watcher();
        tx.send_modify(|s| {
            s.client = Some(client.clone());
            s.session_epoch += 1;
            s.connection_epoch += 1;
            s.connected = true;
            s.session_id = Some(session_id);
        });
        drop(client);
        loop {
            let state = tokio::select! {
                _ = cancel.cancelled() => {
                    // Dropping the last client closes the session, which removes our
                    // ephemeral nodes if anything is left.
                    tx.send_modify(|s| { s.client = None; s.connected = false; });
                    return;
                }
                st = states.changed() => st,
            };
            match state {
                zk::SessionState::Disconnected => {
                    warn!("disconnected from ZooKeeper; keeping the session, reconnecting");
                    tx.send_modify(|s| s.connected = false);
                }
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    info!("reconnected to ZooKeeper");
                    tx.send_modify(|s| {
                        s.connected = true;
                        s.connection_epoch += 1;
                    });
                }
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                    warn!(?state, "ZooKeeper session ended; establishing a new one");
                    tx.send_modify(|s| {
                        s.client = None;
                        s.connected = false;
                        s.session_id = None;
                    });
                    break;
                }
            }
        }
    }
}

/// What [`Registration::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The node was there with the right data.
    Unchanged,
    /// The node's data was rewritten.
    Updated,
    /// A node was created (first time, or after a session expiry).
    Created,
}

/// Keeps one ephemeral-sequential node `<parent>/<name>_<seq>` for one service instance.
///
/// Used by a single reconciler task; it remembers the node it owns and the session it was
/// created under.
#[derive(Debug)]
pub struct Registration {
    session: Arc<Session>,
    parent: String,
    prefix: String,
    owned: Option<Owned>,
}

#[derive(Debug)]
struct Owned {
    session_epoch: u64,
    path: String,
    data: Vec<u8>,
}

impl Registration {
    /// A registration of children named `<name>_<seq>` under `parent` (created if missing).
    pub fn new(session: Arc<Session>, parent: &str, name: &str) -> Self {
        let prefix = format!("{}/{}_", parent.trim_end_matches('/'), name);
        Registration {
            session,
            parent: parent.to_string(),
            prefix,
            owned: None,
        }
    }

    /// The full path of the node currently held, if any.
    pub fn path(&self) -> Option<&str> {
        self.owned.as_ref().map(|o| o.path.as_str())
    }

    /// Makes ZooKeeper hold exactly one node of ours with `data`.
    ///
    /// After a session expiry the old node died with its session, so a new one is created.
    /// Before creating, the parent is scanned for nodes this session already owns (a create
    /// whose reply was lost to a disconnection did happen): the first is adopted, any other
    /// is deleted, so there is never a duplicate.
    pub async fn ensure(&mut self, data: &[u8]) -> Result<EnsureOutcome, RegistryError> {
        let (client, status) = self.session.client()?;
        let current = self
            .owned
            .as_ref()
            .filter(|o| o.session_epoch == status.session_epoch);
        if let Some((path, same)) = current.map(|o| (o.path.clone(), o.data == data)) {
            match client.check_stat(&path).await.map_err(zk_err("exists", &path))? {
                Some(_) if same => return Ok(EnsureOutcome::Unchanged),
                Some(_) => match client.set_data(&path, data, None).await {
                    Ok(_) => {
                        self.owned = Some(Owned {
                            session_epoch: status.session_epoch,
                            path,
                            data: data.to_vec(),
                        });
                        return Ok(EnsureOutcome::Updated);
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(zk_err("set", &path)(e)),
                },
                None => {}
            }
            warn!(zk.path = %path, "our node vanished from ZooKeeper; registering again");
        }
        self.owned = None;
        let session_id = status.session_id.unwrap_or_default();
        let mut mine = self.owned_children(&client, session_id).await?;
        if let Some(path) = mine.pop() {
            for extra in mine {
                warn!(zk.path = %extra, "deleting duplicate node of ours");
                delete_if_exists(&client, &extra).await?;
            }
            client
                .set_data(&path, data, None)
                .await
                .map_err(zk_err("set", &path))?;
            self.owned = Some(Owned {
                session_epoch: status.session_epoch,
                path,
                data: data.to_vec(),
            });
            return Ok(EnsureOutcome::Updated);
        }
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        client
            .mkdir(&self.parent, &persistent)
            .await
            .map_err(zk_err("mkdir", &self.parent))?;
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let (_, seq) = client
            .create(&self.prefix, data, &ephemeral)
            .await
            .map_err(zk_err("create", &self.prefix))?;
        let path = format!("{}{}", self.prefix, seq);
        self.owned = Some(Owned {
            session_epoch: status.session_epoch,
            path,
            data: data.to_vec(),
        });
        Ok(EnsureOutcome::Created)
    }

    /// Deletes our node if we hold one. Nodes of an expired session are already gone.
    pub async fn remove(&mut self) -> Result<bool, RegistryError> {
        let Some(owned) = self.owned.as_ref() else {
            return Ok(false);
        };
        let status = self.session.status();
        if owned.session_epoch != status.session_epoch {
            self.owned = None;
            return Ok(false);
        }
        let (client, _) = self.session.client()?;
        let path = owned.path.clone();
        let existed = delete_if_exists(&client, &path).await?;
        self.owned = None;
        Ok(existed)
    }

    async fn owned_children(
        &self,
        client: &zk::Client,
        session_id: i64,
    ) -> Result<Vec<String>, RegistryError> {
        let children = match client.list_children(&self.parent).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(zk_err("list", &self.parent)(e)),
        };
        let name_prefix = self.prefix.rsplit('/').next().unwrap_or_default();
        let mut mine = Vec::new();
        for child in children.iter().filter(|c| is_seq_child(c, name_prefix)) {
            let path = format!("{}/{}", self.parent.trim_end_matches('/'), child);
            if let Some(stat) = client.check_stat(&path).await.map_err(zk_err("exists", &path))? {
                if stat.ephemeral_owner == session_id {
                    mine.push(path);
                }
            }
        }
        mine.sort();
        mine.reverse();
        Ok(mine)
    }
}

fn is_seq_child(child: &str, name_prefix: &str) -> bool {
    child
        .strip_prefix(name_prefix)
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

async fn delete_if_exists(client: &zk::Client, path: &str) -> Result<bool, RegistryError> {
    match client.delete(path, None).await {
        Ok(()) => Ok(true),
        Err(zk::Error::NoNode) => Ok(false),
        Err(e) => Err(zk_err("delete", path)(e)),
    }
}

/// One child of a watched path that decoded to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The child's name (unique under the path).
    pub id: String,
    /// Its decoded payload.
    pub node: Node,
}

/// A change to the members of a watched path.
#[derive(Debug)]
pub enum WatchUpdate {
    /// The complete set: sent after the first listing and after every (re)connection.
    Reset(Vec<Member>),
    /// A member was added or its data changed.
    Upsert(Member),
    /// A member is gone.
    Remove(String),
    /// A child could not be decoded (sent once per child data version). Consumers keep
    /// whatever they had for `id`.
    Invalid {
        /// The child's name.
        id: String,
        /// Why it was refused.
        error: DecodeError,
    },
}

type DataWatch = BoxFuture<'static, (String, zk::WatchedEvent)>;

/// Watches the children of `path` and sends their changes until `cancel` fires or the
/// receiver is dropped. Never gives up on ZooKeeper errors: it backs off and re-lists.
pub fn watch(session: Arc<Session>, path: String, cancel: CancellationToken) -> mpsc::Receiver<WatchUpdate> {
    let (tx, rx) = mpsc::channel(256);
    let span = tracing::info_span!("zk_watch", zk.path = %path);
    tokio::spawn(
        async move {
            let mut w = Watcher {
                session,
                path,
                tx,
                members: BTreeMap::new(),
                reported_bad: HashSet::new(),
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = w.run() => {}
            }
        }
        .instrument(span),
    );
    rx
}

struct Watcher {
    session: Arc<Session>,
    path: String,
    tx: mpsc::Sender<WatchUpdate>,
    /// Children we currently know, with their decoded node when valid.
    members: BTreeMap<String, Option<Node>>,
    /// (child, data version) already reported invalid, so each bad version is logged once.
    reported_bad: HashSet<(String, i32)>,
}

/// What to do after an incremental step failed.
enum Step {
    Continue,
    Resync,
    Closed,
}

impl Watcher {
    async fn run(&mut self) {
        let mut status_rx = self.session.subscribe();
        let mut synced_connection = 0;
        let mut retry = Duration::from_millis(100);
        loop {
            let status = status_rx.borrow_and_update().clone();
            let client = match (&status.client, status.connected) {
                (Some(c), true) if status.connection_epoch != synced_connection => c.clone(),
                _ => {
                    if status_rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (mut children_watch, mut data_watches) = match self.resync(&client).await {
                Ok(Some(w)) => w,
                Ok(None) => return,
                Err(err) => {
                    warn!(error = %err, retry_in = ?retry, "cannot list watched path");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        r = status_rx.changed() => if r.is_err() { return },
                    }
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            retry = Duration::from_millis(100);
            synced_connection = status.connection_epoch;
            loop {
                let step = tokio::select! {
                    r = status_rx.changed() => {
                        if r.is_err() { return }
                        let s = status_rx.borrow().clone();
                        if s.connection_epoch != synced_connection || !s.connected { Step::Resync } else { Step::Continue }
                    }
                    ev = &mut children_watch => {
                        if ev.event_type == zk::EventType::Session {
                            Step::Resync
                        } else {
                            match self.relist(&client, &mut data_watches).await {
                                Ok(Some(w)) => { children_watch = w; Step::Continue }
                                Ok(None) => Step::Closed,
                                Err(err) => { warn!(error = %err, "re-listing failed"); Step::Resync }
                            }
                        }
                    }
                    Some((child, ev)) = data_watches.next() => {
                        self.on_data_event(&client, child, ev, &mut data_watches).await
                    }
                };
                match step {
                    Step::Continue => {}
                    Step::Closed => return,
                    Step::Resync => {
                        synced_connection = 0;
                        break;
                    }
                }
            }
        }
    }

    /// Lists everything afresh and sends a `Reset`. `Ok(None)`: the receiver is gone.
    async fn resync(
        &mut self,
        client: &zk::Client,
    ) -> Result<Option<(BoxFuture<'static, zk::WatchedEvent>, FuturesUnordered<DataWatch>)>, RegistryError>
    {
        let (children, children_watch) = self.list(client).await?;
        let mut data_watches = FuturesUnordered::new();
        let mut fresh = BTreeMap::new();
        let mut invalid = Vec::new();
        for child in children {
            match self.fetch(client, &child, &mut data_watches).await? {
                Some(Ok(node)) => {
                    fresh.insert(child, Some(node));
                }
                Some(Err((version, error))) => {
                    if self.reported_bad.insert((child.clone(), version)) {
                        invalid.push((child.clone(), error));
                    }
                    fresh.insert(child, None);
                }
                None => {}
            }
        }
        self.members = fresh;
        self.reported_bad
            .retain(|(child, _)| self.members.contains_key(child));
        let good = self
            .members
            .iter()
            .filter_map(|(id, n)| n.clone().map(|node| Member { id: id.clone(), node }))
            .collect::<Vec<_>>();
        debug!(members = good.len(), "full sync");
        if self.tx.send(WatchUpdate::Reset(good)).await.is_err() {
            return Ok(None);
        }
        for (id, error) in invalid {
            if self.tx.send(WatchUpdate::Invalid { id, error }).await.is_err() {
                return Ok(None);
            }
        }
        Ok(Some((children_watch, data_watches)))
    }

    /// Lists the children with a watch. A missing path counts as empty, watched for creation.
    async fn list(
        &self,
        client: &zk::Client,
    ) -> Result<(Vec<String>, BoxFuture<'static, zk::WatchedEvent>), RegistryError> {
        loop {
            match client.get_and_watch_children(&self.path).await {
                Ok((children, _, w)) => return Ok((children, w.changed().boxed())),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(zk_err("list", &self.path)(e)),
            }
            match client.check_and_watch_stat(&self.path).await {
                Ok((None, w)) => return Ok((Vec::new(), w.changed().boxed())),
                Ok((Some(_), _)) => continue, // created in between: list again
                Err(e) => return Err(zk_err("exists", &self.path)(e)),
            }
        }
    }

    /// Reads one child with a data watch. `None`: it is gone.
    async fn fetch(
        &self,
        client: &zk::Client,
        child: &str,
        watches: &mut FuturesUnordered<DataWatch>,
    ) -> Result<Option<Result<Node, (i32, DecodeError)>>, RegistryError> {
        let path = format!("{}/{}", self.path.trim_end_matches('/'), child);
        match client.get_and_watch_data(&path).await {
            Ok((data, stat, w)) => {
                let name = child.to_string();
                watches.push(async move { (name, w.changed().await) }.boxed());
                Ok(Some(codec::decode(child, &data).map_err(|e| (stat.version, e))))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err("get", &path)(e)),
        }
    }

    async fn relist(
        &mut self,
        client: &zk::Client,
        data_watches: &mut FuturesUnordered<DataWatch>,
    ) -> Result<Option<BoxFuture<'static, zk::WatchedEvent>>, RegistryError> {
        let (children, w) = self.list(client).await?;
        let now: HashSet<&String> = children.iter().collect();
        let gone: Vec<String> = self
            .members
            .keys()
            .filter(|k| !now.contains(k))
            .cloned()
            .collect();
        for id in gone {
            if !self.forget(id).await {
                return Ok(None);
            }
        }
        let new: Vec<String> = children
            .into_iter()
            .filter(|c| !self.members.contains_key(c))
            .collect();
        for child in new {
            let fetched = self.fetch(client, &child, data_watches).await?;
            if !self.apply(child, fetched).await {
                return Ok(None);
            }
        }
        Ok(Some(w))
    }

    async fn on_data_event(
        &mut self,
        client: &zk::Client,
        child: String,
        ev: zk::WatchedEvent,
        data_watches: &mut FuturesUnordered<DataWatch>,
    ) -> Step {
        match ev.event_type {
            zk::EventType::Session => Step::Resync,
            zk::EventType::NodeDeleted => {
                if self.forget(child).await {
                    Step::Continue
                } else {
                    Step::Closed
                }
            }
            _ => match self.fetch(client, &child, data_watches).await {
                Ok(fetched) => {
                    if self.apply(child, fetched).await {
                        Step::Continue
                    } else {
                        Step::Closed
                    }
                }
                Err(err) => {
                    warn!(error = %err, "re-reading a child failed");
                    Step::Resync
                }
            },
        }
    }

    /// Sends the change for one fetched child. False: the receiver is gone.
    async fn apply(&mut self, child: String, fetched: Option<Result<Node, (i32, DecodeError)>>) -> bool {
        let update = match fetched {
            None => return self.forget(child).await,
            Some(Ok(node)) => {
                if self.members.get(&child) == Some(&Some(node.clone())) {
                    return true;
                }
                self.members.insert(child.clone(), Some(node.clone()));
                WatchUpdate::Upsert(Member { id: child, node })
            }
            Some(Err((version, error))) => {
                // Keep the last good node for this child, if any: bad input never removes
                // a good backend.
                self.members.entry(child.clone()).or_insert(None);
                if !self.reported_bad.insert((child.clone(), version)) {
                    return true;
                }
                WatchUpdate::Invalid { id: child, error }
            }
        };
        self.tx.send(update).await.is_ok()
    }

    async fn forget(&mut self, child: String) -> bool {
        self.reported_bad.retain(|(c, _)| c != &child);
        match self.members.remove(&child) {
            Some(Some(_)) => self.tx.send(WatchUpdate::Remove(child)).await.is_ok(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests;
