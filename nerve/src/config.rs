//! nerve's configuration: raw serde mirror of the file (`deny_unknown_fields`) → validated
//! [`Config`]. Every problem is reported at once with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use common::config::{self as cc, ConfigError, LogConfig, Problems, RawAdminConfig};
use serde::Deserialize;

mod checks;

pub use checks::{
    authority, CheckConfig, CheckKind, ExecCheck, HttpCheck, HttpMethod, StatusSet, TlsConfig,
    DEFAULT_TIMEOUT, MIN_INTERVAL,
};
use checks::{CheckDefaults, RawCheck};

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
    /// Default `interval` of its checks. Default 1 s.
    pub check_interval: Duration,
    /// Default `rise` of its checks. Default 2.
    pub rise: NonZeroU32,
    /// Default `fall` of its checks. Default 2.
    pub fall: NonZeroU32,
    /// Run independently; the service is up when every one is up (each after its own
    /// rise/fall). At least one; names unique.
    pub checks: Vec<CheckConfig>,
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
    if check_interval < MIN_INTERVAL {
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
    let defaults = CheckDefaults {
        service: &s.name,
        host: &s.host,
        port: s.port,
        interval: check_interval,
        rise,
        fall,
    };
    let mut checks: Vec<CheckConfig> = Vec::new();
    for (j, value) in s.checks.into_iter().enumerate() {
        let cat = format!("{at}.checks[{j}]");
        if let Some(c) = p.take::<RawCheck>(&cat, value) {
            let check = checks::validate_check(&cat, j, c, defaults, p);
            // The name is a metrics label and the key of the check in `/status`.
            if checks.iter().any(|o| o.name == check.name) {
                p.push(
                    format!("{cat}.name"),
                    format!("duplicate check name {:?} in this service", check.name),
                );
            }
            checks.push(check);
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
