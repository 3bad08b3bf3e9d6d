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
    /// This host's name in ZooKeeper (`name` in payloads, prefix of node names), unless a
    /// service sets its own. Default: the machine's hostname. See [`check_instance_id`].
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
    /// The payload's `name` and the node-name prefix (`<instance_id>_<name>_<seq>`): the
    /// service's own `instance_id` key, else the top-level one. No two services of one
    /// config write the same `instance_id` to the same ensemble and path.
    pub instance_id: String,
    /// Address registered (and checked, unless a check overrides it).
    pub host: String,
    /// Port registered (and checked, unless a check overrides it).
    pub port: u16,
    /// ZooKeeper connect string, `host:port,...[/chroot]`.
    pub zk_hosts: String,
    /// Parent path of the nodes, e.g. `/services/web`.
    pub zk_path: String,
    /// Relative weight written in the payload, `0..=255` (go-synapse reads it as a `u8` and
    /// drops a node with a larger one). Default: none.
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
    zookeeper: cc::RawZookeeperConfig,
    admin: Option<RawAdminConfig>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    drain_time: Option<Duration>,
    services: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    instance_id: Option<String>,
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
        let instance_id = match raw.instance_id {
            Some(id) => {
                if let Err(e) = check_instance_id(&id) {
                    p.push("instance_id", e);
                }
                id
            }
            None => {
                let id = common::hostname();
                if let Err(e) = check_instance_id(&id) {
                    p.push(
                        "instance_id",
                        format!("{e} (it defaults to the hostname: set instance_id)"),
                    );
                }
                id
            }
        };
        if raw.services.is_empty() {
            p.push("services", "at least one service is required");
        }
        // (index in the file, service): a service that did not deserialize is skipped, and
        // later messages must still name the right index.
        let mut services: Vec<(usize, ServiceConfig)> = Vec::new();
        for (i, value) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            if let Some(s) = p.take::<RawService>(&at, value) {
                services.push((i, validate_service(&at, s, &instance_id, p)));
            }
        }
        for (n, (i, s)) in services.iter().enumerate() {
            let earlier = &services[..n];
            if earlier.iter().any(|(_, o)| o.name == s.name) {
                p.push(
                    format!("services[{i}].name"),
                    format!("duplicate service name {:?}", s.name),
                );
            }
            // go-synapse names HAProxy servers after the payload's `name`: two with one name
            // on one path make HAProxy refuse its whole config.
            let here = cc::zk_location_key(&s.zk_hosts, &s.zk_path);
            if let Some((j, o)) = earlier.iter().find(|(_, o)| {
                o.instance_id == s.instance_id && cc::zk_location_key(&o.zk_hosts, &o.zk_path) == here
            }) {
                p.push(
                    format!("services[{i}].instance_id"),
                    format!(
                        "services[{j}] ({}) already registers instance_id {:?} on the same \
                         ZooKeeper path: give one of them its own instance_id",
                        o.name, s.instance_id
                    ),
                );
            }
        }
        Some(Config {
            instance_id,
            zk_session_timeout: raw.zookeeper.session_timeout(),
            admin_listen,
            log: raw.log,
            drain_time: raw.drain_time.unwrap_or(Duration::ZERO),
            services: services.into_iter().map(|(_, s)| s).collect(),
        })
    }
}

/// Longest payload `name`, in bytes.
pub const MAX_INSTANCE_ID_BYTES: usize = cc::MAX_NAME_BYTES;

/// Checks an `instance_id` (top-level or per service). It becomes the payload's `name`
/// (go-synapse: the HAProxy server name) and the node-name prefix, so: 1 to
/// [`MAX_INSTANCE_ID_BYTES`] ASCII letters, digits, `-`, `_`, `.` (what ZooKeeper node
/// names and HAProxy server names both accept), and not starting with `base64_`, which
/// readers take for airbnb's path-encoded node names.
pub fn check_instance_id(id: &str) -> Result<(), String> {
    cc::check_name(id)?;
    if id.starts_with(PATH_ENCODED_PREFIX) {
        return Err(format!(
            "{id:?} must not start with {PATH_ENCODED_PREFIX:?}: readers would take the node \
             for a path-encoded one"
        ));
    }
    Ok(())
}

const PATH_ENCODED_PREFIX: &str = "base64_";

/// Records why `host` (at `key`) is not an address nerve can register or check.
fn check_host(p: &mut Problems, key: String, host: &str) {
    if let Err(e) = common::codec::check_host(host) {
        let quoted: String = host.chars().take(64).collect();
        p.push(key, format!("invalid host {quoted:?}: {e}"));
    }
}

fn validate_service(at: &str, s: RawService, default_id: &str, p: &mut Problems) -> ServiceConfig {
    cc::check_service_name(p, at, &s.name);
    let instance_id = match s.instance_id {
        Some(id) => {
            if let Err(e) = check_instance_id(&id) {
                p.push(format!("{at}.instance_id"), e);
            }
            id
        }
        None => default_id.to_string(),
    };
    check_host(p, format!("{at}.host"), &s.host);
    if s.port == 0 {
        p.push(format!("{at}.port"), "port must be in 1..=65535");
    }
    // airbnb synapse pastes it into the HAProxy `server` line: a newline would inject config.
    if let Some(o) = &s.haproxy_server_options {
        if o.chars().any(char::is_control) {
            p.push(
                format!("{at}.haproxy_server_options"),
                "must not contain control characters (newlines, tabs, ...)",
            );
        }
    }
    if let Some(w) = s.weight.filter(|w| *w > u32::from(u8::MAX)) {
        p.push(
            format!("{at}.weight"),
            format!("weight {w} is out of range 0..=255 (go-synapse drops nodes with a larger one)"),
        );
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
        instance_id,
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
            // What the check builds its request from: refused here, not at every round.
            if !uri.starts_with('/') || uri.parse::<hyper::Uri>().is_err() {
                p.push(
                    format!("{at}.uri"),
                    format!("{uri:?} must be a request path starting with '/'"),
                );
            }
            if let Some(h) = &c.host_header {
                if h.is_empty() || hyper::header::HeaderValue::from_str(h).is_err() {
                    p.push(
                        format!("{at}.host_header"),
                        format!("{h:?} is not a valid Host header value"),
                    );
                }
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
    if let Some(h) = &c.host {
        check_host(p, format!("{at}.host"), h);
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
