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
use crate::router::HostMatch;

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
}

/// How a service is proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP: bytes are copied both ways.
    Tcp,
    /// HTTP/1.1 (and HTTP/2 prior knowledge) from clients, pooled HTTP/1.1 to backends,
    /// balanced per request.
    Http,
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
    services: Vec<serde_json::Value>,
    #[serde(default)]
    http_listeners: Vec<serde_json::Value>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    http_keepalive_timeout: Option<Duration>,
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
        // Key path of each kept service, for the checks that need every service first.
        let mut service_at: Vec<String> = Vec::new();
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
            if let Some(listen) = s.listen.filter(|l| l.port() != 0) {
                if cc::listen_conflict(listen, admin_listen) {
                    p.push(
                        format!("{at}.listen"),
                        format!("{listen} overlaps the admin listen address {admin_listen}"),
                    );
                }
                let other = services
                    .iter()
                    .find_map(|o| Some((o, o.listen?)).filter(|(_, ol)| cc::listen_conflict(*ol, listen)));
                if let Some((o, ol)) = other {
                    p.push(
                        format!("{at}.listen"),
                        format!("{listen} overlaps {ol} of service {:?}", o.name),
                    );
                }
            }
            services.push(s);
            service_at.push(at);
        }
        let http_listeners = http_listeners(raw.http_listeners, &services, admin_listen, &conn, p);
        for (s, at) in services.iter().zip(&service_at) {
            let routed = http_listeners
                .iter()
                .any(|l| l.routes.iter().any(|r| r.service == s.name));
            if s.listen.is_none() && !routed {
                p.push(
                    format!("{at}.listen"),
                    "required (a service needs its own listen address unless an http_listeners \
                     route sends requests to it)",
                );
            }
        }
        Some(Config {
            zk_session_timeout: raw.zookeeper.session_timeout(),
            admin_listen,
            log: raw.log,
            drain_timeout: raw.drain_timeout.unwrap_or(Duration::from_secs(10)),
            worker_threads: worker_threads(raw.worker_threads, p),
            services,
            http_listeners,
            http_keepalive_timeout: raw
                .http_keepalive_timeout
                .unwrap_or(DEFAULT_HTTP_KEEPALIVE_TIMEOUT),
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
    admin_listen: SocketAddr,
    conn: &RawConnDefaults,
    p: &mut Problems,
) -> Vec<HttpListenerConfig> {
    let mut out: Vec<HttpListenerConfig> = Vec::new();
    for (i, value) in raw.into_iter().enumerate() {
        let at = format!("http_listeners[{i}]");
        let Some(l) = p.take::<RawHttpListener>(&at, value) else {
            continue;
        };
        let listen = listen_address(&format!("{at}.listen"), &l.listen, p);
        if listen.port() != 0 {
            let clash = if cc::listen_conflict(listen, admin_listen) {
                Some(format!("the admin listen address {admin_listen}"))
            } else if let Some((s, sl)) = services
                .iter()
                .find_map(|s| Some((s, s.listen?)).filter(|(_, sl)| cc::listen_conflict(*sl, listen)))
            {
                Some(format!("{sl} of service {:?}", s.name))
            } else {
                out.iter()
                    .find(|o| cc::listen_conflict(o.listen, listen))
                    .map(|o| format!("{} of another http listener", o.listen))
            };
            if let Some(clash) = clash {
                p.push(format!("{at}.listen"), format!("{listen} overlaps {clash}"));
            }
        }
        if l.routes.is_empty() {
            p.push(format!("{at}.routes"), "at least one route is required");
        }
        let mut routes: Vec<RouteConfig> = Vec::new();
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
            match services.iter().find(|s| s.name == r.service) {
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
            let same = |a: &str, b: &str| {
                (a.trim_start_matches('/').is_empty() && b.trim_start_matches('/').is_empty()) || a == b
            };
            if routes
                .iter()
                .any(|o| o.host == host && same(&o.path_prefix, &path_prefix))
            {
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

fn validate_service(at: &str, s: RawService, conn: &RawConnDefaults, p: &mut Problems) -> ServiceConfig {
    cc::check_service_name(p, at, &s.name);
    let http_keys = RawHttpKeys {
        request_timeout: s.request_timeout,
        try_timeout: s.try_timeout,
        retry_budget: s.retry_budget,
        pool_max_idle: s.pool_max_idle,
        pool_idle_timeout: s.pool_idle_timeout,
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
            Mode::Http => {}
        }
    }
    policy
}

/// The HTTP keys of a service: checked, defaults filled in; refused in `mode: tcp`.
/// The HTTP keys of a service, as written.
#[derive(Debug, Clone, Copy)]
struct RawHttpKeys {
    request_timeout: Option<Duration>,
    try_timeout: Option<Duration>,
    retry_budget: Option<RawRetryBudget>,
    pool_max_idle: Option<u32>,
    pool_idle_timeout: Option<Duration>,
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
