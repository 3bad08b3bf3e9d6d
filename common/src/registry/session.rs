//! One ZooKeeper session per ensemble per process: connect, reconnect, expiry, epochs.
//!
//! Connecting: each attempt tries every server of the connect string once
//! (`with_fail_eagerly`), each with a short connection timeout ([`connection_timeout`]), so an
//! attempt ends as soon as every server has refused or stayed silent for that long; between
//! attempts we sleep a jittered backoff that doubles from 100 ms up to
//! [`RegistryOptions::max_backoff`] (500 ms by default). A long outage therefore costs two
//! cheap attempts per second (a refused TCP connect per server), and a new session is
//! established within about half a second of a server answering again.
//!
//! Reconnecting an existing session (after a disconnection, before it expires) is first left
//! to the client library, which retries the servers at once (with a splay: after a random
//! delay up to [`fleet::reconnect_bound`], so a fleet that lost its connections together does
//! not come back together; while no server answers, it then tries them all every
//! `[bound/2, bound]`) and otherwise with delays doubling up to a good part of the session
//! timeout (bounded by 7/5 of it, after which it declares the session expired). Since that
//! can leave a session down for seconds after the servers answer again, a watch-only process
//! ([`RegistryOptions::replace_lagging_session`], synapse) whose connection is still lost
//! after a grace period (twice the connection timeout, at least 1 s, plus the reconnect
//! splay's bound, then a random share of the splay) also attempts a new session with the
//! backoff above; the first of the two to succeed wins, and a given-up session joins
//! [`SessionStatus::earlier_session_ids`]. A process whose session holds ephemeral nodes
//! (nerve) keeps its session: the nodes survive the outage with
//! it, and replacing sessions during a leader election would re-register a whole fleet.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::fleet::{self, Servers, ZkTls};
use super::{zk, RegistryError};

/// Registry-wide settings.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Requested ZooKeeper session timeout (the server may bound it; the granted one is logged).
    /// Default 10 s.
    pub session_timeout: Duration,
    /// Longest pause between two attempts to establish a session. Default 500 ms: the
    /// recovery target is "serving again within a second of ZooKeeper answering".
    pub max_backoff: Duration,
    /// Give up a session whose connection is still lost after a grace period for a new
    /// session, when the client library is slower to reconnect it than a new session is to
    /// establish. Right for a watch-only process (synapse: it only re-lists). Wrong for one
    /// whose session holds ephemeral nodes (nerve): the node survives a short outage with its
    /// session, and giving sessions up during a leader election would make every host of the
    /// fleet delete and re-create its nodes at once. Default false.
    pub replace_lagging_session: bool,
    /// Accept a read-only session from a server cut off from its quorum (ZooKeeper's
    /// `readonlymode.enabled`), so a minority partition still serves reads; the client moves
    /// to a read-write server when it finds one. Right for a watch-only process (synapse),
    /// never for one that writes (nerve). Default false.
    pub read_only: bool,
    /// Upper bound of the random delay that spreads a fleet's steps after a fleet-wide event
    /// (new sessions after an expiry or outage, re-lists after a reconnection), itself at most
    /// half the session timeout; and of the client library's delay before it reconnects a live
    /// session (also at most half the session timeout since the server last answered; see
    /// the fleet notes of [`crate::registry`]);
    /// zero: no spreading. Default zero here; the agents' default
    /// is [`crate::config::DEFAULT_SPLAY`].
    pub splay: Duration,
    /// Follow the ensemble's dynamic configuration (`/zookeeper/config`): new sessions use
    /// the client addresses it lists. Default false here; the agents default to true.
    pub follow_reconfig: bool,
    /// Reach every server over TLS with these CA and client certificate. Default none.
    pub tls: Option<ZkTls>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            session_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_millis(500),
            replace_lagging_session: false,
            read_only: false,
            splay: Duration::ZERO,
            follow_reconfig: false,
            tls: None,
        }
    }
}

/// First pause after a failed attempt to establish a session.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How many ids of ended sessions a [`Session`] remembers (for [`SessionStatus::earlier_session_ids`]).
const SESSION_HISTORY: usize = 16;
/// While no session can be established, a warning is logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// How long one connection may stay silent: per server during an attempt (TCP connect plus
/// session handshake), and on an established connection before the client drops it and tries
/// another server. A quarter of the session timeout, within 500 ms..2 s, and never more than
/// the library's own default of 2/5 of the session timeout. With it, the client pings every
/// 3/8 of it.
pub(crate) fn connection_timeout(session_timeout: Duration) -> Duration {
    (session_timeout / 4)
        .clamp(Duration::from_millis(500), Duration::from_secs(2))
        .min(session_timeout * 2 / 5)
}

/// Doubling backoff with jitter: each pause is drawn from `[d/2, d]`, `d` doubling from
/// `first` up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        let first = first.min(max);
        Backoff {
            first,
            max,
            next: first,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The pause to take now; the one after is longer, up to the maximum.
    pub(crate) fn pause(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        self.draws += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.draws);
        // 53 random bits as a fraction in [0, 1).
        let fraction = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
        d / 2 + (d / 2).mul_f64(fraction)
    }

    /// Back to the first pause (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Credentials a session authenticates with (ZooKeeper `addauth`), e.g. scheme `digest`,
/// credentials `user:password`. Part of the session's identity: one session per (connect
/// string, auth).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ZkAuth {
    /// The scheme, e.g. `digest`.
    pub scheme: String,
    /// The scheme's credentials, e.g. `user:password` for `digest`.
    pub credentials: String,
}

impl fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials (logs, `{:?}` of configs).
        let user = self.credentials.split(':').next().unwrap_or_default();
        write!(f, "ZkAuth({}:{user}:***)", self.scheme)
    }
}

/// What identifies a session: connect string and credentials.
type SessionKey = (String, Option<ZkAuth>);

/// A live session, exported to be resumed by another process (an upgrade's successor): the
/// ensemble, who it authenticates as, and the session id and password. Whoever holds the
/// password can take the session (and its ephemeral nodes) over: it is never logged (the
/// `Debug` output shows the id only) and travels only over the owner-only upgrade socket.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSecret {
    /// The connect string (`host:port,...[/chroot]`).
    pub connect: String,
    /// `scheme:user` of the session's `ZkAuth` (no credentials), to match it to the same
    /// session of the successor's config.
    pub auth: Option<String>,
    /// The session id.
    pub id: i64,
    password: Vec<u8>,
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSecret")
            .field("connect", &self.connect)
            .field("auth", &self.auth)
            .field("id", &format_args!("{:#x}", self.id))
            .finish_non_exhaustive()
    }
}

/// `scheme:user` of an auth (what [`SessionSecret::auth`] holds).
fn auth_name(auth: Option<&ZkAuth>) -> Option<String> {
    auth.map(|a| {
        format!(
            "{}:{}",
            a.scheme,
            a.credentials.split(':').next().unwrap_or_default()
        )
    })
}

/// One ZooKeeper session per ensemble (and auth) per process.
#[derive(Debug)]
pub struct Registry {
    options: RegistryOptions,
    cancel: CancellationToken,
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    /// Sessions to resume instead of creating new ones (see [`Registry::resume`]).
    resumes: Mutex<Vec<SessionSecret>>,
}

impl Registry {
    /// A registry whose sessions stop when `cancel` fires.
    pub fn new(options: RegistryOptions, cancel: CancellationToken) -> Self {
        if options.tls.is_some() {
            fleet::install_crypto_provider();
        }
        Registry {
            options,
            cancel,
            sessions: Mutex::new(HashMap::new()),
            resumes: Mutex::new(Vec::new()),
        }
    }

    /// Sessions a predecessor handed over: each is resumed (its ephemeral nodes kept) by the
    /// session of the same ensemble and auth when it starts, instead of a new session (one
    /// that cannot be resumed any more, expired meanwhile, is replaced by a new one, and its
    /// nodes are ours to clean up). Call before the sessions start.
    pub fn resume(&self, secrets: Vec<SessionSecret>) {
        self.resumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(secrets);
    }

    /// The live sessions, to hand to a successor. Only sessions connected right now are
    /// exported (a disconnected one may be expiring).
    pub fn export(&self) -> Vec<SessionSecret> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .iter()
            .filter_map(|((connect, auth), session)| {
                let status = session.status();
                let client = status.client.as_ref().filter(|_| status.connected)?;
                let info = client.session();
                Some(SessionSecret {
                    connect: connect.clone(),
                    auth: auth_name(auth.as_ref()),
                    id: info.id().0,
                    password: info.password().to_vec(),
                })
            })
            .collect()
    }

    /// Lets go of every session without closing it (for a successor to resume), then stops
    /// them: their ephemeral nodes stay until the successor resumes the session, or it
    /// expires. Waits (up to `timeout`) until every session's client is released.
    pub async fn detach(&self, timeout: Duration) {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in &sessions {
            if let Some(client) = &s.status().client {
                client.detach();
            }
        }
        self.cancel.cancel();
        let released = futures::future::join_all(sessions.iter().map(|s| {
            let mut status = s.subscribe();
            async move {
                let _ = status.wait_for(|st| st.client.is_none()).await;
            }
        }));
        if tokio::time::timeout(timeout, released).await.is_err() {
            warn!("a ZooKeeper session was not released in time");
        }
    }

    /// The session for a connect string (`host:port,...[/chroot]`), started on first use.
    pub fn session(&self, connect: &str) -> Arc<Session> {
        self.session_with_auth(connect, None)
    }

    /// The session for a connect string that authenticates with `auth`, started on first
    /// use. Sessions with different credentials are different sessions.
    pub fn session_with_auth(&self, connect: &str, auth: Option<&ZkAuth>) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry((connect.to_string(), auth.cloned()))
            .or_insert_with(|| {
                let resume = {
                    let mut resumes = self.resumes.lock().unwrap_or_else(|p| p.into_inner());
                    let name = auth_name(auth);
                    resumes
                        .iter()
                        .position(|r| r.connect == connect && r.auth == name)
                        .map(|i| resumes.swap_remove(i))
                };
                Session::start(
                    connect.to_string(),
                    auth.cloned(),
                    resume,
                    self.options.clone(),
                    self.cancel.clone(),
                )
            })
            .clone()
    }
}

/// The state of a session as seen by its users.
#[derive(Clone, Default)]
pub struct SessionStatus {
    pub(crate) client: Option<zk::Client>,
    /// Counts sessions: bumped each time a new session is established (at start and after
    /// each expiry). Nodes created under an older epoch belong to an earlier session.
    pub session_epoch: u64,
    /// Counts connections: bumped at each (re)connection, including to another server.
    pub connection_epoch: u64,
    /// True while connected.
    pub connected: bool,
    /// ZooKeeper session id, when there is a session.
    pub session_id: Option<i64>,
    /// The session timeout the server granted (it bounds the requested one by its
    /// `minSessionTimeout`/`maxSessionTimeout`), when there is a session.
    pub session_timeout: Option<Duration>,
    /// Ids of this process's earlier sessions on this ensemble, oldest first, at most 16. The
    /// client gave them up, but the ensemble may still hold one for up to a session timeout
    /// (e.g. when the client declared it expired while no server answered): nodes they own
    /// are ours to delete.
    pub earlier_session_ids: Vec<i64>,
}

impl fmt::Debug for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStatus")
            .field("session_epoch", &self.session_epoch)
            .field("connection_epoch", &self.connection_epoch)
            .field("connected", &self.connected)
            .field("session_id", &self.session_id.map(|id| format!("{id:#x}")))
            .field("session_timeout", &self.session_timeout)
            .field("earlier_session_ids", &self.earlier_session_ids.len())
            .finish()
    }
}

/// A ZooKeeper session kept alive in the background.
#[derive(Debug)]
pub struct Session {
    connect: String,
    status: tokio_watch::Receiver<SessionStatus>,
    /// Bound of the random delay before a re-list after a reconnection (see
    /// [`RegistryOptions::splay`]).
    splay: Duration,
    /// Requests issued by the watches of this session (see [`Session::requests`]).
    requests: std::sync::atomic::AtomicU64,
}

impl Session {
    fn start(
        connect: String,
        auth: Option<ZkAuth>,
        resume: Option<SessionSecret>,
        options: RegistryOptions,
        cancel: CancellationToken,
    ) -> Arc<Session> {
        let (tx, rx) = tokio_watch::channel(SessionStatus::default());
        let span = tracing::info_span!("zk_session", zk.connect = %connect, zk.auth = ?auth);
        let splay = fleet::splay_bound(options.splay, options.session_timeout);
        tokio::spawn(run_session(connect.clone(), auth, resume, options, tx, cancel).instrument(span));
        Arc::new(Session {
            connect,
            status: rx,
            splay,
            requests: Default::default(),
        })
    }

    /// ZooKeeper requests issued so far by the watches of this session ([`crate::registry::watch()`]:
    /// listings, reads, exists checks; not the client library's pings and reconnections).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts `n` requests issued (see [`Session::requests`]).
    pub(crate) fn count_requests(&self, n: u64) {
        self.requests.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// A random delay for a step that every agent of a fleet takes after the same event
    /// (zero when spreading is off).
    pub(crate) fn splay_delay(&self) -> Duration {
        fleet::splay_delay(self.splay)
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> tokio_watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// A connected client, the status it belongs to and its session id.
    pub(crate) fn client(&self) -> Result<(zk::Client, SessionStatus, i64), RegistryError> {
        let status = self.status();
        match (&status.client, status.connected, status.session_id) {
            (Some(c), true, Some(id)) => Ok((c.clone(), status, id)),
            _ => Err(RegistryError::NotConnected {
                connect: self.connect.clone(),
            }),
        }
    }
}

async fn run_session(
    connect: String,
    auth: Option<ZkAuth>,
    resume: Option<SessionSecret>,
    options: RegistryOptions,
    tx: tokio_watch::Sender<SessionStatus>,
    cancel: CancellationToken,
) {
    let mut link = Link::new(connect, &options);
    link.auth = auth;
    let mut replacement = None;
    if let Some(secret) = resume {
        match link.resume(&secret, &cancel).await {
            Some(client) => replacement = Some(client),
            None if cancel.is_cancelled() => return,
            None => {
                // Its nodes, if the ensemble still holds it, are ours to replace.
                tx.send_modify(|s| s.earlier_session_ids.push(secret.id));
            }
        }
    }
    loop {
        let (client, waited) = match replacement.take() {
            Some(client) => (client, None),
            None => match link.establish(&cancel).await {
                Some(established) => established,
                None => return,
            },
        };
        install(&tx, &client, &options, waited);
        let following = link.follow(&client, &cancel);
        let served = link.serve(client, &tx, &cancel).await;
        following.cancel();
        link.resumed = true;
        match served {
            Served::Cancelled => return,
            Served::Ended => {}
            Served::Replaced(client) => replacement = Some(client),
        }
    }
}

/// How a session's client is obtained and kept.
struct Link {
    session_timeout: Duration,
    connection_timeout: Duration,
    max_backoff: Duration,
    /// How long a lost connection is left to the client library to restore before we look
    /// for a new session ourselves; `None`: never (see
    /// [`RegistryOptions::replace_lagging_session`]).
    grace: Option<Duration>,
    /// Credentials sent with every new session.
    auth: Option<ZkAuth>,
    /// The servers new sessions connect to (the configured ones, or what the ensemble's
    /// dynamic configuration says).
    servers: Servers,
    follow_reconfig: bool,
    read_only: bool,
    tls: Option<ZkTls>,
    /// Bound of the random delays that spread a fleet (see [`RegistryOptions::splay`]).
    splay: Duration,
    /// Bound of the client library's random delay before reconnecting a live session
    /// ([`fleet::reconnect_bound`]).
    reconnect_splay: Duration,
    /// False until the first session ended: the first is sought at once, later ones after a
    /// random delay (their end is likely shared by the fleet).
    resumed: bool,
}

/// What [`Link::serve`] acts on next.
enum Event {
    Cancelled,
    State(zk::SessionState),
    AttemptDue,
}

/// Whether a session state is a live connection.
fn is_connected(state: zk::SessionState) -> bool {
    matches!(
        state,
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
    )
}

/// How [`Link::serve`] ended.
enum Served {
    Cancelled,
    /// The session expired or was closed: establish a new one.
    Ended,
    /// The connection was lost and a new session is established: use it.
    Replaced(zk::Client),
}

impl Link {
    fn new(connect: String, options: &RegistryOptions) -> Link {
        let connection_timeout = connection_timeout(options.session_timeout);
        Link {
            session_timeout: options.session_timeout,
            connection_timeout,
            max_backoff: options.max_backoff,
            // The library's own spreading (the reconnect splay) is not lagging.
            grace: options.replace_lagging_session.then(|| {
                (connection_timeout * 2).max(Duration::from_secs(1))
                    + fleet::reconnect_bound(options.splay, options.session_timeout)
            }),
            auth: None,
            servers: Servers::new(connect),
            follow_reconfig: options.follow_reconfig,
            read_only: options.read_only,
            tls: options.tls.clone(),
            splay: fleet::splay_bound(options.splay, options.session_timeout),
            reconnect_splay: fleet::reconnect_bound(options.splay, options.session_timeout),
            resumed: false,
        }
    }

    /// One attempt at a new session: every server once, each with the connection timeout.
    async fn attempt(&self) -> Result<zk::Client, zk::Error> {
        let mut connector = zk::Client::connector();
        if let Some(a) = &self.auth {
            connector = connector.with_auth(&a.scheme, a.credentials.as_bytes());
        }
        connector = connector
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(self.connection_timeout)
            .with_readonly(self.read_only)
            .with_reconnect_delay(self.reconnect_splay)
            .with_fail_eagerly();
        self.open(connector).await
    }

    /// Connects with `connector` to the current servers, over TLS when configured.
    async fn open(&self, connector: zk::Connector) -> Result<zk::Client, zk::Error> {
        let servers = self.servers.current();
        match &self.tls {
            Some(tls) => connector.with_tls(tls.options()?).secure_connect(&servers).await,
            None => connector.connect(&servers).await,
        }
    }

    /// Follows the ensemble's dynamic configuration on `client`'s session (when configured)
    /// until the returned token is cancelled.
    fn follow(&self, client: &zk::Client, cancel: &CancellationToken) -> CancellationToken {
        let token = cancel.child_token();
        // Over TLS the configuration's client ports are the plaintext ones: nothing to follow.
        if self.follow_reconfig && self.tls.is_none() {
            tokio::spawn(
                fleet::follow_config(client.clone(), self.servers.clone(), token.clone()).in_current_span(),
            );
        }
        token
    }

    /// The pause after a failed attempt: the backoff's, or with a splay a random one up to
    /// it, so a fleet waiting for the same ensemble does not come back in the same instant.
    fn pause(&self, backoff: &mut Backoff) -> Duration {
        let pause = backoff.pause();
        if self.splay.is_zero() {
            pause
        } else {
            MIN_BACKOFF / 2 + fleet::splay_delay(self.splay)
        }
    }

    /// Resumes a predecessor's session: attempts until it is re-established, or the ensemble
    /// says it expired, or its timeout has passed (`None`: a new session is needed).
    async fn resume(&self, secret: &SessionSecret, cancel: &CancellationToken) -> Option<zk::Client> {
        let id = format!("{:#x}", secret.id);
        let deadline = Instant::now() + self.session_timeout;
        let mut backoff = Backoff::new(MIN_BACKOFF, self.max_backoff);
        loop {
            let info = zk::SessionInfo::from_parts(zk::SessionId(secret.id), secret.password.clone());
            let mut connector = zk::Client::connector().with_session(info);
            if let Some(a) = &self.auth {
                connector = connector.with_auth(&a.scheme, a.credentials.as_bytes());
            }
            let attempt = self.open(
                connector
                    .with_session_timeout(self.session_timeout)
                    .with_connection_timeout(self.connection_timeout)
                    .with_reconnect_delay(self.reconnect_splay)
                    .with_fail_eagerly(),
            );
            let result = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = attempt => r,
            };
            match result {
                Ok(client) => {
                    info!(
                        session_id = id,
                        "resumed the ZooKeeper session handed over by the previous process"
                    );
                    return Some(client);
                }
                Err(zk::Error::SessionExpired) => {
                    warn!(
                        session_id = id,
                        "the handed-over ZooKeeper session has expired; establishing a new one"
                    );
                    return None;
                }
                Err(e) if Instant::now() >= deadline => {
                    warn!(session_id = id, error = %e, "cannot resume the handed-over ZooKeeper session within its timeout; establishing a new one");
                    return None;
                }
                Err(e) => {
                    let pause = backoff.pause();
                    warn!(session_id = id, error = %e, retry_in = ?pause, "cannot resume the handed-over ZooKeeper session yet");
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Attempts a new session until one is established (with how long that took) or `cancel`
    /// fires (`None`).
    async fn establish(&self, cancel: &CancellationToken) -> Option<(zk::Client, Option<Duration>)> {
        let mut backoff = Backoff::new(MIN_BACKOFF, self.max_backoff);
        let started = Instant::now();
        let mut last_warning: Option<Instant> = None;
        if self.resumed {
            let delay = fleet::splay_delay(self.splay);
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        for attempts in 1u64.. {
            let result = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = self.attempt() => r,
            };
            let err = match result {
                Ok(client) => return Some((client, (attempts > 1).then(|| started.elapsed()))),
                Err(err) => err,
            };
            let pause = self.pause(&mut backoff);
            // One warning when the trouble starts, then a reminder now and then, not one per
            // attempt (there is one a second).
            if last_warning.is_none_or(|t| t.elapsed() >= FAILURE_LOG_INTERVAL) {
                warn!(error = %err, attempts, failing_for = ?started.elapsed(), retry_in = ?pause, "cannot establish ZooKeeper session");
                last_warning = Some(Instant::now());
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        None
    }

    /// Follows the session of `client` (installed in `tx`) until it ends, is replaced or
    /// `cancel` fires.
    ///
    /// After a disconnection the client library reconnects the session on its own, but with
    /// delays that double up to a good part of the session timeout: once the servers answer
    /// again it may wait seconds more. So when the connection is still lost after
    /// [`grace`](Link::grace), we also attempt a new session (with the usual short backoff);
    /// if one is established before the old one reconnects, it replaces it. The old session
    /// is given up: it goes into the earlier-session ids, whose nodes nerve deletes, and the
    /// old client closes it if it ever reconnects.
    async fn serve(
        &self,
        client: zk::Client,
        tx: &tokio_watch::Sender<SessionStatus>,
        cancel: &CancellationToken,
    ) -> Served {
        let session_id = client.session_id().0;
        let mut states = client.state_watcher();
        // `state_watcher()` marks the current state as seen: a change between the session's
        // establishment (published as connected by `install`) and now would never be
        // reported by `changed()` (and after a terminal state `changed()` never returns), so
        // the state found now is handled first, as if it had just changed.
        let mut pending = Some(states.peek_state()).filter(|s| !is_connected(*s));
        drop(client);
        let mut rescue = Backoff::new(MIN_BACKOFF, self.max_backoff);
        let mut disconnected: Option<Instant> = None;
        let mut next_attempt: Option<tokio::time::Instant> = None;
        loop {
            let event = match pending.take() {
                Some(state) => Event::State(state),
                None => {
                    let attempt_due = async {
                        match next_attempt {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => Event::Cancelled,
                        state = states.changed() => Event::State(state),
                        _ = attempt_due => Event::AttemptDue,
                    }
                }
            };
            match event {
                Event::Cancelled => {
                    // Dropping the last client closes the session, which removes our
                    // ephemeral nodes if anything is left.
                    tx.send_modify(|s| {
                        s.client = None;
                        s.connected = false;
                    });
                    return Served::Cancelled;
                }
                Event::State(state) => match state {
                    zk::SessionState::Disconnected => {
                        warn!("disconnected from ZooKeeper; keeping the session, reconnecting");
                        tx.send_modify(|s| s.connected = false);
                        disconnected = Some(Instant::now());
                        next_attempt = self.grace.map(|grace| {
                            tokio::time::Instant::now() + grace + fleet::splay_delay(self.splay)
                        });
                        rescue.reset();
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        info!(after = ?disconnected.take().map(|t| t.elapsed()), "reconnected to ZooKeeper");
                        next_attempt = None;
                        tx.send_modify(|s| {
                            s.connected = true;
                            s.connection_epoch += 1;
                        });
                    }
                    zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                        warn!(
                            ?state,
                            session_id = format!("{session_id:#x}"),
                            "ZooKeeper session ended; establishing a new one"
                        );
                        end_session(tx, session_id);
                        return Served::Ended;
                    }
                },
                Event::AttemptDue => {
                    let result = tokio::select! {
                        _ = cancel.cancelled() => continue,
                        r = self.attempt() => r,
                    };
                    let state = states.peek_state();
                    match result {
                        Ok(_) if is_connected(state) => {
                            // The old session came back meanwhile: keep it, drop the new one.
                            next_attempt = None;
                        }
                        Ok(replacement) => {
                            warn!(
                                session_id = format!("{session_id:#x}"),
                                disconnected_for = ?disconnected.map(|t| t.elapsed()),
                                "ZooKeeper answers again but our session has not reconnected yet; giving it up for a new session"
                            );
                            end_session(tx, session_id);
                            return Served::Replaced(replacement);
                        }
                        Err(_) => {
                            next_attempt = Some(tokio::time::Instant::now() + self.pause(&mut rescue));
                        }
                    }
                }
            }
        }
    }
}

/// Publishes a newly established session.
fn install(
    tx: &tokio_watch::Sender<SessionStatus>,
    client: &zk::Client,
    options: &RegistryOptions,
    waited: Option<Duration>,
) {
    let session_id = client.session_id().0;
    let granted = client.session_timeout();
    if granted == options.session_timeout {
        info!(session_id = format!("{session_id:#x}"), timeout = ?granted, ?waited, "ZooKeeper session established");
    } else {
        warn!(
            session_id = format!("{session_id:#x}"),
            requested = ?options.session_timeout,
            granted = ?granted,
            ?waited,
            "ZooKeeper session established with another timeout than requested (the server bounds it by its minSessionTimeout/maxSessionTimeout)"
        );
    }
    tx.send_modify(|s| {
        s.client = Some(client.clone());
        s.session_epoch += 1;
        s.connection_epoch += 1;
        s.connected = true;
        s.session_id = Some(session_id);
        s.session_timeout = Some(granted);
    });
}

/// Withdraws a session that ended or was given up, remembering its id.
fn end_session(tx: &tokio_watch::Sender<SessionStatus>, session_id: i64) {
    tx.send_modify(|s| {
        s.client = None;
        s.connected = false;
        s.session_id = None;
        s.session_timeout = None;
        s.earlier_session_ids.push(session_id);
        let excess = s.earlier_session_ids.len().saturating_sub(SESSION_HISTORY);
        s.earlier_session_ids.drain(..excess);
    });
}

#[cfg(test)]
mod tests;
