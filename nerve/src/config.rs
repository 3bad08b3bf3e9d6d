//! nerve's configuration: raw serde mirror of the file (`deny_unknown_fields`) → validated
//! [`Config`]. Every problem is reported at once with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use common::config::{self as cc, ConfigError, LogConfig, Problems, RawAdminConfig};
use serde::Deserialize;

/// A validated nerve configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This host's name in ZooKeeper (`name` in payloads, prefix of node names).
    /// Default: the machine's hostname.
    pub instance_id: String,
    /// Requested ZooKeeper session timeout. Default 10 s.
    pub zk_session_timeout: Duration,
    /// Admin server address. Default `127.0.0.1:3421`.
    pub admin_listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// Pause after deregistering on SIGTERM, before exiting, so routers notice. Default 0 s.
    pub drain_time: Duration,
    /// The services to check and register.
    pub services: Vec<ServiceConfig>,
}

/// One service instance on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name within this config; also part of the node name.
    pub name: String,
    /// Address registered (and checked, unless a check overrides it).
    pub host: String,
    /// Port registered (and checked, unless a check overrides it).
    pub port: u16,
    /// ZooKeeper connect string, `host:port,...[/chroot]`.
    pub zk_hosts: String,
    /// Parent path of the nodes, e.g. `/services/web`.
    pub zk_path: String,
    /// Relative weight written in the payload. Default: none.
    pub weight: Option<u32>,
    /// Labels written in the payload.
    pub labels: BTreeMap<String, String>,
    /// `haproxy_server_options` written in the payload, for airbnb synapse readers.
    pub haproxy_server_options: Option<String>,
    /// Time between two check rounds. Default 1 s.
    pub check_interval: Duration,
    /// Consecutive successful rounds before the service is up (also at start). Default 2.
    pub rise: NonZeroU32,
    /// Consecutive failed rounds before the service is down. Default 2.
    pub fall: NonZeroU32,
    /// All must pass for a round to succeed. At least one.
    pub checks: Vec<CheckConfig>,
}

/// One health check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Host to check (default: the service's).
    pub host: String,
    /// Port to check (default: the service's).
    pub port: u16,
    /// Time allowed for the whole check. Default 1 s.
    pub timeout: Duration,
    /// What to check.
    pub kind: CheckKind,
}

/// The kind of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// TCP connect succeeds.
    Tcp,
    /// HTTP GET answers with a status in `expect_status`.
    Http {
        /// Request path. Default `/health`.
        uri: String,
        /// `Host` header. Default: the checked host.
        host_header: Option<String>,
        /// Accepted statuses, inclusive. Default 200–399.
        expect_status: (u16, u16),
    },
}

impl CheckKind {
    /// Short name for logs and metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance_id: Option<String>,
    #[serde(default)]
    zookeeper: RawZk,
    admin: Option<RawAdminConfig>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    drain_time: Option<Duration>,
    services: Vec<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZk {
    #[serde(default, deserialize_with = "cc::opt_duration")]
    session_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    host: String,
    port: u16,
    zk_hosts: cc::ZkHosts,
    zk_path: String,
    weight: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    haproxy_server_options: Option<String>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    check_interval: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    checks: Vec<serde_json::Value>,
}

/// A flat struct rather than a tagged enum, so that serde reports the key path of a bad
/// field inside a check (tagged enums buffer their content and lose it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: String,
    host: Option<String>,
    port: Option<u16>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    timeout: Option<Duration>,
    uri: Option<String>,
    host_header: Option<String>,
    expect_status: Option<serde_json::Value>,
}

impl Config {
    /// Reads and validates `file` (YAML or JSON by extension).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        cc::load(file, Self::from_value)
    }

    fn from_value(doc: serde_json::Value, p: &mut Problems) -> Option<Config> {
        let raw: RawConfig = p.take("", doc)?;
        let admin_listen = cc::admin_listen(p, raw.admin, common::admin::NERVE_DEFAULT);
        let instance_id = raw.instance_id.unwrap_or_else(common::hostname);
        if instance_id.is_empty() || instance_id.contains(['/', ' ']) {
            p.push(
                "instance_id",
                format!("{instance_id:?} must be non-empty, without '/' or spaces"),
            );
        }
        if raw.services.is_empty() {
            p.push("services", "at least one service is required");
        }
        let mut services = Vec::new();
        for (i, value) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            if let Some(s) = p.take::<RawService>(&at, value) {
                services.push(validate_service(&at, s, p));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in services.iter().enumerate() {
            if !seen.insert(&s.name) {
                p.push(
                    format!("services[{i}].name"),
                    format!("duplicate service name {:?}", s.name),
                );
            }
        }
        Some(Config {
            instance_id,
            zk_session_timeout: raw.zookeeper.session_timeout.unwrap_or(Duration::from_secs(10)),
            admin_listen,
            log: raw.log,
            drain_time: raw.drain_time.unwrap_or(Duration::ZERO),
            services,
        })
    }
}

fn validate_service(at: &str, s: RawService, p: &mut Problems) -> ServiceConfig {
    cc::check_service_name(p, at, &s.name);
    if s.host.is_empty() || s.host.contains(char::is_whitespace) {
        p.push(format!("{at}.host"), format!("invalid host {:?}", s.host));
    }
    if s.port == 0 {
        p.push(format!("{at}.port"), "port must be in 1..=65535");
    }
    let zk_hosts = cc::zk_location(p, at, s.zk_hosts, &s.zk_path);
    let check_interval = s.check_interval.unwrap_or(Duration::from_secs(1));
    if check_interval < Duration::from_millis(10) {
        p.push(format!("{at}.check_interval"), "must be at least 10ms");
    }
    let count = |key: &str, v: Option<u32>, p: &mut Problems| {
        NonZeroU32::new(v.unwrap_or(2)).unwrap_or_else(|| {
            p.push(format!("{at}.{key}"), "must be at least 1");
            NonZeroU32::MIN
        })
    };
    let rise = count("rise", s.rise, p);
    let fall = count("fall", s.fall, p);
    if s.checks.is_empty() {
        p.push(format!("{at}.checks"), "at least one check is required");
    }
    let mut checks = Vec::new();
    for (j, value) in s.checks.into_iter().enumerate() {
        let cat = format!("{at}.checks[{j}]");
        if let Some(c) = p.take::<RawCheck>(&cat, value) {
            checks.push(validate_check(&cat, c, &s.host, s.port, p));
        }
    }
    ServiceConfig {
        name: s.name,
        host: s.host,
        port: s.port,
        zk_hosts,
        zk_path: s.zk_path,
        weight: s.weight,
        labels: s.labels,
        haproxy_server_options: s.haproxy_server_options,
        check_interval,
        rise,
        fall,
        checks,
    }
}

fn validate_check(at: &str, c: RawCheck, host: &str, port: u16, p: &mut Problems) -> CheckConfig {
    let kind = match c.kind.as_str() {
        "tcp" => {
            for (key, set) in [("uri", c.uri.is_some()), ("host_header", c.host_header.is_some())] {
                if set {
                    p.push(format!("{at}.{key}"), "only http checks take this key");
                }
            }
            if c.expect_status.is_some() {
                p.push(format!("{at}.expect_status"), "only http checks take this key");
            }
            CheckKind::Tcp
        }
        "http" => {
            let uri = c.uri.unwrap_or_else(|| "/health".to_string());
            if !uri.starts_with('/') {
                p.push(format!("{at}.uri"), format!("{uri:?} must start with '/'"));
            }
            let expect_status = match &c.expect_status {
                None => (200, 399),
                Some(v) => parse_status_range(v).unwrap_or_else(|e| {
                    p.push(format!("{at}.expect_status"), e);
                    (200, 399)
                }),
            };
            CheckKind::Http {
                uri,
                host_header: c.host_header,
                expect_status,
            }
        }
        other => {
            p.push(
                format!("{at}.type"),
                format!("unknown check type {other:?}: expected tcp or http"),
            );
            CheckKind::Tcp
        }
    };
    let timeout = c.timeout.unwrap_or(Duration::from_secs(1));
    if timeout.is_zero() {
        p.push(format!("{at}.timeout"), "must be more than 0");
    }
    if c.port == Some(0) {
        p.push(format!("{at}.port"), "port must be in 1..=65535");
    }
    CheckConfig {
        host: c.host.unwrap_or_else(|| host.to_string()),
        port: c.port.unwrap_or(port),
        timeout,
        kind,
    }
}

/// `200`, `"200"` or `"200-299"`.
fn parse_status_range(v: &serde_json::Value) -> Result<(u16, u16), String> {
    let text = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "expected a status or a range like \"200-299\", got {other}"
            ))
        }
    };
    let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    match (parse(lo), parse(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!(
            "invalid status range {text:?}: expected statuses in 100..=599 like \"200-299\""
        )),
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
