//! nerve's configuration: raw serde mirror of the file (`deny_unknown_fields`) → validated
//! [`Config`]. Every problem is reported at once with its key path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{self as cc, ConfigError, LogConfig, Problems};
pub use common::registry::ZkAuth;
use serde::Deserialize;

mod checks;
mod hooks;

pub use checks::{
    authority, CheckConfig, CheckKind, ExecCheck, HttpCheck, HttpMethod, StatusSet, TlsConfig,
    DEFAULT_TIMEOUT, MIN_INTERVAL,
};
use checks::{CheckDefaults, RawCheck};
pub use hooks::{Drained, Hook, Hooks};

/// A validated nerve configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This host's name in ZooKeeper (`name` in payloads, prefix of node names), unless a
    /// service sets its own. Default: the machine's hostname. See [`check_instance_id`].
    pub instance_id: String,
    /// Requested ZooKeeper session timeout. Default 10 s.
    pub zk_session_timeout: Duration,
    /// How sessions treat a shared ensemble (`zookeeper.splay`, `follow_reconfig`, `tls`;
    /// `read_only` is refused: nerve writes).
    pub zk_session: cc::ZkSessionConfig,
    /// Admin server address. Default `127.0.0.1:3421`.
    pub admin_listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// Pause after deregistering on SIGTERM, before exiting, so routers notice. Default 0 s.
    pub drain_time: Duration,
    /// Where the operator's state (maintenance API: disable, force, weight) is kept across
    /// restarts, replaced atomically at each change. Default none (kept in memory only).
    pub state_file: Option<PathBuf>,
    /// The services to check and register.
    pub services: Vec<ServiceConfig>,
    /// `upgrade_socket`: the unix socket a successor started with `--takeover` connects to,
    /// to resume this process's ZooKeeper sessions (its nodes never disappear; see
    /// `docs/upgrades.md`). Default none: no handoff.
    pub upgrade_socket: Option<PathBuf>,
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
    /// Where the desired state is written: the service-level `zk_hosts`/`zk_path` (a
    /// ZooKeeper reporter, first) and every entry of `reporters`. At least one.
    pub reporters: Vec<Reporter>,
    /// Writes per second allowed to each reporter, on average (token bucket). Default 1.
    pub max_writes_per_second: f64,
    /// Writes allowed at once after a quiet period (the bucket's size). Default 5.
    pub write_burst: u32,
    /// Relative weight written in the payload, `0..=255` (go-synapse reads it as a `u8` and
    /// drops a node with a larger one). Default 255 (go-nerve's full weight), always written.
    pub weight: u8,
    /// On check failure or disable, keep the node with `"available": false` and an
    /// `unavailable_reason` instead of deleting it (go-nerve), so readers can tell "down"
    /// from "gone". Default false.
    pub expose_unavailable: bool,
    /// Weight ramp after the service turns healthy. Default none (full weight at once).
    pub warmup: Option<Warmup>,
    /// Commands run around availability changes, and the minimum disable time. Default
    /// none.
    pub hooks: Hooks,
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
    // The `_` keys are read by `cc::RawShared`, not here: named so that an unknown key's
    // message lists every key, in file order.
    #[serde(default, rename = "zookeeper")]
    _zookeeper: cc::SharedKey,
    #[serde(default, rename = "admin")]
    _admin: cc::SharedKey,
    #[serde(default, rename = "log")]
    _log: cc::SharedKey,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    drain_time: Option<Duration>,
    state_file: Option<PathBuf>,
    services: Vec<serde_json::Value>,
    #[serde(default, rename = "upgrade_socket")]
    _upgrade_socket: cc::SharedKey,
}

common::zookeeper_section! {
    /// nerve's `zookeeper:` section: the session keys plus the credentials nerve registers
    /// with.
    struct RawZookeeper {
        auth: Option<RawAuth>,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    scheme: String,
    credentials: String,
}

/// After a service turns healthy, its weight goes from 1 to the configured weight in `steps`
/// equal steps over `duration` (`steps + 1` writes at most). Each step is taken only once
/// due and once the stability command (if any) passed; the ramp counts from the moment the
/// service becomes available (after its `pre_available` hook), and a service disabled or
/// held back mid-ramp starts again from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// Time from healthy to full weight.
    pub duration: Duration,
    /// Number of increases, 1..=100. Default 5.
    pub steps: u32,
    /// Run (argv, no shell) before each increase; a failure (non-zero exit, or longer than
    /// `stability_timeout`) restarts the ramp from weight 1. Default none.
    pub stability_command: Option<ExecCheck>,
    /// Time allowed to the stability command. Default 5 s.
    pub stability_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarmup {
    #[serde(default, deserialize_with = "cc::opt_duration")]
    duration: Option<Duration>,
    steps: Option<u32>,
    stability_command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    stability_timeout: Option<Duration>,
}

/// One place a service's desired state is written to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reporter {
    /// A ZooKeeper node.
    Zookeeper(ZkReporter),
    /// A JSON file, replaced atomically (temporary file + rename) at each change.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A log line at each change.
    Console,
}

impl Reporter {
    /// `zookeeper`, `file` or `console`.
    pub fn kind(&self) -> &'static str {
        match self {
            Reporter::Zookeeper(_) => "zookeeper",
            Reporter::File { .. } => "file",
            Reporter::Console => "console",
        }
    }

    /// Where it writes, for logs and the status.
    pub fn target(&self) -> String {
        match self {
            Reporter::Zookeeper(z) => format!("{}{}", z.zk_hosts, z.zk_path),
            Reporter::File { path } => path.display().to_string(),
            Reporter::Console => "log".to_string(),
        }
    }
}

/// A ZooKeeper reporter.
#[derive(Debug, Clone, PartialEq)]
pub struct ZkReporter {
    /// ZooKeeper connect string, `host:port,...[/chroot]`.
    pub zk_hosts: String,
    /// Parent path of the nodes, e.g. `/services/web`.
    pub zk_path: String,
    /// Sequential (default) or plain ephemeral node.
    pub node_type: NodeType,
    /// airbnb path encoding: the payload is also base64-encoded into the node name (which
    /// then changes with the payload: the new node is created before the old one goes).
    /// Default false.
    pub use_path_encoding: bool,
    /// Credentials of the session that registers (`zk_auth`, else the service's, else
    /// `zookeeper.auth`); when set, nodes and created parents get ACLs creator-all +
    /// world-read. Default none (world-all).
    pub zk_auth: Option<ZkAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReporter {
    #[serde(rename = "type")]
    kind: String,
    zk_hosts: Option<cc::ZkHosts>,
    zk_path: Option<String>,
    node_type: Option<NodeType>,
    use_path_encoding: Option<bool>,
    zk_auth: Option<RawAuth>,
    path: Option<PathBuf>,
}

/// How a service's node is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeType {
    /// `<instance_id>_<service>_<seq>` (airbnb nerve, go-nerve). The default.
    EphemeralSequential,
    /// `<instance_id>_<service>`, one fixed name.
    Ephemeral,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    instance_id: Option<String>,
    host: String,
    port: u16,
    zk_hosts: Option<cc::ZkHosts>,
    zk_path: Option<String>,
    #[serde(default)]
    reporters: Vec<serde_json::Value>,
    max_writes_per_second: Option<f64>,
    write_burst: Option<u32>,
    warmup: Option<RawWarmup>,
    hooks: Option<hooks::RawHooks>,
    weight: Option<u32>,
    #[serde(default)]
    expose_unavailable: bool,
    node_type: Option<NodeType>,
    #[serde(default)]
    use_path_encoding: bool,
    zk_auth: Option<RawAuth>,
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
        let raw_shared = cc::RawShared::<RawZookeeper>::take(p, &doc);
        let shared = raw_shared.validate(
            p,
            cc::SharedDefaults {
                admin_listen: common::admin::NERVE_DEFAULT,
                read_only: None,
            },
        );
        let raw: RawConfig = p.take("", doc)?;
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
        let default_auth = raw_shared
            .zookeeper
            .auth
            .and_then(|a| validate_auth("zookeeper.auth", a, p));
        if raw.services.is_empty() {
            p.push("services", "at least one service is required");
        }
        // (index in the file, service): a service that did not deserialize is skipped, and
        // later messages must still name the right index.
        let mut services: Vec<(usize, ServiceConfig)> = Vec::new();
        for (i, value) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            if let Some(s) = p.take::<RawService>(&at, value) {
                services.push((
                    i,
                    validate_service(&at, s, &instance_id, default_auth.as_ref(), p),
                ));
            }
        }
        // The checks across services look names and locations up in indexes: a scan of the
        // earlier services made validation quadratic (20,000 services: seconds).
        let mut names: HashSet<&str> = HashSet::new();
        // (instance_id, ZooKeeper location) → the first service registering it there.
        let mut registered: HashMap<(&str, ZkLocation), (usize, &str)> = HashMap::new();
        for (i, s) in &services {
            if !names.insert(s.name.as_str()) {
                p.push(
                    format!("services[{i}].name"),
                    format!("duplicate service name {:?}", s.name),
                );
            }
            // go-synapse names HAProxy servers after the payload's `name`: two with one name
            // on one path make HAProxy refuse its whole config.
            let here: Vec<ZkLocation> = s
                .reporters
                .iter()
                .filter_map(|r| match r {
                    Reporter::Zookeeper(z) => Some(cc::zk_location_key(&z.zk_hosts, &z.zk_path)),
                    _ => None,
                })
                .collect();
            let earlier = here
                .iter()
                .filter_map(|l| registered.get(&(s.instance_id.as_str(), l.clone())))
                .min_by_key(|(j, _)| *j);
            if let Some((j, other)) = earlier {
                p.push(
                    format!("services[{i}].instance_id"),
                    format!(
                        "services[{j}] ({other}) already registers instance_id {:?} on the same \
                         ZooKeeper path: give one of them its own instance_id",
                        s.instance_id
                    ),
                );
            }
            for l in here {
                registered
                    .entry((s.instance_id.as_str(), l))
                    .or_insert((*i, s.name.as_str()));
            }
        }
        let cc::SharedConfig {
            zk_session_timeout,
            zk_session,
            admin_listen,
            log,
            upgrade_socket,
        } = shared;
        Some(Config {
            instance_id,
            zk_session,
            zk_session_timeout,
            admin_listen,
            log,
            drain_time: raw.drain_time.unwrap_or(Duration::ZERO),
            state_file: raw.state_file,
            services: services.into_iter().map(|(_, s)| s).collect(),
            upgrade_socket,
        })
    }
}

/// Weight written when a service sets none: go-nerve's full weight, so a fleet mixing both
/// behind go-synapse or HAProxy splits evenly.
pub const DEFAULT_WEIGHT: u8 = 255;

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

fn validate_auth(at: &str, a: RawAuth, p: &mut Problems) -> Option<ZkAuth> {
    if a.scheme.is_empty() {
        p.push(format!("{at}.scheme"), "must not be empty (e.g. digest)");
        return None;
    }
    if a.scheme == "digest" && !a.credentials.contains(':') {
        p.push(
            format!("{at}.credentials"),
            "digest credentials are `user:password`",
        );
        return None;
    }
    Some(ZkAuth {
        scheme: a.scheme,
        credentials: a.credentials,
    })
}

fn validate_reporter(
    at: &str,
    r: RawReporter,
    zk_defaults: &ZkReporter,
    p: &mut Problems,
) -> Option<Reporter> {
    let misplaced: &[(&str, bool, &str)] = &[
        ("zk_hosts", r.zk_hosts.is_some(), "zookeeper"),
        ("zk_path", r.zk_path.is_some(), "zookeeper"),
        ("node_type", r.node_type.is_some(), "zookeeper"),
        ("use_path_encoding", r.use_path_encoding.is_some(), "zookeeper"),
        ("zk_auth", r.zk_auth.is_some(), "zookeeper"),
        ("path", r.path.is_some(), "file"),
    ];
    for (key, set, kind) in misplaced {
        if *set && r.kind != *kind {
            p.push(format!("{at}.{key}"), format!("only for type {kind}"));
        }
    }
    match r.kind.as_str() {
        "zookeeper" => {
            let (Some(hosts), Some(path)) = (r.zk_hosts, r.zk_path) else {
                p.push(at.to_string(), "a zookeeper reporter needs zk_hosts and zk_path");
                return None;
            };
            let zk_hosts = cc::zk_location(p, at, hosts, &path);
            let zk_auth = match r.zk_auth {
                Some(a) => validate_auth(&format!("{at}.zk_auth"), a, p),
                None => zk_defaults.zk_auth.clone(),
            };
            Some(Reporter::Zookeeper(ZkReporter {
                zk_hosts,
                zk_path: path,
                node_type: r.node_type.unwrap_or(zk_defaults.node_type),
                use_path_encoding: r.use_path_encoding.unwrap_or(zk_defaults.use_path_encoding),
                zk_auth,
            }))
        }
        "file" => match r.path {
            Some(path) if path.file_name().is_some() => Some(Reporter::File { path }),
            _ => {
                p.push(format!("{at}.path"), "a file reporter needs the path of a file");
                None
            }
        },
        "console" => Some(Reporter::Console),
        other => {
            p.push(
                format!("{at}.type"),
                format!("unknown reporter type {other:?}: zookeeper, file or console"),
            );
            None
        }
    }
}

fn validate_service(
    at: &str,
    s: RawService,
    default_id: &str,
    default_auth: Option<&ZkAuth>,
    p: &mut Problems,
) -> ServiceConfig {
    let zk_auth = match s.zk_auth {
        Some(a) => validate_auth(&format!("{at}.zk_auth"), a, p),
        None => default_auth.cloned(),
    };
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
    let zk_defaults = ZkReporter {
        zk_hosts: String::new(),
        zk_path: String::new(),
        node_type: s.node_type.unwrap_or(NodeType::EphemeralSequential),
        use_path_encoding: s.use_path_encoding,
        zk_auth,
    };
    let mut reporters = Vec::new();
    match (s.zk_hosts, s.zk_path) {
        (Some(hosts), Some(path)) => {
            let zk_hosts = cc::zk_location(p, at, hosts, &path);
            reporters.push(Reporter::Zookeeper(ZkReporter {
                zk_hosts,
                zk_path: path,
                ..zk_defaults.clone()
            }));
        }
        (Some(_), None) => p.push(format!("{at}.zk_path"), "zk_hosts needs zk_path"),
        (None, Some(_)) => p.push(format!("{at}.zk_hosts"), "zk_path needs zk_hosts"),
        (None, None) => {}
    }
    for (j, value) in s.reporters.into_iter().enumerate() {
        let rat = format!("{at}.reporters[{j}]");
        if let Some(r) = p.take::<RawReporter>(&rat, value) {
            if let Some(r) = validate_reporter(&rat, r, &zk_defaults, p) {
                reporters.push(r);
            }
        }
    }
    if reporters.is_empty() {
        p.push(
            format!("{at}.reporters"),
            "at least one reporter is required (zk_hosts + zk_path, or reporters: [...])",
        );
    }
    let zk_keys: Vec<_> = reporters
        .iter()
        .filter_map(|r| match r {
            Reporter::Zookeeper(z) => Some(cc::zk_location_key(&z.zk_hosts, &z.zk_path)),
            _ => None,
        })
        .collect();
    if zk_keys.iter().enumerate().any(|(n, k)| zk_keys[..n].contains(k)) {
        p.push(
            format!("{at}.reporters"),
            "two ZooKeeper reporters write to the same ensemble and path",
        );
    }
    let max_writes_per_second = s.max_writes_per_second.unwrap_or(1.0);
    if !(max_writes_per_second.is_finite() && max_writes_per_second >= 0.01) {
        p.push(format!("{at}.max_writes_per_second"), "must be at least 0.01");
    }
    let warmup = s.warmup.map(|w| {
        let steps = w.steps.unwrap_or(5);
        if !(1..=100).contains(&steps) {
            p.push(format!("{at}.warmup.steps"), "must be in 1..=100");
        }
        let duration = w.duration.unwrap_or_else(|| {
            p.push(format!("{at}.warmup.duration"), "required (e.g. 60s)");
            Duration::ZERO
        });
        let stability_command = w.stability_command.and_then(|argv| {
            if argv.first().is_none_or(String::is_empty) {
                p.push(format!("{at}.warmup.stability_command"), "needs a program");
                return None;
            }
            let mut env = BTreeMap::new();
            env.insert("NERVE_SERVICE".to_string(), s.name.clone());
            env.insert("NERVE_HOST".to_string(), s.host.clone());
            env.insert("NERVE_PORT".to_string(), s.port.to_string());
            Some(ExecCheck { argv, env })
        });
        Warmup {
            duration,
            steps: steps.clamp(1, 100),
            stability_command,
            stability_timeout: w.stability_timeout.unwrap_or(Duration::from_secs(5)),
        }
    });
    let hooks = s
        .hooks
        .map(|h| hooks::validate(&format!("{at}.hooks"), h, &s.name, &s.host, s.port, p))
        .unwrap_or_default();
    let write_burst = s.write_burst.unwrap_or(5);
    if write_burst == 0 {
        p.push(format!("{at}.write_burst"), "must be at least 1");
    }
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
        reporters,
        max_writes_per_second,
        write_burst: write_burst.max(1),
        weight: s
            .weight
            .map_or(DEFAULT_WEIGHT, |w| u8::try_from(w).unwrap_or(u8::MAX)),
        expose_unavailable: s.expose_unavailable,
        warmup,
        hooks,
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

/// Where nodes live: [`cc::zk_location_key`]'s (sorted servers, absolute path).
type ZkLocation = (Vec<String>, String);

#[cfg(test)]
mod tests;
