//! Being gentle with an ensemble shared by a whole fleet: spreading what thousands of agents
//! would otherwise do in the same 100 ms, following the ensemble's membership, reaching it
//! over TLS.
//!
//! - **Splay**: after a fleet-wide event (a session ended, a connection restored), an agent's
//!   next ZooKeeper step waits a uniformly random delay in `[0, bound]`, `bound` = the
//!   configured splay, at most half the session timeout (so a session that survived the event
//!   is not put at risk by the wait). N agents then arrive spread over the bound instead of
//!   in the same instant (ZooKeeper's "death spiral", ZOOKEEPER-3242).
//! - **Reconnection splay**: a session that survives the event (a leader election, a restart
//!   of the whole ensemble: ZooKeeper keeps the sessions) is reconnected by the client
//!   library, not by us; the vendored library (`Connector::with_reconnect_delay`, a patch)
//!   waits a uniformly random delay in `[0, bound]` before its first attempt, `bound` = the
//!   splay, at most half the session timeout ([`reconnect_bound`]), and the library cuts
//!   that delay so that it never reaches past half the session timeout since the server was
//!   last heard from: the other half (5 s of a 10 s timeout) is left to reach a server before
//!   the ensemble may expire the session (with a live server: one round trip). While no
//!   server answers, the library then tries them all every `[b/2, b]`, `b` = the bound, at
//!   most a third of the session timeout (its own schedule's gaps reach 4.8 s at 10 s). After
//!   a restart of the whole ensemble the servers restart every session's timeout anyway.
//!   nerve, whose sessions hold its ephemeral nodes, uses the same rule: the delay leaves
//!   each session at least half its timeout to reconnect.
//! - **Dynamic reconfiguration**: the session follows `/zookeeper/config` (one read and a
//!   watch per session); when the ensemble's client addresses change, new sessions and
//!   synapse's rescue attempts use the new list, so servers can be replaced one by one without
//!   touching every host's config. A live session keeps the list it was created with (the
//!   client library cannot change it) until it ends.
//! - **TLS**: [`ZkTls`] (CA, optional client certificate and key), every server of the
//!   connect string reached over TLS (`secureClientPort`).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::zk;

/// A random fraction in `[0, 1)`.
fn fraction() -> f64 {
    // Each `RandomState` has fresh keys: enough randomness for spreading, no dependency.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The bound of the random delay after a fleet-wide event: the configured splay, at most half
/// the session timeout. Zero disables spreading.
pub(crate) fn splay_bound(splay: Duration, session_timeout: Duration) -> Duration {
    splay.min(session_timeout / 2)
}

/// The bound of the random delay before a live session's first reconnection attempt (see the
/// module's doc): the configured splay, at most half the session timeout (the library cuts
/// it further to half the timeout since the server last answered). Zero: the library
/// reconnects at once.
pub(crate) fn reconnect_bound(splay: Duration, session_timeout: Duration) -> Duration {
    splay.min(session_timeout / 2)
}

/// A delay drawn uniformly from `[0, bound]`.
pub(crate) fn splay_delay(bound: Duration) -> Duration {
    bound.mul_f64(fraction())
}

/// ZooKeeper over TLS: the CA that signs the servers' certificates and, when the servers ask
/// for one (`ssl.clientAuth`), the client's certificate and key. PEM, read at load.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkTls {
    ca_pem: String,
    identity: Option<(String, String)>,
}

impl fmt::Debug for ZkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ZkTls")
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ZkTls {
    /// Reads and checks the PEM files: `ca_file` must hold at least one certificate;
    /// `cert_file` and `key_file` go together (a certificate chain and its private key).
    pub fn from_files(ca_file: &Path, cert_and_key: Option<(&Path, &Path)>) -> Result<ZkTls, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
        };
        let ca_pem = read("CA file", ca_file)?;
        let identity = match cert_and_key {
            Some((cert, key)) => Some((read("certificate file", cert)?, read("key file", key)?)),
            None => None,
        };
        let tls = ZkTls { ca_pem, identity };
        tls.options().map_err(|e| format!("unusable TLS material: {e}"))?;
        Ok(tls)
    }

    /// The client library's options.
    pub(crate) fn options(&self) -> Result<zk::TlsOptions, zk::Error> {
        let options = zk::TlsOptions::new().with_pem_ca(&self.ca_pem)?;
        match &self.identity {
            Some((cert, key)) => options.with_pem_identity(cert, key),
            None => Ok(options),
        }
    }
}

/// rustls needs one process-wide crypto provider when several are compiled in (the client
/// library's default features bring aws-lc-rs beside our ring); ours is ring.
pub(crate) fn install_crypto_provider() {
    // An error means one is installed already: fine, whichever it is.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client addresses of an ensemble's dynamic configuration (the data of
/// `/zookeeper/config`: `server.<id>=<host>:<quorum>:<election>[:<role>];[<addr>:]<port>`
/// lines and a `version=` line), in the order given. `None` when it names no server or a
/// server without a client port (a static `clientPort`): then there is nothing to follow.
/// A wildcard client address (`0.0.0.0`, `[::]`) stands for the server's quorum host.
pub(crate) fn client_hosts(config: &str) -> Option<Vec<String>> {
    let mut hosts = Vec::new();
    for line in config.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("server.") else {
            continue;
        };
        let (_, spec) = rest.split_once('=')?;
        let (quorum, client) = spec.split_once(';')?;
        let quorum_host = match quorum.strip_prefix('[') {
            Some(v6) => format!("[{}]", v6.split_once(']')?.0),
            None => quorum.split(':').next()?.to_string(),
        };
        let client = client.trim();
        let (addr, port) = match client.rsplit_once(':') {
            Some((addr, port)) => (addr, port),
            None => ("", client),
        };
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        let host = match addr {
            "" | "0.0.0.0" | "[::]" | "[0:0:0:0:0:0:0:0]" => quorum_host,
            a => a.to_string(),
        };
        if host.is_empty() {
            return None;
        }
        hosts.push(format!("{host}:{port}"));
    }
    (!hosts.is_empty()).then_some(hosts)
}

/// `hosts` joined as a connect string, with the chroot of `original` (if any).
pub(crate) fn with_chroot(original: &str, hosts: &[String]) -> String {
    let chroot = original.find('/').map_or("", |i| &original[i..]);
    format!("{}{chroot}", hosts.join(","))
}

/// The connect string new sessions use: the configured one until the ensemble's dynamic
/// configuration says otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Servers {
    configured: String,
    current: Arc<Mutex<String>>,
}

impl Servers {
    pub(crate) fn new(configured: String) -> Servers {
        Servers {
            current: Arc::new(Mutex::new(configured.clone())),
            configured,
        }
    }

    /// The connect string to use for the next session.
    pub(crate) fn current(&self) -> String {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adopts the client addresses of a dynamic configuration; true if they changed.
    fn adopt(&self, hosts: &[String]) -> bool {
        let next = with_chroot(&self.configured, hosts);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *current == next {
            return false;
        }
        info!(from = %current, to = %next, "ZooKeeper ensemble membership changed (dynamic reconfiguration); new sessions use the new servers");
        *current = next;
        true
    }
}

/// Follows `/zookeeper/config` on `client`'s session until `cancel` fires or the session
/// ends: one read with a watch, then one per change.
pub(crate) async fn follow_config(client: zk::Client, servers: Servers, cancel: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            r = client.get_and_watch_config() => r,
        };
        let watch = match read {
            Ok((data, _, watch)) => {
                failures = 0;
                let text = String::from_utf8_lossy(&data);
                match client_hosts(&text) {
                    Some(hosts) => {
                        servers.adopt(&hosts);
                    }
                    None => debug!("the ensemble's dynamic configuration names no client addresses; keeping the configured servers"),
                }
                watch
            }
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed) => return,
            Err(err) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %err, "cannot read the ensemble's dynamic configuration; retrying");
                }
                let pause = Duration::from_millis(500) * failures.min(20);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = watch.changed() => e,
        };
        if event.event_type == zk::EventType::Session {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hosts_of_a_dynamic_config() {
        let config = "server.1=10.0.0.1:2888:3888:participant;0.0.0.0:2181\n\
                      server.2=10.0.0.2:2888:3888:participant;10.1.0.2:2182\n\
                      server.3=zk3.example:2888:3888:observer;2183\n\
                      version=100000003\n";
        assert_eq!(
            client_hosts(config),
            Some(vec![
                "10.0.0.1:2181".to_string(),
                "10.1.0.2:2182".to_string(),
                "zk3.example:2183".to_string()
            ])
        );
        // A static clientPort (no client part): nothing to follow.
        assert_eq!(client_hosts("server.1=10.0.0.1:2888:3888\nversion=1\n"), None);
        assert_eq!(client_hosts(""), None);
        assert_eq!(client_hosts("server.1=h:1:2;0\n"), None);
        assert_eq!(
            client_hosts("server.1=[::1]:2888:3888;[::]:2181\n"),
            Some(vec!["[::1]:2181".to_string()])
        );
    }

    #[test]
    fn chroot_is_kept() {
        let hosts = ["a:1".to_string(), "b:2".to_string()];
        assert_eq!(with_chroot("x:1,y:2/apps/s", &hosts), "a:1,b:2/apps/s");
        assert_eq!(with_chroot("x:1", &hosts), "a:1,b:2");
        let servers = Servers::new("x:1/c".into());
        assert!(servers.adopt(&hosts));
        assert!(!servers.adopt(&hosts));
        assert_eq!(servers.current(), "a:1,b:2/c");
    }

    #[test]
    fn splay_is_bounded_by_half_the_session_timeout_and_spread() {
        let s = Duration::from_secs;
        assert_eq!(splay_bound(s(5), s(10)), s(5));
        assert_eq!(splay_bound(s(30), s(10)), s(5));
        assert_eq!(splay_bound(Duration::ZERO, s(10)), Duration::ZERO);
        assert_eq!(splay_delay(Duration::ZERO), Duration::ZERO);
        assert_eq!(reconnect_bound(s(5), s(30)), s(5));
        assert_eq!(reconnect_bound(s(5), s(8)), s(4));
        assert_eq!(reconnect_bound(Duration::ZERO, s(9)), Duration::ZERO);
        let delays: Vec<Duration> = (0..200).map(|_| splay_delay(s(2))).collect();
        assert!(delays.iter().all(|d| *d <= s(2)));
        let low = delays.iter().filter(|d| **d < s(1)).count();
        assert!((60..=140).contains(&low), "uniform-ish: {low} of 200 below half");
    }
}
