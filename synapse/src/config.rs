//! synapse's configuration: raw serde mirror of the file (`deny_unknown_fields`) →
//! validated [`Config`]. Every problem is reported at once with its key path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::codec::Node;
use common::config::{self as cc, ConfigError, LogConfig, Problems};
use serde::{Deserialize, Deserializer};

use crate::balance::{HashOn, Policy, PolicyName, DEFAULT_WEIGHT};
use crate::filter::{Condition, DefaultServer, LabelFilter, Locality, MinLocal};
use crate::outlier::OutlierConfig;
use crate::router::HostMatch;

/// A validated synapse configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Requested ZooKeeper session timeout. Default 10 s.
    pub zk_session_timeout: Duration,
    /// How sessions treat a shared ensemble (`zookeeper.splay`, `read_only` (default true
    /// here), `follow_reconfig`, `tls`).
    pub zk_session: cc::ZkSessionConfig,
    /// Admin server address. Default `127.0.0.1:3422`.
    pub admin_listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// On SIGTERM, and for a service a reload removes, how long in-flight connections may
    /// take to finish. Default 10 s.
    pub drain_timeout: Duration,
    /// The state cache (`state_file`, `state_file_ttl`). Default none.
    pub state_file: Option<StateFile>,
    /// Per-service JSON backend lists (`file_output`). Default none.
    pub file_output: Option<FileOutput>,
    /// Runtime threads: 1 (the default) runs synapse on one thread (tokio's current-thread
    /// runtime: the cheapest per request for a sidecar), N > 1 on N worker threads, 0 on one
    /// per CPU.
    pub worker_threads: usize,
    /// The services to route.
    pub services: Vec<ServiceConfig>,
    /// Shared HTTP listeners that route by Host and path prefix to `mode: http` services.
    pub http_listeners: Vec<HttpListenerConfig>,
    /// On every HTTP listener: how long a client connection may wait for the headers of its
    /// next request, idle keep-alive time included; then it is closed. Default 60 s.
    pub http_keepalive_timeout: Duration,
    /// `upgrade_socket`: the unix socket a successor started with `--takeover` connects to,
    /// to receive the listening sockets and route members (see `docs/upgrades.md`). Default
    /// none: no handoff.
    pub upgrade_socket: Option<std::path::PathBuf>,
}

/// A shared HTTP listener (`http_listeners[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpListenerConfig {
    /// Listen address. A bare port means `127.0.0.1:<port>`.
    pub listen: SocketAddr,
    /// Routes, as written (see [`crate::router`] for how one is chosen).
    pub routes: Vec<RouteConfig>,
    /// A client connection on which no byte moves for this long is closed. The top-level
    /// `idle_timeout` (default 1 h).
    pub idle_timeout: Duration,
    /// TCP keepalive on client sockets. The top-level `tcp_keepalive` (default 60 s).
    pub tcp_keepalive: Duration,
}

/// One route of a shared HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Host to match; None: any host.
    pub host: Option<HostMatch>,
    /// Path prefix to match (`""`: any path).
    pub path_prefix: String,
    /// The `mode: http` service that serves it.
    pub service: String,
    /// Protocol to the service's backends for requests of this route; None: the service's
    /// `backend_protocol`.
    pub backend_protocol: Option<BackendProtocol>,
}

/// `state_file` + `state_file_ttl`: where synapse keeps the backends it last knew from
/// ZooKeeper, to route from them at once when it starts while ZooKeeper is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    /// The file (written through a temporary file in the same directory, then renamed).
    pub path: PathBuf,
    /// A service's entry older than this (since ZooKeeper last confirmed it) is not used.
    /// Default 24 h.
    pub ttl: Duration,
}

/// `file_output`: one JSON file per service with its current backends, for clients without
/// a proxy (airbnb synapse's `file_output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    /// The directory (`output_directory`, alias `dir`), created at start if missing. Files:
    /// `<service>.json`; `*.json` files of services synapse does not route are removed.
    pub dir: PathBuf,
}

/// Default of [`StateFile::ttl`] (airbnb synapse's `state_file_ttl` default).
pub const DEFAULT_STATE_FILE_TTL: Duration = Duration::from_secs(24 * 3600);

/// How a service is proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP: bytes are copied both ways.
    Tcp,
    /// HTTP/1.1 (and HTTP/2 prior knowledge) from clients, pooled HTTP/1.1 to backends,
    /// balanced per request.
    Http,
}

/// The protocol a `mode: http` service speaks to its backends (`backend_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendProtocol {
    /// HTTP/1.1 over pooled keep-alive connections (the default).
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (h2c): a multiplexed connection per
    /// backend, every request balanced on its own. What gRPC backends need.
    H2c,
    /// The client's protocol: requests from HTTP/2 clients go over h2c, requests from
    /// HTTP/1.x clients (and upgrades, e.g. WebSocket) over HTTP/1.1.
    Auto,
}

impl BackendProtocol {
    /// The value for `s` (`http1`, `h2c`, `auto`); the error says what is accepted.
    pub fn parse(s: &str) -> Result<BackendProtocol, String> {
        match s {
            "http1" => Ok(BackendProtocol::Http1),
            "h2c" => Ok(BackendProtocol::H2c),
            "auto" => Ok(BackendProtocol::Auto),
            other => Err(format!(
                "unknown backend_protocol {other:?}: expected http1, h2c or auto"
            )),
        }
    }

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendProtocol::Http1 => "http1",
            BackendProtocol::H2c => "h2c",
            BackendProtocol::Auto => "auto",
        }
    }
}

/// HTTP settings of a `mode: http` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// From a request's arrival to its response headers, every try included; then 504.
    /// Zero: no limit. Default 60 s.
    pub request_timeout: Duration,
    /// From sending a request to one backend to its response headers; then the next backend
    /// is tried (when the request may be retried) or 504. Zero: only `request_timeout`
    /// applies. Default zero.
    pub try_timeout: Duration,
    /// Bounds retries (tries after the request reached a backend).
    pub retry_budget: RetryBudgetConfig,
    /// Idle keep-alive connections kept per backend. Zero: no reuse. Default 64.
    pub pool_max_idle: u32,
    /// An idle pooled connection unused for this long is closed. Default 30 s.
    pub pool_idle_timeout: Duration,
    /// Protocol spoken to the backends. Default `http1`.
    pub backend_protocol: BackendProtocol,
}

/// Retry budget (Finagle's): over any 10 s window, retries may add up to `percent` % of the
/// requests, plus `min_per_second` retries per second whatever the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per 100 requests. Default 20.
    pub percent: u32,
    /// Retries allowed per second on top of `percent`. Default 10.
    pub min_per_second: u32,
}

/// Default of [`HttpConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`HttpConfig::pool_max_idle`].
pub const DEFAULT_POOL_MAX_IDLE: u32 = 64;
/// Default of [`HttpConfig::pool_idle_timeout`].
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Config::http_keepalive_timeout`].
pub const DEFAULT_HTTP_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            try_timeout: Duration::ZERO,
            retry_budget: RetryBudgetConfig::default(),
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            backend_protocol: BackendProtocol::Http1,
        }
    }
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            percent: 20,
            min_per_second: 10,
        }
    }
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
    /// Local listen address. A bare port means `127.0.0.1:<port>`. None: an HTTP service
    /// reached only through `http_listeners`.
    pub listen: Option<SocketAddr>,
    /// Proxy mode. Default `tcp`.
    pub mode: Mode,
    /// HTTP settings (`mode: http`; defaults otherwise).
    pub http: HttpConfig,
    /// Time allowed to connect to one backend. Default 1 s.
    pub connect_timeout: Duration,
    /// Backends tried per connection (tcp) or per request (http, connect failures and
    /// retries together) before giving up, bounded by the backend count. Default 3.
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
    /// Trailing window of the ZooKeeper event debounce: a change that follows the last
    /// table build by less than this waits until no change came for this long (or
    /// `debounce_max`), then one table is built for all of them. A change after a quiet
    /// period is applied at once. Zero: every batch of queued changes is applied at once.
    /// Default 10 ms ([`DEFAULT_DEBOUNCE`]), or the top-level `debounce`.
    pub debounce: Duration,
    /// Longest a change waits in the debounce. Default 500 ms, or the top-level
    /// `debounce_max`.
    pub debounce_max: Duration,
    /// Nodes must pass every filter to be routed. Default none.
    pub label_filters: Vec<LabelFilter>,
    /// Prefer the backends of this host's zone. Default none, or the top-level `locality`.
    pub locality: Option<Locality>,
    /// Static backends used when ZooKeeper lists none (that pass the filters). Default none.
    pub default_servers: Vec<DefaultServer>,
    /// Always route to the default servers too, next to ZooKeeper's. Default false.
    pub keep_default_servers: bool,
    /// Most connections the listener serves at once; more wait in the listen backlog (they
    /// are not accepted, so not reset). None: no limit (the default, or the top-level
    /// `max_connections`).
    pub max_connections: Option<NonZeroU32>,
}

/// Default of [`ServiceConfig::debounce`]: short enough to add nothing to a lone change
/// (applied at once after a quiet period), long enough to fold a burst of registrations
/// into a handful of tables.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(10);
/// Default of [`ServiceConfig::debounce_max`].
pub const DEFAULT_DEBOUNCE_MAX: Duration = Duration::from_millis(500);

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
#[derive(Debug, Default, Clone)]
struct RawConnDefaults {
    first_sync_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    tcp_keepalive: Option<Duration>,
    default_weight: Option<u32>,
    /// The top-level `outlier` block, validated, defaults filled in.
    outlier: OutlierConfig,
    removal_grace: Option<Duration>,
    debounce: Option<Duration>,
    debounce_max: Option<Duration>,
    /// The top-level `locality`, validated.
    locality: Option<Locality>,
    max_connections: Option<NonZeroU32>,
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
    // The `_` keys are read by `cc::RawShared`, not here: named so that an unknown key's
    // message lists every key, in file order.
    #[serde(default, rename = "zookeeper")]
    _zookeeper: cc::SharedKey,
    #[serde(default, rename = "admin")]
    _admin: cc::SharedKey,
    #[serde(default, rename = "log")]
    _log: cc::SharedKey,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    drain_timeout: Option<Duration>,
    worker_threads: Option<u32>,
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
    #[serde(default, deserialize_with = "cc::opt_duration")]
    debounce: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    debounce_max: Option<Duration>,
    locality: Option<serde_json::Value>,
    max_connections: Option<u32>,
    #[serde(alias = "state_file_path")]
    state_file: Option<String>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    state_file_ttl: Option<Duration>,
    file_output: Option<RawFileOutput>,
    services: Vec<serde_json::Value>,
    #[serde(default)]
    http_listeners: Vec<serde_json::Value>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    http_keepalive_timeout: Option<Duration>,
    #[serde(default, rename = "upgrade_socket")]
    _upgrade_socket: cc::SharedKey,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpListener {
    listen: serde_json::Value,
    routes: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    service: String,
    backend_protocol: Option<String>,
}

/// `retry_budget:` of a service. Every key is optional.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryBudget {
    percent: Option<u32>,
    min_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileOutput {
    #[serde(alias = "dir")]
    output_directory: String,
}

/// `label_filters[]`: airbnb synapse's `{label, condition, value}`, plus `in` / `not-in`
/// with `values`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabelFilter {
    label: String,
    #[serde(alias = "op")]
    condition: String,
    #[serde(default, deserialize_with = "opt_label_value")]
    value: Option<String>,
    #[serde(default, deserialize_with = "opt_label_values")]
    values: Option<Vec<String>>,
}

/// `locality:` (a map; `false` in a service turns the top-level one off).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocality {
    label: Option<String>,
    #[serde(deserialize_with = "label_value")]
    value: String,
    min_local: Option<serde_json::Value>,
}

/// `default_servers[]`: airbnb synapse's `{name, host, port}`, plus what a node payload can
/// say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaultServer {
    name: Option<String>,
    host: String,
    port: u16,
    weight: Option<u32>,
    haproxy_server_options: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    zk_hosts: cc::ZkHosts,
    zk_path: String,
    listen: Option<serde_json::Value>,
    mode: Option<String>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    try_timeout: Option<Duration>,
    retry_budget: Option<RawRetryBudget>,
    pool_max_idle: Option<u32>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    pool_idle_timeout: Option<Duration>,
    backend_protocol: Option<String>,
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
    #[serde(default, deserialize_with = "cc::opt_duration")]
    debounce: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    debounce_max: Option<Duration>,
    #[serde(default)]
    label_filters: Vec<serde_json::Value>,
    locality: Option<serde_json::Value>,
    #[serde(default)]
    default_servers: Vec<serde_json::Value>,
    keep_default_servers: Option<bool>,
    max_connections: Option<u32>,
}

/// A label value as the codec reads one: a string, or the JSON text of another scalar.
fn label_text(v: serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Ok(v.to_string()),
        other => Err(format!("expected a string, found {other}")),
    }
}

fn label_value<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    label_text(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn opt_label_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    label_value(d).map(Some)
}

fn opt_label_values<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Vec::<serde_json::Value>::deserialize(d)?;
    list.into_iter()
        .map(label_text)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl Config {
    /// Reads and validates `file` (YAML or JSON by extension).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        cc::load(file, Self::from_value)
    }

    fn from_value(doc: serde_json::Value, p: &mut Problems) -> Option<Config> {
        let shared = cc::RawShared::<cc::RawZookeeperConfig>::take(p, &doc).validate(
            p,
            cc::SharedDefaults {
                admin_listen: common::admin::SYNAPSE_DEFAULT,
                read_only: Some(true),
            },
        );
        let raw: RawConfig = p.take("", doc)?;
        let admin_listen = shared.admin_listen;
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
            debounce: raw.debounce,
            debounce_max: match raw.debounce_max {
                Some(max) if max < raw.debounce.unwrap_or(DEFAULT_DEBOUNCE) => {
                    let d = raw.debounce.unwrap_or(DEFAULT_DEBOUNCE);
                    p.push(
                        "debounce_max",
                        format!("debounce_max {max:?} is less than debounce {d:?}"),
                    );
                    Some(d)
                }
                max => max,
            },
            locality: match raw.locality {
                None => None,
                Some(v) => locality_config("locality", v, None, p).flatten(),
            },
            max_connections: raw
                .max_connections
                .and_then(|n| max_connections("max_connections", n, p)),
        };
        let state_file = raw.state_file.map(|path| {
            if path.trim().is_empty() {
                p.push("state_file", "empty path");
            }
            StateFile {
                path: PathBuf::from(path),
                ttl: raw.state_file_ttl.unwrap_or(DEFAULT_STATE_FILE_TTL),
            }
        });
        if state_file.is_none() && raw.state_file_ttl.is_some() {
            p.push("state_file_ttl", "state_file_ttl without a state_file");
        }
        if state_file.as_ref().is_some_and(|f| f.ttl.is_zero()) {
            p.push("state_file_ttl", "must be more than 0");
        }
        let file_output = raw.file_output.map(|f| {
            if f.output_directory.trim().is_empty() {
                p.push("file_output.output_directory", "empty path");
            }
            FileOutput {
                dir: PathBuf::from(f.output_directory),
            }
        });
        if let (Some(s), Some(f)) = (&state_file, &file_output) {
            if s.path.parent() == Some(f.dir.as_path()) && s.path.extension().is_some_and(|e| e == "json") {
                p.push(
                    "state_file",
                    format!(
                        "{} is a .json file in file_output's directory, whose other .json files \
                         synapse removes: put it elsewhere",
                        s.path.display()
                    ),
                );
            }
        }
        let mut services: Vec<ServiceConfig> = Vec::new();
        // Key path of each kept service, for the checks that need every service first.
        let mut service_at: Vec<String> = Vec::new();
        // The checks across services look names and addresses up in indexes: a scan of the
        // earlier services made validation quadratic (20,000 services: seconds).
        let mut names: HashSet<String> = HashSet::new();
        let mut listens: ListenIndex<String> = ListenIndex::default();
        for (i, value) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            let Some(s) = p.take::<RawService>(&at, value) else {
                continue;
            };
            let s = validate_service(&at, s, &conn, p);
            if !names.insert(s.name.clone()) {
                p.push(
                    format!("{at}.name"),
                    format!("duplicate service name {:?}", s.name),
                );
            }
            // What binding would refuse at start, wildcards included; a port 0 listen was
            // already refused.
            if let Some(listen) = s.listen.filter(|l| l.port() != 0) {
                if cc::listen_conflict(listen, admin_listen) {
                    p.push(
                        format!("{at}.listen"),
                        format!("{listen} overlaps the admin listen address {admin_listen}"),
                    );
                }
                if let Some((ol, other)) = listens.conflict(listen) {
                    p.push(
                        format!("{at}.listen"),
                        format!("{listen} overlaps {ol} of service {other:?}"),
                    );
                }
                listens.insert(listen, s.name.clone());
            }
            services.push(s);
            service_at.push(at);
        }
        let http_listeners = http_listeners(raw.http_listeners, &services, &listens, admin_listen, &conn, p);
        let routed: HashSet<&str> = http_listeners
            .iter()
            .flat_map(|l| l.routes.iter().map(|r| r.service.as_str()))
            .collect();
        for (s, at) in services.iter().zip(&service_at) {
            if s.listen.is_none() && !routed.contains(s.name.as_str()) {
                p.push(
                    format!("{at}.listen"),
                    "required (a service needs its own listen address unless an http_listeners \
                     route sends requests to it)",
                );
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
            zk_session_timeout,
            zk_session,
            admin_listen,
            log,
            drain_timeout: raw.drain_timeout.unwrap_or(Duration::from_secs(10)),
            state_file,
            file_output,
            worker_threads: worker_threads(raw.worker_threads, p),
            services,
            http_listeners,
            http_keepalive_timeout: raw
                .http_keepalive_timeout
                .unwrap_or(DEFAULT_HTTP_KEEPALIVE_TIMEOUT),
            upgrade_socket,
        })
    }
}

/// Default of [`Config::worker_threads`].
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// `worker_threads`: at most 1024.
fn worker_threads(raw: Option<u32>, p: &mut Problems) -> usize {
    match raw {
        None => DEFAULT_WORKER_THREADS,
        Some(n) if n > 1024 => {
            p.push("worker_threads", format!("{n} is more than 1024"));
            DEFAULT_WORKER_THREADS
        }
        Some(n) => n as usize,
    }
}

/// Validates `http_listeners`: addresses (no overlap with the admin, service or other
/// listener addresses), routes naming `mode: http` services, no route declared twice.
fn http_listeners(
    raw: Vec<serde_json::Value>,
    services: &[ServiceConfig],
    service_listens: &ListenIndex<String>,
    admin_listen: SocketAddr,
    conn: &RawConnDefaults,
    p: &mut Problems,
) -> Vec<HttpListenerConfig> {
    let mut out: Vec<HttpListenerConfig> = Vec::new();
    let mut listener_listens: ListenIndex<()> = ListenIndex::default();
    // The first service of each name (a duplicate name was refused already).
    let mut by_name: HashMap<&str, &ServiceConfig> = HashMap::new();
    for s in services {
        by_name.entry(s.name.as_str()).or_insert(s);
    }
    for (i, value) in raw.into_iter().enumerate() {
        let at = format!("http_listeners[{i}]");
        let Some(l) = p.take::<RawHttpListener>(&at, value) else {
            continue;
        };
        let listen = listen_address(&format!("{at}.listen"), &l.listen, p);
        if listen.port() != 0 {
            let clash = if cc::listen_conflict(listen, admin_listen) {
                Some(format!("the admin listen address {admin_listen}"))
            } else if let Some((sl, name)) = service_listens.conflict(listen) {
                Some(format!("{sl} of service {name:?}"))
            } else {
                listener_listens
                    .conflict(listen)
                    .map(|(ol, ())| format!("{ol} of another http listener"))
            };
            if let Some(clash) = clash {
                p.push(format!("{at}.listen"), format!("{listen} overlaps {clash}"));
            }
        }
        // Every listener's address is indexed, as every one was compared before (a port 0
        // one was refused and never conflicts).
        if listen.port() != 0 {
            listener_listens.insert(listen, ());
        }
        if l.routes.is_empty() {
            p.push(format!("{at}.routes"), "at least one route is required");
        }
        let mut routes: Vec<RouteConfig> = Vec::new();
        // (host, path prefix with `/` and no prefix as one): the routes so far.
        let mut route_keys: HashSet<(Option<HostMatch>, String)> = HashSet::new();
        for (j, value) in l.routes.into_iter().enumerate() {
            let rat = format!("{at}.routes[{j}]");
            let Some(r) = p.take::<RawRoute>(&rat, value) else {
                continue;
            };
            let (host, bad_host) = match r.host.as_deref().map(HostMatch::parse) {
                None => (None, false),
                Some(Ok(h)) => (Some(h), false),
                Some(Err(e)) => {
                    p.push(format!("{rat}.host"), e);
                    (None, true)
                }
            };
            let path_prefix = r.path_prefix.unwrap_or_default();
            if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
                p.push(
                    format!("{rat}.path_prefix"),
                    format!("{path_prefix:?} must start with /"),
                );
            }
            let backend_protocol = r.backend_protocol.as_deref().and_then(|v| {
                BackendProtocol::parse(v)
                    .map_err(|e| p.push(format!("{rat}.backend_protocol"), e))
                    .ok()
            });
            match by_name.get(r.service.as_str()) {
                None => p.push(
                    format!("{rat}.service"),
                    format!("no service named {:?}", r.service),
                ),
                Some(s) if s.mode != Mode::Http => p.push(
                    format!("{rat}.service"),
                    format!(
                        "service {:?} is mode tcp; only mode http services can be routed",
                        s.name
                    ),
                ),
                Some(_) => {}
            }
            if bad_host {
                // Not kept: as a host-less route it would clash with the real ones.
                continue;
            }
            // `/` and no prefix both match every path.
            let prefix_key = if path_prefix.trim_start_matches('/').is_empty() {
                String::new()
            } else {
                path_prefix.clone()
            };
            if !route_keys.insert((host.clone(), prefix_key)) {
                p.push(
                    rat.clone(),
                    format!(
                        "duplicate route: host {} and path_prefix {path_prefix:?} already route to a service",
                        host.as_ref().map_or("(any)".to_string(), ToString::to_string)
                    ),
                );
            }
            routes.push(RouteConfig {
                host,
                path_prefix,
                service: r.service,
                backend_protocol,
            });
        }
        out.push(HttpListenerConfig {
            listen,
            routes,
            idle_timeout: conn.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            tcp_keepalive: conn.tcp_keepalive.unwrap_or(DEFAULT_TCP_KEEPALIVE),
        });
    }
    out
}

/// Listen addresses seen so far, each with what listens there, to find the first earlier
/// one that [`cc::listen_conflict`] says cannot be bound beside a new one, in constant time
/// per address (a scan of the earlier ones made validation quadratic in the services).
#[derive(Debug)]
struct ListenIndex<T> {
    /// Port → the addresses on it.
    ports: HashMap<u16, PortListens<T>>,
    /// Insertion counter: "first" means the earliest inserted.
    next: usize,
}

impl<T> Default for ListenIndex<T> {
    fn default() -> Self {
        ListenIndex {
            ports: HashMap::new(),
            next: 0,
        }
    }
}

/// One indexed address: (insertion order, the address as written, its owner).
type Listened<T> = (usize, SocketAddr, T);

/// The addresses on one port, by the ways they can conflict: the same (canonical) address,
/// a wildcard, or (for a wildcard asking) any address of its family.
#[derive(Debug)]
struct PortListens<T> {
    exact: HashMap<IpAddr, Listened<T>>,
    v4_any: Option<Listened<T>>,
    v6_any: Option<Listened<T>>,
    first_v4: Option<Listened<T>>,
    first: Option<Listened<T>>,
}

impl<T: Clone> ListenIndex<T> {
    /// The earliest inserted address that conflicts with `addr`, and its owner.
    fn conflict(&self, addr: SocketAddr) -> Option<(SocketAddr, T)> {
        let port = self.ports.get(&addr.port())?;
        let ip = addr.ip().to_canonical();
        let mut found: Vec<&Listened<T>> = Vec::with_capacity(3);
        found.extend(port.exact.get(&ip));
        found.extend(port.v6_any.as_ref());
        match ip {
            // [::] covers every address of both families.
            IpAddr::V6(v6) if v6.is_unspecified() => found.extend(port.first.as_ref()),
            // 0.0.0.0 covers every IPv4 address.
            IpAddr::V4(v4) if v4.is_unspecified() => found.extend(port.first_v4.as_ref()),
            IpAddr::V4(_) => found.extend(port.v4_any.as_ref()),
            IpAddr::V6(_) => {}
        }
        found
            .into_iter()
            .min_by_key(|(order, _, _)| *order)
            .map(|(_, a, owner)| (*a, owner.clone()))
    }

    /// Indexes `addr` (an address already there keeps its first owner).
    fn insert(&mut self, addr: SocketAddr, owner: T) {
        let entry = (self.next, addr, owner);
        self.next += 1;
        let port = self.ports.entry(addr.port()).or_insert_with(|| PortListens {
            exact: HashMap::new(),
            v4_any: None,
            v6_any: None,
            first_v4: None,
            first: None,
        });
        let ip = addr.ip().to_canonical();
        let keep = |slot: &mut Option<Listened<T>>| {
            if slot.is_none() {
                *slot = Some(entry.clone());
            }
        };
        keep(&mut port.first);
        match ip {
            IpAddr::V4(v4) => {
                keep(&mut port.first_v4);
                if v4.is_unspecified() {
                    keep(&mut port.v4_any);
                }
            }
            IpAddr::V6(v6) if v6.is_unspecified() => keep(&mut port.v6_any),
            IpAddr::V6(_) => {}
        }
        port.exact.entry(ip).or_insert(entry);
    }
}

/// A `listen` value (`ip:port` or a bare port, string or number); problems at `at`.
fn listen_address(at: &str, value: &serde_json::Value, p: &mut Problems) -> SocketAddr {
    let text = match value {
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    cc::parse_listen(&text).unwrap_or_else(|e| {
        p.push(at.to_owned(), e);
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn validate_service(at: &str, mut s: RawService, conn: &RawConnDefaults, p: &mut Problems) -> ServiceConfig {
    cc::check_service_name(p, at, &s.name);
    let (debounce, debounce_max) = debounce(at, &s, conn, p);
    let http_keys = RawHttpKeys {
        request_timeout: s.request_timeout,
        try_timeout: s.try_timeout,
        retry_budget: s.retry_budget,
        pool_max_idle: s.pool_max_idle,
        pool_idle_timeout: s.pool_idle_timeout,
        backend_protocol: s.backend_protocol.take(),
    };
    let zk_hosts = cc::zk_location(p, at, s.zk_hosts, &s.zk_path);
    let listen = s
        .listen
        .as_ref()
        .map(|v| listen_address(&format!("{at}.listen"), v, p));
    let mode = match s.mode.as_deref() {
        None | Some("tcp") => Mode::Tcp,
        Some("http") => Mode::Http,
        Some(other) => {
            p.push(
                format!("{at}.mode"),
                format!("unsupported mode {other:?}: expected tcp or http"),
            );
            Mode::Tcp
        }
    };
    let http = http_config(at, http_keys, mode, p);
    let connect_timeout = s.connect_timeout.unwrap_or(Duration::from_secs(1));
    if connect_timeout.is_zero() {
        p.push(format!("{at}.connect_timeout"), "must be more than 0");
    }
    let connect_attempts = NonZeroU32::new(s.connect_attempts.unwrap_or(3)).unwrap_or_else(|| {
        p.push(format!("{at}.connect_attempts"), "must be at least 1");
        NonZeroU32::MIN
    });
    let label_filters = label_filters(at, std::mem::take(&mut s.label_filters), p);
    let locality = match s.locality.take() {
        None => conn.locality.clone(),
        Some(v) => locality_config(&format!("{at}.locality"), v, Some(()), p).flatten(),
    };
    let default_servers = default_servers(at, std::mem::take(&mut s.default_servers), p);
    if s.keep_default_servers == Some(true) && default_servers.is_empty() {
        p.push(
            format!("{at}.keep_default_servers"),
            "keep_default_servers without default_servers",
        );
    }
    ServiceConfig {
        name: s.name,
        zk_hosts,
        zk_path: s.zk_path,
        listen,
        mode,
        http,
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
        debounce,
        debounce_max,
        label_filters,
        locality,
        default_servers,
        keep_default_servers: s.keep_default_servers.unwrap_or(false),
        max_connections: match s.max_connections {
            Some(n) => max_connections(&format!("{at}.max_connections"), n, p),
            None => conn.max_connections,
        },
    }
}

fn max_connections(at: &str, n: u32, p: &mut Problems) -> Option<NonZeroU32> {
    let n = NonZeroU32::new(n);
    if n.is_none() {
        p.push(at, "must be at least 1 (leave it out for no limit)");
    }
    n
}

/// `debounce` and `debounce_max` of a service, its own or the top-level ones (already
/// checked). Without any `debounce_max`, the maximum is at least the window.
fn debounce(at: &str, s: &RawService, conn: &RawConnDefaults, p: &mut Problems) -> (Duration, Duration) {
    let debounce = s.debounce.or(conn.debounce).unwrap_or(DEFAULT_DEBOUNCE);
    let Some(max) = s.debounce_max.or(conn.debounce_max) else {
        return (debounce, debounce.max(DEFAULT_DEBOUNCE_MAX));
    };
    if max >= debounce {
        return (debounce, max);
    }
    let key = if s.debounce_max.is_some() {
        "debounce_max"
    } else {
        "debounce"
    };
    p.push(
        format!("{at}.{key}"),
        format!("debounce_max {max:?} is less than debounce {debounce:?}"),
    );
    (debounce, debounce)
}

/// `label_filters` of a service; problems at `<at>.label_filters[i].<key>`.
fn label_filters(at: &str, raw: Vec<serde_json::Value>, p: &mut Problems) -> Vec<LabelFilter> {
    let mut out = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let at = format!("{at}.label_filters[{i}]");
        let Some(f) = p.take::<RawLabelFilter>(&at, v) else {
            continue;
        };
        if f.label.is_empty() {
            p.push(format!("{at}.label"), "empty label");
        }
        let one = |p: &mut Problems| match (&f.value, &f.values) {
            (Some(v), None) => Some(v.clone()),
            _ => {
                p.push(
                    format!("{at}.value"),
                    format!("condition {} takes one `value` (not `values`)", f.condition),
                );
                None
            }
        };
        let many = |p: &mut Problems| match (&f.value, &f.values) {
            (None, Some(v)) if !v.is_empty() => Some(v.iter().cloned().collect()),
            _ => {
                p.push(
                    format!("{at}.values"),
                    format!(
                        "condition {} takes a non-empty list `values` (not `value`)",
                        f.condition
                    ),
                );
                None
            }
        };
        let condition = match f.condition.replace('_', "-").as_str() {
            "equals" => one(p).map(Condition::Equals),
            "not-equals" => one(p).map(Condition::NotEquals),
            "in" => many(p).map(Condition::In),
            "not-in" => many(p).map(Condition::NotIn),
            other => {
                p.push(
                    format!("{at}.condition"),
                    format!(
                        "unknown condition {other:?}: expected one of {}",
                        Condition::NAMES.join(", ")
                    ),
                );
                None
            }
        };
        if let Some(condition) = condition {
            out.push(LabelFilter {
                label: f.label,
                condition,
            });
        }
    }
    out
}

/// A `locality` block at `at`; `Some(None)` for `false` (off), `None` when refused. `false`
/// is accepted only in a service (`allow_off`).
fn locality_config(
    at: &str,
    v: serde_json::Value,
    allow_off: Option<()>,
    p: &mut Problems,
) -> Option<Option<Locality>> {
    if v == serde_json::Value::Bool(false) && allow_off.is_some() {
        return Some(None);
    }
    if !v.is_object() {
        let hint = if allow_off.is_some() {
            "a map {label, value, min_local}, or false to turn the top-level locality off"
        } else {
            "a map {label, value, min_local}"
        };
        p.push(at, format!("expected {hint}"));
        return None;
    }
    let raw: RawLocality = p.take(at, v)?;
    let label = raw.label.unwrap_or_else(|| "zone".to_string());
    if label.is_empty() {
        p.push(format!("{at}.label"), "empty label");
    }
    let min_local = match raw.min_local {
        None => MinLocal::Count(1),
        Some(serde_json::Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => MinLocal::Count(n),
            None => {
                p.push(format!("{at}.min_local"), format!("{n} is not a count"));
                MinLocal::Count(1)
            }
        },
        Some(serde_json::Value::String(t)) => {
            match t.trim().strip_suffix('%').map(|n| n.trim().parse::<u32>()) {
                Some(Ok(n)) if n <= 100 => MinLocal::Percent(n),
                _ => match t.trim().parse::<u32>() {
                    Ok(n) => MinLocal::Count(n),
                    Err(_) => {
                        p.push(
                            format!("{at}.min_local"),
                            format!("{t:?} is neither a count nor a percentage like \"50%\" (0% to 100%)"),
                        );
                        MinLocal::Count(1)
                    }
                },
            }
        }
        Some(other) => {
            p.push(
                format!("{at}.min_local"),
                format!("expected a count or a percentage like \"50%\", found {other}"),
            );
            MinLocal::Count(1)
        }
    };
    Some(Some(Locality {
        label,
        value: raw.value,
        min_local,
    }))
}

/// `default_servers` of a service; problems at `<at>.default_servers[i].<key>`.
fn default_servers(at: &str, raw: Vec<serde_json::Value>, p: &mut Problems) -> Vec<DefaultServer> {
    let mut out: Vec<DefaultServer> = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let at = format!("{at}.default_servers[{i}]");
        let Some(d) = p.take::<RawDefaultServer>(&at, v) else {
            continue;
        };
        if let Err(e) = common::codec::check_host(&d.host) {
            p.push(format!("{at}.host"), format!("{:?}: {e}", d.host));
        }
        if d.port == 0 {
            p.push(format!("{at}.port"), "port 0 is not allowed");
        }
        let mut labels = BTreeMap::new();
        for (k, v) in d.labels {
            match label_text(v) {
                Ok(t) => {
                    labels.insert(k, t);
                }
                Err(e) => p.push(format!("{at}.labels.{k}"), e),
            }
        }
        let id = match &d.name {
            Some(name) => format!("default:{name}"),
            None => format!("default:{}:{}", d.host, d.port),
        };
        if out.iter().any(|o| o.id == id) {
            p.push(format!("{at}.name"), format!("duplicate default server {id:?}"));
        }
        out.push(DefaultServer {
            id,
            node: Node {
                host: d.host,
                port: d.port,
                name: d.name,
                weight: d.weight,
                available: true,
                unavailable_reason: None,
                haproxy_server_options: d.haproxy_server_options,
                labels,
                shard: None,
            },
        });
    }
    out
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
            Mode::Http => {}
        }
    }
    policy
}

/// The HTTP keys of a service: checked, defaults filled in; refused in `mode: tcp`.
/// The HTTP keys of a service, as written.
#[derive(Debug, Clone)]
struct RawHttpKeys {
    request_timeout: Option<Duration>,
    try_timeout: Option<Duration>,
    retry_budget: Option<RawRetryBudget>,
    pool_max_idle: Option<u32>,
    pool_idle_timeout: Option<Duration>,
    backend_protocol: Option<String>,
}

fn http_config(at: &str, s: RawHttpKeys, mode: Mode, p: &mut Problems) -> HttpConfig {
    let d = HttpConfig::default();
    if mode == Mode::Tcp {
        let set = [
            ("request_timeout", s.request_timeout.is_some()),
            ("try_timeout", s.try_timeout.is_some()),
            ("retry_budget", s.retry_budget.is_some()),
            ("pool_max_idle", s.pool_max_idle.is_some()),
            ("pool_idle_timeout", s.pool_idle_timeout.is_some()),
            ("backend_protocol", s.backend_protocol.is_some()),
        ];
        for (key, _) in set.iter().filter(|(_, set)| *set) {
            p.push(format!("{at}.{key}"), "only used in mode: http");
        }
        return d;
    }
    let budget = s.retry_budget.unwrap_or_default();
    let mut c = HttpConfig {
        request_timeout: s.request_timeout.unwrap_or(d.request_timeout),
        try_timeout: s.try_timeout.unwrap_or(d.try_timeout),
        retry_budget: RetryBudgetConfig {
            percent: budget.percent.unwrap_or(d.retry_budget.percent),
            min_per_second: budget.min_per_second.unwrap_or(d.retry_budget.min_per_second),
        },
        pool_max_idle: s.pool_max_idle.unwrap_or(d.pool_max_idle),
        pool_idle_timeout: s.pool_idle_timeout.unwrap_or(d.pool_idle_timeout),
        backend_protocol: match s.backend_protocol.as_deref().map(BackendProtocol::parse) {
            None => d.backend_protocol,
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                p.push(format!("{at}.backend_protocol"), e);
                d.backend_protocol
            }
        },
    };
    if !c.request_timeout.is_zero() && c.try_timeout > c.request_timeout {
        p.push(
            format!("{at}.try_timeout"),
            format!(
                "{:?} is longer than request_timeout {:?}: no try could use it",
                c.try_timeout, c.request_timeout
            ),
        );
    }
    if c.retry_budget.percent > 100 {
        p.push(
            format!("{at}.retry_budget.percent"),
            format!("{} is not a percentage (0 to 100)", c.retry_budget.percent),
        );
        c.retry_budget.percent = 100;
    }
    if c.retry_budget.min_per_second > 100_000 {
        p.push(format!("{at}.retry_budget.min_per_second"), "at most 100000");
    }
    if c.pool_max_idle > 10_000 {
        p.push(format!("{at}.pool_max_idle"), "at most 10000");
        c.pool_max_idle = 10_000;
    }
    if c.pool_idle_timeout.is_zero() {
        p.push(
            format!("{at}.pool_idle_timeout"),
            "must be more than 0 (to keep no idle connection, set pool_max_idle: 0)",
        );
    }
    c
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

    fn worker_threads(&self) -> usize {
        self.worker_threads
    }
}

#[cfg(test)]
mod tests;
