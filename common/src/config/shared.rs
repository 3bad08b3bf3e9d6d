//! The sections both agents read the same way: `zookeeper` (the session keys), `admin`,
//! `log` and `upgrade_socket`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{check_log_level, opt_duration, parse_listen, Problems};
use crate::registry::{RegistryOptions, ZkTls};

/// Shortest accepted `zookeeper.session_timeout` (1 s).
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest accepted `zookeeper.session_timeout` (5 min). ZooKeeper servers cap the timeout
/// at 20 ticks anyway (40 s by default); beyond the client's 32-bit milliseconds a larger
/// value would silently wrap.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(300);

/// Default `zookeeper.session_timeout` (10 s).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin listen address from an optional `admin:` section, or `default` (refused like a
/// service listen address: see [`parse_listen`]).
fn admin_listen(p: &mut Problems, admin: Option<&RawAdminConfig>, default: SocketAddr) -> SocketAddr {
    match admin.and_then(|a| a.listen.as_deref()) {
        None => default,
        Some(text) => parse_listen(text).unwrap_or_else(|e| {
            p.push("admin.listen", e);
            default
        }),
    }
}

/// `upgrade_socket`: an absolute path that fits a unix socket address (at most 107 bytes).
fn upgrade_socket(text: &str, p: &mut Problems) -> Option<PathBuf> {
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        p.push("upgrade_socket", "must be an absolute path");
        None
    } else if text.len() > 107 {
        p.push(
            "upgrade_socket",
            "longer than a unix socket path may be (107 bytes)",
        );
        None
    } else {
        Some(path)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log:` section, shared by both agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `synapse=debug,info`, checked at load
    /// time by [`check_log_level`]. Default `info`; `RUST_LOG` wins when set.
    #[serde(default = "default_level", deserialize_with = "log_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_level() -> String {
    "info".to_string()
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    check_log_level(&level).map_err(serde::de::Error::custom)?;
    Ok(level)
}

/// Declares an agent's raw `zookeeper:` section: the session keys both agents read
/// (`session_timeout`, `splay`, `read_only`, `follow_reconfig`, `tls`, validated by
/// [`RawShared::validate`]) plus the agent's own keys, written between `session_timeout` and
/// `splay`. One declaration of the session keys, and the section keeps serde's
/// `deny_unknown_fields` messages (which list every key the agent accepts, in file order).
#[macro_export]
macro_rules! zookeeper_section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            /// Requested session timeout, in [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`].
            ///
            /// [`MIN_SESSION_TIMEOUT`]: $crate::config::MIN_SESSION_TIMEOUT
            /// [`MAX_SESSION_TIMEOUT`]: $crate::config::MAX_SESSION_TIMEOUT
            #[serde(default)]
            pub session_timeout: $crate::config::SessionTimeout,
            $($(#[$fmeta])* $fvis $field: $ty,)*
            /// See [`ZkSessionConfig::splay`](`$crate::config::ZkSessionConfig::splay`).
            #[serde(default)]
            pub splay: $crate::config::OptDuration,
            /// See [`ZkSessionConfig::read_only`](`$crate::config::ZkSessionConfig::read_only`).
            pub read_only: Option<bool>,
            /// See [`ZkSessionConfig::follow_reconfig`](`$crate::config::ZkSessionConfig::follow_reconfig`).
            pub follow_reconfig: Option<bool>,
            /// See [`ZkSessionConfig::tls`](`$crate::config::ZkSessionConfig::tls`).
            pub tls: Option<$crate::config::RawZkTls>,
        }

        impl $crate::config::ZkSection for $name {
            fn session_keys(&self) -> $crate::config::ZkSessionKeys<'_> {
                $crate::config::ZkSessionKeys {
                    session_timeout: self.session_timeout.0,
                    splay: self.splay.0,
                    read_only: self.read_only,
                    follow_reconfig: self.follow_reconfig,
                    tls: self.tls.as_ref(),
                }
            }
        }
    };
}

zookeeper_section! {
    /// synapse's `zookeeper:` section: the session keys only.
    pub struct RawZookeeperConfig {}
}

/// A raw `zookeeper:` section (declared with [`zookeeper_section!`](crate::zookeeper_section)).
pub trait ZkSection {
    /// Its session keys, as written.
    fn session_keys(&self) -> ZkSessionKeys<'_>;
}

/// The session keys of a raw `zookeeper:` section, as written (`None`: not set).
#[derive(Debug, Clone, Copy)]
pub struct ZkSessionKeys<'a> {
    /// `session_timeout`, already in range.
    pub session_timeout: Option<Duration>,
    /// `splay`.
    pub splay: Option<Duration>,
    /// `read_only`.
    pub read_only: Option<bool>,
    /// `follow_reconfig`.
    pub follow_reconfig: Option<bool>,
    /// `tls`.
    pub tls: Option<&'a RawZkTls>,
}

/// A `zookeeper.session_timeout` value: a duration in
/// [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`], or not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTimeout(pub Option<Duration>);

impl<'de> Deserialize<'de> for SessionTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        session_timeout(d).map(SessionTimeout)
    }
}

/// An optional duration key (see [`opt_duration`]), for structs declared by a macro, where
/// serde's `deserialize_with` path cannot name this crate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptDuration(pub Option<Duration>);

impl<'de> Deserialize<'de> for OptDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        opt_duration(d).map(OptDuration)
    }
}

/// The top-level keys both agents read the same way. An agent's own raw config names them
/// as [`SharedKey`]s (so that serde's unknown-key message lists every key of the file) and
/// [`RawShared::take`] reads them from the same document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared<Z> {
    /// `zookeeper:`, the agent's section type.
    #[serde(default)]
    pub zookeeper: Z,
    /// `admin:`.
    pub admin: Option<RawAdminConfig>,
    /// `log:`.
    #[serde(default)]
    pub log: LogConfig,
    /// `upgrade_socket`.
    pub upgrade_socket: Option<String>,
}

/// The names of [`RawShared`]'s keys.
pub const SHARED_KEYS: [&str; 4] = ["zookeeper", "admin", "log", "upgrade_socket"];

/// A shared top-level key in an agent's raw config: any value, read by [`RawShared`].
pub type SharedKey = serde::de::IgnoredAny;

/// The shared top-level keys, validated (each agent copies them into its config).
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `zookeeper.session_timeout`, default [`DEFAULT_SESSION_TIMEOUT`].
    pub zk_session_timeout: Duration,
    /// The other session keys of `zookeeper:`.
    pub zk_session: ZkSessionConfig,
    /// `admin.listen`, or the agent's default.
    pub admin_listen: SocketAddr,
    /// `log:`.
    pub log: LogConfig,
    /// `upgrade_socket`, if set and valid.
    pub upgrade_socket: Option<PathBuf>,
}

/// Each agent's defaults of the shared keys.
#[derive(Debug, Clone, Copy)]
pub struct SharedDefaults {
    /// `admin.listen`.
    pub admin_listen: SocketAddr,
    /// `zookeeper.read_only`; `None`: the agent writes and refuses `read_only: true`.
    pub read_only: Option<bool>,
}

impl<Z: ZkSection + DeserializeOwned + Default> RawShared<Z> {
    /// Reads the shared keys of `doc` (the whole config document, whose other keys are the
    /// agent's), recording their problems; their defaults where a section was refused, or
    /// when `doc` is not a mapping (the agent's own reading reports that).
    pub fn take(p: &mut Problems, doc: &Value) -> RawShared<Z> {
        let picked: serde_json::Map<String, Value> = doc
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| SHARED_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        p.take("", Value::Object(picked)).unwrap_or(RawShared {
            zookeeper: Z::default(),
            admin: None,
            log: LogConfig::default(),
            upgrade_socket: None,
        })
    }

    /// Validates the shared keys.
    pub fn validate(&self, p: &mut Problems, defaults: SharedDefaults) -> SharedConfig {
        let z = self.zookeeper.session_keys();
        SharedConfig {
            zk_session_timeout: z.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT),
            zk_session: ZkSessionConfig::validate(p, z, defaults.read_only),
            admin_listen: admin_listen(p, self.admin.as_ref(), defaults.admin_listen),
            log: self.log.clone(),
            upgrade_socket: self
                .upgrade_socket
                .as_deref()
                .and_then(|path| upgrade_socket(path, p)),
        }
    }
}

/// Default `zookeeper.splay` (5 s; the delay is also bounded by half the session timeout).
pub const DEFAULT_SPLAY: Duration = Duration::from_secs(5);

/// `zookeeper.tls`: reach the ensemble over TLS (its `secureClientPort`s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZkTls {
    /// PEM file of the CA(s) that sign the servers' certificates.
    pub ca_file: PathBuf,
    /// PEM certificate (chain) presented to servers that ask for one (`ssl.clientAuth`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// The `zookeeper:` keys that shape how an agent's sessions treat a shared ensemble, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkSessionConfig {
    /// Upper bound of the random delay before the steps a whole fleet takes after the same
    /// event (a new session after an expiry or outage, a re-list after a reconnection), at
    /// most half the session timeout; `0s` disables it. Default [`DEFAULT_SPLAY`].
    pub splay: Duration,
    /// Accept read-only sessions from servers cut off from their quorum, so membership
    /// reads go on in a minority partition. synapse only (default true); refused in nerve,
    /// which writes.
    pub read_only: bool,
    /// Follow the ensemble's dynamic configuration (`/zookeeper/config`): new sessions use
    /// the servers it lists. Default true (ignored with `tls`: the configuration lists
    /// plaintext ports).
    pub follow_reconfig: bool,
    /// TLS material, read at load. Default none (plaintext).
    pub tls: Option<ZkTls>,
}

impl ZkSessionConfig {
    /// Validates the session keys of `zookeeper:` (`read_only_default`: the agent's default;
    /// `None`: the agent writes and refuses `read_only: true`).
    pub fn validate(
        p: &mut Problems,
        keys: ZkSessionKeys<'_>,
        read_only_default: Option<bool>,
    ) -> ZkSessionConfig {
        let ZkSessionKeys {
            splay,
            read_only,
            follow_reconfig,
            tls,
            ..
        } = keys;
        let read_only = match (read_only_default, read_only) {
            (None, Some(true)) => {
                p.push(
                    "zookeeper.read_only",
                    "nerve writes its nodes: a read-only session cannot (only synapse may use read_only: true)",
                );
                false
            }
            (None, _) => false,
            (Some(default), r) => r.unwrap_or(default),
        };
        let tls = tls.and_then(|t| {
            let pair = match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                (Some(_), None) => {
                    p.push("zookeeper.tls.key_file", "required with cert_file");
                    return None;
                }
                (None, Some(_)) => {
                    p.push("zookeeper.tls.cert_file", "required with key_file");
                    return None;
                }
            };
            match ZkTls::from_files(&t.ca_file, pair) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    p.push("zookeeper.tls", e);
                    None
                }
            }
        });
        ZkSessionConfig {
            splay: splay.unwrap_or(DEFAULT_SPLAY),
            read_only,
            follow_reconfig: follow_reconfig.unwrap_or(true),
            tls,
        }
    }

    /// Sets these keys on registry options.
    pub fn apply(&self, options: &mut RegistryOptions) {
        options.splay = self.splay;
        options.read_only = self.read_only;
        options.follow_reconfig = self.follow_reconfig;
        options.tls = self.tls.clone();
    }
}

/// Deserializes an optional session timeout, refusing one outside
/// [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`].
pub fn session_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let t = opt_duration(d)?;
    match t {
        Some(t) if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&t) => Err(
            serde::de::Error::custom(format!("session timeout {t:?} is out of range: use 1s to 5m")),
        ),
        _ => Ok(t),
    }
}

/// `admin:` section, shared by both agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminConfig {
    /// Listen address of the admin HTTP server.
    pub listen: Option<String>,
}
