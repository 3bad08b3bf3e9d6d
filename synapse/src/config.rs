//! synapse's configuration: raw serde mirror of the file (`deny_unknown_fields`) →
//! validated [`Config`]. Every problem is reported at once with its key path.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use common::config::{self as cc, ConfigError, LogConfig, Problems, RawAdminConfig};
use serde::Deserialize;

use crate::balance::{HashOn, Policy, PolicyName, DEFAULT_WEIGHT};
use crate::outlier::OutlierConfig;

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
    /// Balancing policy (`balance`, plus `hash_on` for `hash`). Default `round_robin`.
    pub balance: Policy,
    /// Weight of a node whose payload has none (airbnb nerve writes none unless told to).
    /// Default 255 ([`DEFAULT_WEIGHT`]), or the top-level `default_weight`.
    pub default_weight: u32,
    /// Passive outlier ejection and panic threshold. Defaults: see [`OutlierConfig`]; the
    /// top-level `outlier` sets defaults key by key.
    pub outlier: OutlierConfig,
    /// How long connections to a backend that left the route table may go on; then they
    /// are closed. Zero: closed at once. Default 5 min, or the top-level `removal_grace`.
    pub removal_grace: Duration,
}

/// Default of [`ServiceConfig::removal_grace`].
pub const DEFAULT_REMOVAL_GRACE: Duration = Duration::from_secs(300);

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
    default_weight: Option<u32>,
    /// The top-level `outlier` block, validated, defaults filled in.
    outlier: OutlierConfig,
    removal_grace: Option<Duration>,
}

/// `outlier:`, at the top level (defaults) or in a service. Every key is optional.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutlier {
    consecutive_failures: Option<u32>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    base_ejection: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    max_ejection: Option<Duration>,
    max_ejected_percent: Option<u32>,
    panic_threshold_percent: Option<u32>,
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
    default_weight: Option<u32>,
    #[serde(default)]
    outlier: RawOutlier,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    removal_grace: Option<Duration>,
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
    balance: Option<String>,
    hash_on: Option<String>,
    default_weight: Option<u32>,
    #[serde(default)]
    outlier: RawOutlier,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    removal_grace: Option<Duration>,
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
            default_weight: raw.default_weight,
            outlier: outlier_config("outlier", raw.outlier, OutlierConfig::default(), p),
            removal_grace: raw.removal_grace,
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
        balance: balance(at, s.balance.as_deref(), s.hash_on.as_deref(), mode, p),
        default_weight: s.default_weight.or(conn.default_weight).unwrap_or(DEFAULT_WEIGHT),
        outlier: outlier_config(&format!("{at}.outlier"), s.outlier, conn.outlier, p),
        removal_grace: s
            .removal_grace
            .or(conn.removal_grace)
            .unwrap_or(DEFAULT_REMOVAL_GRACE),
    }
}

/// `balance` + `hash_on` → a policy; problems at `<at>.balance` / `<at>.hash_on`.
fn balance(at: &str, name: Option<&str>, hash_on: Option<&str>, mode: Mode, p: &mut Problems) -> Policy {
    let name = match name.map(str::parse::<PolicyName>).transpose() {
        Ok(n) => n,
        Err(e) => {
            p.push(format!("{at}.balance"), e);
            return Policy::default();
        }
    };
    let hash_on = match hash_on.map(str::parse::<HashOn>).transpose() {
        Ok(h) => h,
        Err(e) => {
            p.push(format!("{at}.hash_on"), e);
            return Policy::default();
        }
    };
    let policy = match Policy::from_config(name, hash_on) {
        Ok(policy) => policy,
        Err(e) => {
            p.push(format!("{at}.balance"), e);
            return Policy::default();
        }
    };
    if let Some(on) = policy.hash_on().filter(|on| on.needs_http()) {
        match mode {
            Mode::Tcp => p.push(
                format!("{at}.hash_on"),
                format!(
                    "hash_on {on} needs an HTTP request to read it from, and this service is \
                     mode tcp; in tcp mode only client_ip can be hashed"
                ),
            ),
        }
    }
    policy
}

/// Validates an `outlier:` block, its missing keys taken from `d` (already valid); problems
/// at `<at>.<key>`, only ever about keys of this block.
fn outlier_config(at: &str, raw: RawOutlier, d: OutlierConfig, p: &mut Problems) -> OutlierConfig {
    let mut c = OutlierConfig {
        consecutive_failures: raw.consecutive_failures.unwrap_or(d.consecutive_failures),
        base_ejection: raw.base_ejection.unwrap_or(d.base_ejection),
        max_ejection: raw.max_ejection.unwrap_or(d.max_ejection),
        max_ejected_percent: raw.max_ejected_percent.unwrap_or(d.max_ejected_percent),
        panic_threshold_percent: raw.panic_threshold_percent.unwrap_or(d.panic_threshold_percent),
    };
    if c.base_ejection.is_zero() {
        p.push(
            format!("{at}.base_ejection"),
            "must be more than 0 (to turn ejection off, set consecutive_failures: 0)",
        );
        c.base_ejection = d.base_ejection;
    }
    if c.max_ejection < c.base_ejection {
        let key = if raw.max_ejection.is_some() {
            "max_ejection"
        } else {
            "base_ejection"
        };
        p.push(
            format!("{at}.{key}"),
            format!(
                "max_ejection {:?} is less than base_ejection {:?}",
                c.max_ejection, c.base_ejection
            ),
        );
        c.max_ejection = c.base_ejection;
    }
    for (key, value) in [
        ("max_ejected_percent", &mut c.max_ejected_percent),
        ("panic_threshold_percent", &mut c.panic_threshold_percent),
    ] {
        if *value > 100 {
            p.push(
                format!("{at}.{key}"),
                format!("{value} is not a percentage (0 to 100)"),
            );
            *value = 100;
        }
    }
    c
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
