//! synapse's side: the children of a service path as a stream of typed updates.
//!
//! Two rules keep the view right under churn and bad input:
//! - **The children list is the authority for membership.** A child enters when a listing
//!   shows it and leaves when a listing no longer does (or on a `Reset`). A data event never
//!   forgets a child on its own word: it re-reads the child (data with a watch, or, when the
//!   node is gone, an exists watch that fires when it is created again), because the event may
//!   be stale: a child deleted and created again under the same name may already have been
//!   listed again when the old `NodeDeleted` is handled. Each child has one live watch; events
//!   of its older watches are ignored (the newest read already saw what they announce).
//! - **A child that was good keeps its last good value.** Invalid data is reported once per
//!   data version (`mzxid`) and never replaces or removes the last good node, not even across
//!   the re-list and `Reset` of a reconnection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use super::session::Session;
use super::{zk, zk_err, RegistryError};
use crate::codec::{self, DecodeError, Node};

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
    /// The complete set: sent after the first listing and after every (re)connection. A
    /// child whose current data is invalid is in it with its last good node, if it had one.
    Reset(Vec<Member>),
    /// A member was added or its data changed. Boxed: the channel's blocks hold 32 updates
    /// each, sized by the largest variant, for as long as the channel lives (a `Node` inline
    /// made that about 6 kB per watched path; issue 13).
    Upsert(Box<Member>),
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

/// How many times a child is read while it keeps vanishing and reappearing between the
/// data read and the exists check, before giving up and re-listing.
const READ_ATTEMPTS: usize = 5;

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
                children: Children::default(),
                watches: 0,
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

/// Children by name. Hashed with foldhash: a re-list looks up every listed name (1,000 for a
/// service of 1,000 instances), and ZooKeeper's names share long prefixes that make ordered
/// comparison or SipHash several times slower. Not an input an attacker picks freely (the
/// names are the service's own ZooKeeper nodes).
type Children = HashMap<String, Child, foldhash::fast::RandomState>;

/// A one-shot watch on one child: its name, its generation, the event.
type ChildWatch = BoxFuture<'static, (String, u64, zk::WatchedEvent)>;
type ChildrenWatch = BoxFuture<'static, zk::WatchedEvent>;

struct Watcher {
    session: Arc<Session>,
    path: String,
    tx: mpsc::Sender<WatchUpdate>,
    /// The children of the path as of our last listing.
    children: Children,
    /// Watch generations handed out so far.
    watches: u64,
}

#[derive(Debug, Default)]
struct Child {
    /// The last good node, as consumers know it. `None`: never valid, or found deleted.
    node: Option<Node>,
    /// `mzxid` of the bad data version last reported, so each one is reported once.
    reported_bad: Option<i64>,
    /// Generation of the child's live watch; 0: none (its watch fired and the read that
    /// follows has not been done): the next listing reads it.
    watch: u64,
}

/// What a read of one child found.
enum Read {
    /// Its data: decoded, or refused with the bad version's `mzxid`.
    Data(Result<Node, (i64, DecodeError)>),
    /// The node does not exist (the watch fires when it is created).
    Absent,
}

/// What to do after an incremental step.
enum Step {
    Continue,
    /// List the children again (and read those without a live watch).
    Relist,
    /// Start over with a full listing and reads (the session changed).
    Resync,
    Closed,
}

impl Watcher {
    /// Watches until the receiver is gone.
    ///
    /// A new session (first one, or after an expiry) lists and reads everything afresh
    /// ([`resync`](Self::resync)): its watches are new. A reconnection of the same session
    /// keeps them (the client library re-arms them, and the server fires those whose node
    /// changed meanwhile), so it only re-lists ([`relist`](Self::relist): one `getChildren`
    /// when nothing changed, plus one read per child that joined), after a random delay
    /// (the session's splay) since a whole fleet reconnects at once after a leader election.
    async fn run(&mut self) {
        let mut status_rx = self.session.subscribe();
        let mut synced_session = 0;
        let mut retry = Duration::from_millis(100);
        loop {
            let status = status_rx.borrow_and_update().clone();
            let client = match (&status.client, status.connected) {
                (Some(c), true) if status.session_epoch != synced_session => c.clone(),
                _ => {
                    if status_rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (mut children_watch, mut child_watches) = match self.resync(&client).await {
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
            synced_session = status.session_epoch;
            let mut synced_connection = status.connection_epoch;
            let mut relist_at: Option<tokio::time::Instant> = None;
            loop {
                let relist_due = async {
                    match relist_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let step = tokio::select! {
                    r = status_rx.changed() => {
                        if r.is_err() { return }
                        let s = status_rx.borrow().clone();
                        if s.session_epoch != synced_session {
                            Step::Resync
                        } else if s.connected && s.connection_epoch != synced_connection {
                            synced_connection = s.connection_epoch;
                            let delay = self.session.splay_delay();
                            relist_at.get_or_insert_with(|| tokio::time::Instant::now() + delay);
                            Step::Continue
                        } else {
                            Step::Continue
                        }
                    }
                    _ = relist_due => {
                        relist_at = None;
                        match self.relist(&client, &mut child_watches).await {
                            Ok(Some(w)) => {
                                children_watch = w;
                                retry = Duration::from_millis(100);
                                if self.send_reset().await { Step::Continue } else { Step::Closed }
                            }
                            Ok(None) => Step::Closed,
                            Err(err) => {
                                warn!(error = %err, retry_in = ?retry, "re-listing failed");
                                relist_at = Some(tokio::time::Instant::now() + retry);
                                retry = (retry * 2).min(Duration::from_secs(5));
                                Step::Continue
                            }
                        }
                    }
                    ev = &mut children_watch => {
                        // Fired: until a listing arms a new one, nothing more comes from it.
                        children_watch = std::future::pending().boxed();
                        if ev.event_type == zk::EventType::Session {
                            Step::Resync
                        } else {
                            Step::Relist
                        }
                    }
                    Some((child, generation, ev)) = child_watches.next() => {
                        self.on_child_event(&client, child, generation, ev, &mut child_watches).await
                    }
                };
                match step {
                    Step::Continue => {}
                    Step::Relist => match self.relist(&client, &mut child_watches).await {
                        Ok(Some(w)) => children_watch = w,
                        Ok(None) => return,
                        Err(err) => {
                            warn!(error = %err, retry_in = ?retry, "re-listing failed");
                            relist_at = Some(tokio::time::Instant::now() + retry);
                            retry = (retry * 2).min(Duration::from_secs(5));
                        }
                    },
                    Step::Closed => return,
                    Step::Resync => {
                        synced_session = 0;
                        break;
                    }
                }
            }
        }
    }

    /// Sends the complete set as it stands. False: the receiver is gone.
    async fn send_reset(&mut self) -> bool {
        let mut good = self
            .children
            .iter()
            .filter_map(|(id, c)| c.node.clone().map(|node| Member { id: id.clone(), node }))
            .collect::<Vec<_>>();
        good.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        debug!(members = good.len(), children = self.children.len(), "re-listed");
        self.tx.send(WatchUpdate::Reset(good)).await.is_ok()
    }

    /// Lists and reads everything afresh and sends a `Reset`. `Ok(None)`: the receiver is
    /// gone. Nothing is changed unless every read succeeded.
    async fn resync(
        &mut self,
        client: &zk::Client,
    ) -> Result<Option<(ChildrenWatch, FuturesUnordered<ChildWatch>)>, RegistryError> {
        let (listed, children_watch) = self.list(client).await?;
        let mut child_watches = FuturesUnordered::new();
        let mut fresh = Children::default();
        let mut invalid = Vec::new();
        for child in listed {
            let (read, w) = self.read(client, &child).await?;
            // Absent: deleted since the listing, whose watch tells what comes next.
            let Read::Data(data) = read else { continue };
            let watch = self.arm(&child, w, &mut child_watches);
            let previous = self.children.get(&child);
            let mut entry = Child {
                node: previous.and_then(|c| c.node.clone()),
                reported_bad: previous.and_then(|c| c.reported_bad),
                watch,
            };
            match data {
                Ok(node) => {
                    entry.node = Some(node);
                    entry.reported_bad = None;
                }
                Err((mzxid, error)) => {
                    if entry.reported_bad != Some(mzxid) {
                        entry.reported_bad = Some(mzxid);
                        invalid.push((child.clone(), error));
                    }
                }
            }
            fresh.insert(child, entry);
        }
        self.children = fresh;
        let mut good = self
            .children
            .iter()
            .filter_map(|(id, c)| c.node.clone().map(|node| Member { id: id.clone(), node }))
            .collect::<Vec<_>>();
        good.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        debug!(members = good.len(), children = self.children.len(), "full sync");
        if self.tx.send(WatchUpdate::Reset(good)).await.is_err() {
            return Ok(None);
        }
        for (id, error) in invalid {
            if self.tx.send(WatchUpdate::Invalid { id, error }).await.is_err() {
                return Ok(None);
            }
        }
        Ok(Some((children_watch, child_watches)))
    }

    /// Lists the children with a watch. A missing path counts as empty, watched for creation.
    async fn list(&self, client: &zk::Client) -> Result<(Vec<String>, ChildrenWatch), RegistryError> {
        loop {
            self.session.count_requests(1);
            match client.get_and_watch_children(&self.path).await {
                Ok((children, _, w)) => return Ok((children, w.changed().boxed())),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(zk_err("list", &self.path)(e)),
            }
            self.session.count_requests(1);
            match client.check_and_watch_stat(&self.path).await {
                Ok((None, w)) => return Ok((Vec::new(), w.changed().boxed())),
                Ok((Some(_), _)) => continue, // created in between: list again
                Err(e) => return Err(zk_err("exists", &self.path)(e)),
            }
        }
    }

    /// Reads one child and sets a watch on it: a data watch when it exists, an exists watch
    /// (fires on creation) when it does not.
    async fn read(
        &self,
        client: &zk::Client,
        child: &str,
    ) -> Result<(Read, zk::OneshotWatcher), RegistryError> {
        let path = format!("{}/{}", self.path.trim_end_matches('/'), child);
        for _ in 0..READ_ATTEMPTS {
            self.session.count_requests(1);
            match client.get_and_watch_data(&path).await {
                Ok((data, stat, w)) => {
                    let decoded = codec::decode(child, &data).map_err(|e| (stat.mzxid, e));
                    return Ok((Read::Data(decoded), w));
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(zk_err("get", &path)(e)),
            }
            self.session.count_requests(1);
            match client.check_and_watch_stat(&path).await {
                Ok((None, w)) => return Ok((Read::Absent, w)),
                Ok((Some(_), _)) => continue, // created again in between: read again
                Err(e) => return Err(zk_err("exists", &path)(e)),
            }
        }
        Err(RegistryError::Unsettled { path })
    }

    /// Makes `w` the child's live watch; returns its generation.
    fn arm(&mut self, child: &str, w: zk::OneshotWatcher, watches: &mut FuturesUnordered<ChildWatch>) -> u64 {
        self.watches += 1;
        let generation = self.watches;
        let name = child.to_string();
        watches.push(async move { (name, generation, w.changed().await) }.boxed());
        generation
    }

    /// Lists the children again: forgets who left the listing, reads who joined it and who
    /// has no live watch. One `getChildren` when nothing changed.
    async fn relist(
        &mut self,
        client: &zk::Client,
        child_watches: &mut FuturesUnordered<ChildWatch>,
    ) -> Result<Option<ChildrenWatch>, RegistryError> {
        let (listed, w) = self.list(client).await?;
        let now: HashSet<&str, foldhash::fast::RandomState> = listed.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .children
            .keys()
            .filter(|k| !now.contains(k.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if !self.forget(id).await {
                return Ok(None);
            }
        }
        for child in listed {
            let known = self.children.get(&child).map(|c| c.watch);
            if known.is_some_and(|watch| watch != 0) {
                continue;
            }
            let (read, cw) = self.read(client, &child).await?;
            let sent = match (read, known) {
                (Read::Data(data), _) => {
                    let watch = self.arm(&child, cw, child_watches);
                    self.children.entry(child.clone()).or_default().watch = watch;
                    self.apply(&child, data).await
                }
                // Known, found deleted: consumers drop it; its exists watch tells when it is
                // back, the children watch when it left the listing.
                (Read::Absent, Some(_)) => {
                    let watch = self.arm(&child, cw, child_watches);
                    if let Some(c) = self.children.get_mut(&child) {
                        c.watch = watch;
                    }
                    self.vanished(&child).await
                }
                // New, deleted since the listing: the children watch tells what comes next.
                (Read::Absent, None) => true,
            };
            if !sent {
                return Ok(None);
            }
        }
        Ok(Some(w))
    }

    /// Re-reads a child whose live watch fired and sends what changed.
    async fn on_child_event(
        &mut self,
        client: &zk::Client,
        child: String,
        generation: u64,
        ev: zk::WatchedEvent,
        child_watches: &mut FuturesUnordered<ChildWatch>,
    ) -> Step {
        if ev.event_type == zk::EventType::Session {
            return Step::Resync;
        }
        // Not listed any more, or a stale watch: the listing and the newest read decide.
        let Some(c) = self.children.get_mut(&child).filter(|c| c.watch == generation) else {
            return Step::Continue;
        };
        if ev.event_type == zk::EventType::NodeDeleted {
            // Most deletions are the child leaving for good: the listing (one `getChildren`)
            // says so, and reads the child again only if it is still, or again, listed.
            // Reading it first would cost a failed read and an exists check.
            c.watch = 0;
            return Step::Relist;
        }
        let (read, w) = match self.read(client, &child).await {
            Ok(r) => r,
            Err(err) => {
                warn!(error = %err, zk.node = %child, "re-reading a child failed");
                // No live watch now: the next listing reads it.
                if let Some(c) = self.children.get_mut(&child) {
                    c.watch = 0;
                }
                return Step::Relist;
            }
        };
        let watch = self.arm(&child, w, child_watches);
        if let Some(c) = self.children.get_mut(&child) {
            c.watch = watch;
        }
        let sent = match read {
            Read::Data(data) => self.apply(&child, data).await,
            Read::Absent => self.vanished(&child).await,
        };
        if sent {
            Step::Continue
        } else {
            Step::Closed
        }
    }

    /// Sends the change for a listed child's data. False: the receiver is gone.
    async fn apply(&mut self, child: &str, data: Result<Node, (i64, DecodeError)>) -> bool {
        let Some(c) = self.children.get_mut(child) else {
            return true;
        };
        let update = match data {
            Ok(node) => {
                c.reported_bad = None;
                if c.node.as_ref() == Some(&node) {
                    return true;
                }
                c.node = Some(node.clone());
                WatchUpdate::Upsert(Box::new(Member {
                    id: child.to_string(),
                    node,
                }))
            }
            Err((mzxid, error)) => {
                // The last good node stays: bad input never removes a good backend.
                if c.reported_bad == Some(mzxid) {
                    return true;
                }
                c.reported_bad = Some(mzxid);
                WatchUpdate::Invalid {
                    id: child.to_string(),
                    error,
                }
            }
        };
        self.tx.send(update).await.is_ok()
    }

    /// A listed child's node was found deleted: consumers drop it now; it stays listed (an
    /// exists watch is set) until a listing says otherwise. False: the receiver is gone.
    async fn vanished(&mut self, child: &str) -> bool {
        let Some(c) = self.children.get_mut(child) else {
            return true;
        };
        c.reported_bad = None;
        match c.node.take() {
            Some(_) => self.tx.send(WatchUpdate::Remove(child.to_string())).await.is_ok(),
            None => true,
        }
    }

    /// A child left the listing. False: the receiver is gone.
    async fn forget(&mut self, child: String) -> bool {
        match self.children.remove(&child) {
            Some(Child { node: Some(_), .. }) => self.tx.send(WatchUpdate::Remove(child)).await.is_ok(),
            _ => true,
        }
    }
}
