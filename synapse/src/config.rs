//! synapse's configuration: raw serde mirror of the file (`deny_unknown_fields`) →
//! validated [`Config`]. Every problem is reported at once with its key path.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use common::config::{self as cc, ConfigError, LogConfig, Problems, RawAdminConfig};
use serde::Deserialize;

/// A validated synapse configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requested ZooKeeper session timeout. Default 10 s.
    pub zk_session_timeout: Duration,
    /// Admin server address. Default `127.0.0.1:3422`.
    pub admin_listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// On SIGTERM, how long in-flight connections may take to finish. Default 10 s.
    pub drain_timeout: Duration,
    /// The services to route.
    pub services: Vec<ServiceConfig>,
}

/// How a service is proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP: bytes are copied both ways.
    Tcp,
}

/// One routed service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name (metrics label, admin API key).
    pub name: String,
    /// ZooKeeper connect string, `host:port,...[/chroot]`.
    pub zk_hosts: String,
    /// Path whose children are the backends, e.g. `/services/web`.
    pub zk_path: String,
    /// Local listen address. A bare port means `127.0.0.1:<port>`.
    pub listen: SocketAddr,
    /// Proxy mode. Default `tcp`.
    pub mode: Mode,
    /// Time allowed to connect to one backend. Default 1 s.
    pub connect_timeout: Duration,
    /// Backends tried per connection before giving up (bounded by the backend count).
    /// Default 3.
    pub connect_attempts: NonZeroU32,
    /// When the path empties, keep routing to the previous backends. Default true.
    pub use_previous_backends: bool,
    /// How long a connection accepted before the first full listing from ZooKeeper waits
    /// for it; past that it is closed (and counted). Zero: closed at once. Default 5 s, or
    /// the top-level `first_sync_timeout`.
    pub first_sync_timeout: Duration,
    /// A proxied connection on which no byte moves either way for this long is closed, both
    /// sides. Zero: never. Default 1 h, or the top-level `idle_timeout`.
    pub idle_timeout: Duration,
    /// TCP keepalive on client and backend sockets: idle time before the first probe (then
    /// probes every 10 s, up to 6). Zero: off. Default 60 s, or the top-level
    /// `tcp_keepalive`.
    pub tcp_keepalive: Duration,
}

/// Default of [`ServiceConfig::first_sync_timeout`].
pub const DEFAULT_FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`ServiceConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default of [`ServiceConfig::tcp_keepalive`].
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Connection settings set at the top level for every service; each service may override
/// them.
#[derive(Debug, Default, Clone, Copy)]
struct RawConnDefaults {
    first_sync_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    tcp_keepalive: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    zookeeper: cc::RawZookeeperConfig,
    admin: Option<RawAdminConfig>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    first_sync_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    tcp_keepalive: Option<Duration>,
    services: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    zk_hosts: cc::ZkHosts,
    zk_path: String,
    listen: serde_json::Value,
    mode: Option<String>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    connect_timeout: Option<Duration>,
    connect_attempts: Option<u32>,
    use_previous_backends: Option<bool>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    first_sync_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    tcp_keepalive: Option<Duration>,
}

impl Config {
    /// Reads and validates `file` (YAML or JSON by extension).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        cc::load(file, Self::from_value)
    }

    fn from_value(doc: serde_json::Value, p: &mut Problems) -> Option<Config> {
        let raw: RawConfig = p.take("", doc)?;
        let admin_listen = cc::admin_listen(p, raw.admin, common::admin::SYNAPSE_DEFAULT);
        if raw.services.is_empty() {
            p.push("services", "at least one service is required");
        }
        let conn = RawConnDefaults {
            first_sync_timeout: raw.first_sync_timeout,
            idle_timeout: raw.idle_timeout,
            tcp_keepalive: raw.tcp_keepalive,
        };
        let mut services: Vec<ServiceConfig> = Vec::new();
        for (i, value) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            let Some(s) = p.take::<RawService>(&at, value) else {
                continue;
            };
            let s = validate_service(&at, s, &conn, p);
            if services.iter().any(|o| o.name == s.name) {
                p.push(
                    format!("{at}.name"),
                    format!("duplicate service name {:?}", s.name),
                );
            }
            // What binding would refuse at start, wildcards included; a port 0 listen was
            // already refused.
            if s.listen.port() != 0 {
                if cc::listen_conflict(s.listen, admin_listen) {
                    p.push(
                        format!("{at}.listen"),
                        format!("{} overlaps the admin listen address {admin_listen}", s.listen),
                    );
                }
                if let Some(o) = services.iter().find(|o| cc::listen_conflict(o.listen, s.listen)) {
                    p.push(
                        format!("{at}.listen"),
                        format!("{} overlaps {} of service {:?}", s.listen, o.listen, o.name),
                    );
                }
            }
            services.push(s);
        }
        Some(Config {
            zk_session_timeout: raw.zookeeper.session_timeout(),
            admin_listen,
            log: raw.log,
            drain_timeout: raw.drain_timeout.unwrap_or(Duration::from_secs(10)),
            services,
        })
    }
}

fn validate_service(at: &str, s: RawService, conn: &RawConnDefaults, p: &mut Problems) -> ServiceConfig {
    cc::check_service_name(p, at, &s.name);
    let zk_hosts = cc::zk_location(p, at, s.zk_hosts, &s.zk_path);
    let listen_text = match &s.listen {
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let listen = cc::parse_listen(&listen_text).unwrap_or_else(|e| {
        p.push(format!("{at}.listen"), e);
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let mode = match s.mode.as_deref() {
        None | Some("tcp") => Mode::Tcp,
        Some(other) => {
            p.push(
                format!("{at}.mode"),
                format!("unsupported mode {other:?}: expected tcp"),
            );
            Mode::Tcp
        }
    };
    let connect_timeout = s.connect_timeout.unwrap_or(Duration::from_secs(1));
    if connect_timeout.is_zero() {
        p.push(format!("{at}.connect_timeout"), "must be more than 0");
    }
    let connect_attempts = NonZeroU32::new(s.connect_attempts.unwrap_or(3)).unwrap_or_else(|| {
        p.push(format!("{at}.connect_attempts"), "must be at least 1");
        NonZeroU32::MIN
    });
    ServiceConfig {
        name: s.name,
        zk_hosts,
        zk_path: s.zk_path,
        listen,
        mode,
        connect_timeout,
        connect_attempts,
        use_previous_backends: s.use_previous_backends.unwrap_or(true),
        first_sync_timeout: s
            .first_sync_timeout
            .or(conn.first_sync_timeout)
            .unwrap_or(DEFAULT_FIRST_SYNC_TIMEOUT),
        idle_timeout: s
            .idle_timeout
            .or(conn.idle_timeout)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT),
        tcp_keepalive: s
            .tcp_keepalive
            .or(conn.tcp_keepalive)
            .unwrap_or(DEFAULT_TCP_KEEPALIVE),
    }
}

impl common::cli::AgentConfig for Config {
    fn load(file: &Path) -> Result<Self, ConfigError> {
        Config::load(file)
    }

    fn log(&self) -> &LogConfig {
        &self.log
    }

    fn service_count(&self) -> usize {
        self.services.len()
    }
}

#[cfg(test)]
mod tests;
