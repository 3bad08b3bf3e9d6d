//! [`SynapseBuilder`]: a real synapse (the binary) from a config written as data, and the
//! [`Synapse`] handle a test talks to: ports, routes, metrics, reload, log, stop.
//!
//! The config file is JSON serialised from [`SynapseFile`], a typed mirror of the keys of
//! synapse's file the harness sets itself (admin, ZooKeeper, services with their listen
//! ports); any other key goes in as a JSON value under its documented name
//! ([`SynapseService::with`], [`SynapseBuilder::top`]). synapse reads the file through its
//! own loader, so a typo in a key fails the start just as it would for a user.
//!
//! ```no_run
//! # use integration_tests::synapse::{SynapseBuilder, SynapseService};
//! # let (cs, a, b) = ("127.0.0.1:2181", 1, 2);
//! let synapse = SynapseBuilder::new(cs)
//!     .service(SynapseService::tcp("web").with("balance", "least_conn"))
//!     .start();
//! synapse.wait_routed_to("web", &[a, b]);
//! ```

use std::process::ExitStatus;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::agents::{http_get, metric_sample, routed, Agent};
use crate::{eventually, free_port};

/// How long the handle's waits wait (a loaded 2-core CI machine).
pub const WAIT: Duration = Duration::from_secs(20);

/// A duration as the config files write it (`"250ms"`).
pub fn duration_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// `admin:` of either agent's file.
#[derive(Debug, Clone, Serialize)]
pub struct AdminFile {
    /// `127.0.0.1:<port>`.
    pub listen: String,
}

/// `zookeeper:` of synapse's file (the keys the harness sets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ZookeeperFile {
    /// Requested session timeout, e.g. `"2s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<String>,
}

/// synapse's config file, as the builder writes it.
#[derive(Debug, Clone, Serialize)]
pub struct SynapseFile {
    /// The admin API, always on a port of its own.
    pub admin: AdminFile,
    /// The ZooKeeper session.
    #[serde(skip_serializing_if = "is_default_zk")]
    pub zookeeper: ZookeeperFile,
    /// `drain_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// The services.
    pub services: Vec<ServiceFile>,
    /// Any other top-level key (`http_listeners`, `first_sync_timeout`, `outlier`, ...).
    #[serde(flatten)]
    pub top: Map<String, Value>,
}

fn is_default_zk(z: &ZookeeperFile) -> bool {
    z.session_timeout.is_none()
}

/// One entry of synapse's `services:`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceFile {
    /// Service name.
    pub name: String,
    /// Connect string.
    pub zk_hosts: String,
    /// Watched path.
    pub zk_path: String,
    /// `tcp` (omitted) or `http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Listen port (none: the service has no port of its own, e.g. only a shared HTTP
    /// listener's route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<u16>,
    /// `connect_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Any other key of the service.
    #[serde(flatten)]
    pub keys: Map<String, Value>,
}

/// One service for [`SynapseBuilder::service`]. Defaults: `zk_path` `/services/<name>`, a
/// free listen port, `connect_timeout` 500 ms (a dead backend fails fast in tests).
#[derive(Debug, Clone)]
pub struct SynapseService {
    name: String,
    mode: Option<&'static str>,
    zk_path: Option<String>,
    zk_hosts: Option<String>,
    listen: bool,
    port: Option<u16>,
    connect_timeout: Option<Duration>,
    keys: Map<String, Value>,
}

impl SynapseService {
    /// A `mode: tcp` service (synapse's default mode).
    pub fn tcp(name: &str) -> SynapseService {
        SynapseService {
            name: name.to_string(),
            mode: None,
            zk_path: None,
            zk_hosts: None,
            listen: true,
            port: None,
            connect_timeout: Some(Duration::from_millis(500)),
            keys: Map::new(),
        }
    }

    /// A `mode: http` service.
    pub fn http(name: &str) -> SynapseService {
        SynapseService {
            mode: Some("http"),
            ..Self::tcp(name)
        }
    }

    /// Watches `path` instead of `/services/<name>`.
    pub fn zk_path(mut self, path: &str) -> Self {
        self.zk_path = Some(path.to_string());
        self
    }

    /// Uses this connect string instead of the builder's.
    pub fn zk_hosts(mut self, hosts: &str) -> Self {
        self.zk_hosts = Some(hosts.to_string());
        self
    }

    /// No port of its own (an HTTP service reached through `http_listeners` only).
    pub fn no_listen(mut self) -> Self {
        self.listen = false;
        self
    }

    /// Listens on `port` (instead of a free port the builder picks).
    pub fn listen_on(mut self, port: u16) -> Self {
        self.listen = true;
        self.port = Some(port);
        self
    }

    /// `connect_timeout` (`None`: synapse's default).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Any other key of the service, by its name in the file, e.g.
    /// `.with("balance", "least_conn")` or `.with("outlier", json!({"consecutive_failures": 2}))`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.insert(key.to_string(), value.into());
        self
    }
}

/// A synapse to start: the config (as data) and how to run the process.
#[derive(Debug, Clone)]
pub struct SynapseBuilder {
    zk: String,
    admin: u16,
    session_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
    top: Map<String, Value>,
    services: Vec<(SynapseService, Option<u16>)>,
    env: Vec<(String, String)>,
    nofile: Option<u32>,
}

impl SynapseBuilder {
    /// A synapse whose services watch `zk` (a connect string) unless told otherwise. The
    /// admin API gets a free port.
    pub fn new(zk: &str) -> SynapseBuilder {
        SynapseBuilder {
            zk: zk.to_string(),
            admin: free_port(),
            session_timeout: None,
            drain_timeout: None,
            top: Map::new(),
            services: Vec::new(),
            env: Vec::new(),
            nofile: None,
        }
    }

    /// Adds a service (its listen port is chosen now: see [`port`](Self::port)).
    pub fn service(mut self, service: SynapseService) -> Self {
        let port = service.listen.then(|| service.port.unwrap_or_else(free_port));
        self.services.push((service, port));
        self
    }

    /// Adds `service`, or replaces the one of the same name (its port stays unless
    /// `service` names one).
    pub fn set_service(mut self, service: SynapseService) -> Self {
        match self.services.iter().position(|(s, _)| s.name == service.name) {
            Some(i) => {
                let port = match (service.listen, service.port) {
                    (false, _) => None,
                    (true, Some(p)) => Some(p),
                    (true, None) => self.services[i].1.or_else(|| Some(free_port())),
                };
                self.services[i] = (service, port);
                self
            }
            None => self.service(service),
        }
    }

    /// Adds a `mode: tcp` service with the defaults of [`SynapseService`].
    pub fn tcp(self, name: &str) -> Self {
        self.service(SynapseService::tcp(name))
    }

    /// Adds a `mode: http` service with the defaults of [`SynapseService`].
    pub fn http(self, name: &str) -> Self {
        self.service(SynapseService::http(name))
    }

    /// Removes the service `name` (for [`Synapse::reload`]).
    pub fn without(mut self, name: &str) -> Self {
        let before = self.services.len();
        self.services.retain(|(s, _)| s.name != name);
        assert!(self.services.len() < before, "no service {name} to remove");
        self
    }

    /// Changes the service `name` in place (its port stays).
    pub fn edit(mut self, name: &str, change: impl FnOnce(SynapseService) -> SynapseService) -> Self {
        let slot = self
            .services
            .iter_mut()
            .find(|(s, _)| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} to edit"));
        slot.0 = change(slot.0.clone());
        slot.1 = match (slot.0.listen, slot.0.port) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => slot.1.or_else(|| Some(free_port())),
        };
        self
    }

    /// `zookeeper.session_timeout`.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// `drain_timeout`.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// Any other top-level key, by its name in the file (e.g. `first_sync_timeout`,
    /// `http_listeners`, `state_file`).
    pub fn top(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.top.insert(key.to_string(), value.into());
        self
    }

    /// Removes a top-level key set with [`top`](Self::top).
    pub fn without_top(mut self, key: &str) -> Self {
        self.top.remove(key);
        self
    }

    /// An environment variable for the process (wins over the harness's, e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs the process under an open-file limit (`ulimit -n`).
    pub fn fd_limit(mut self, nofile: u32) -> Self {
        self.nofile = Some(nofile);
        self
    }

    /// The admin API's port.
    pub fn admin(&self) -> u16 {
        self.admin
    }

    /// The listen port of service `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.services
            .iter()
            .find(|(s, _)| s.name == name)
            .and_then(|(_, p)| *p)
            .unwrap_or_else(|| panic!("service {name} has no listen port"))
    }

    /// The config file's content, typed.
    pub fn file(&self) -> SynapseFile {
        SynapseFile {
            admin: AdminFile {
                listen: format!("127.0.0.1:{}", self.admin),
            },
            zookeeper: ZookeeperFile {
                session_timeout: self.session_timeout.map(duration_text),
            },
            drain_timeout: self.drain_timeout.map(duration_text),
            services: self
                .services
                .iter()
                .map(|(s, port)| ServiceFile {
                    name: s.name.clone(),
                    zk_hosts: s.zk_hosts.clone().unwrap_or_else(|| self.zk.clone()),
                    zk_path: s
                        .zk_path
                        .clone()
                        .unwrap_or_else(|| format!("/services/{}", s.name)),
                    mode: s.mode.map(str::to_string),
                    listen: *port,
                    connect_timeout: s.connect_timeout.map(duration_text),
                    keys: s.keys.clone(),
                })
                .collect(),
            top: self.top.clone(),
        }
    }

    /// The config file's text (JSON).
    pub fn text(&self) -> String {
        serde_json::to_string_pretty(&self.file()).expect("a synapse config serialises")
    }

    /// Starts synapse with this config.
    pub fn start(self) -> Synapse {
        let agent = self.spawn(&[]);
        Synapse { agent, config: self }
    }

    /// Starts a successor with this config and `--takeover` (the config sets
    /// `upgrade_socket`), and returns at once: the caller watches how the handoff goes.
    /// [`Synapse::upgrade`] is the whole of a successful one.
    pub fn start_takeover(&self) -> Synapse {
        let agent = self.spawn(&["--takeover"]);
        Synapse {
            agent,
            config: self.clone(),
        }
    }

    /// Starts synapse socket-activated, as systemd does (see
    /// [`Agent::start_socket_activated`]): the service listening on `listener`'s port (set
    /// with [`SynapseService::listen_on`]) serves it.
    pub fn start_socket_activated(self, listener: &std::net::TcpListener) -> Synapse {
        let agent = Agent::start_socket_activated("synapse", "synapse.json", &self.text(), listener);
        Synapse { agent, config: self }
    }

    fn spawn(&self, args: &[&str]) -> Agent {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Agent::start_file_with_args("synapse", "synapse.json", &self.text(), &env, self.nofile, args)
    }
}

/// The process an upgrade replaced, once it has exited.
#[derive(Debug)]
pub struct Replaced {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it logged.
    pub log: String,
}

/// A running synapse. Dropping it kills it (SIGKILL; its log is printed if the test failed).
#[derive(Debug)]
pub struct Synapse {
    agent: Agent,
    config: SynapseBuilder,
}

impl Synapse {
    /// Upgrades in place: starts a new synapse with the same config and `--takeover` (the
    /// config must set `upgrade_socket`: `.top("upgrade_socket", path)`), waits until the
    /// old one has handed over and exited and the new one confirms, and returns the old
    /// one's exit status and log. The handle then drives the new process.
    pub fn upgrade(&mut self) -> Replaced {
        let new = self.config.spawn(&["--takeover"]);
        let mut old = std::mem::replace(&mut self.agent, new);
        let status = old.wait_exit(WAIT);
        let agent = &self.agent;
        eventually("the new synapse confirms the takeover", WAIT, || {
            agent.log().contains("takeover done").then_some(())
        });
        Replaced {
            status,
            log: old.log(),
        }
    }

    /// The process.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The process, for signals and waits.
    pub fn agent_mut(&mut self) -> &mut Agent {
        &mut self.agent
    }

    /// The config last written (at start, or by the last [`reload`](Self::reload), whether
    /// synapse took it or refused it).
    pub fn config(&self) -> &SynapseBuilder {
        &self.config
    }

    /// The admin API's port.
    pub fn admin(&self) -> u16 {
        self.config.admin
    }

    /// The listen port of service `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.config.port(name)
    }

    /// The listen port of the only service.
    pub fn listen(&self) -> u16 {
        match self.config.services.as_slice() {
            [(s, _)] => self.port(&s.name),
            many => panic!("listen() needs one service, there are {}", many.len()),
        }
    }

    /// Everything synapse logged so far.
    pub fn log(&self) -> String {
        self.agent.log()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `STOP`, ...).
    pub fn signal(&self, sig: &str) {
        self.agent.signal(sig);
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.agent.is_running()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.agent.wait_exit(timeout)
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.agent.signal("TERM");
        self.agent.wait_exit(timeout)
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        self.agent.signal("KILL");
        self.agent.wait_exit(WAIT);
    }

    /// Rewrites the config with `change` applied to the current one and sends SIGHUP. The
    /// caller waits for the effect it expects (new ports: [`port`](Self::port)).
    pub fn reload(&mut self, change: impl FnOnce(SynapseBuilder) -> SynapseBuilder) {
        self.config = change(self.config.clone());
        self.agent.rewrite_config(&self.config.text());
        self.agent.signal("HUP");
    }

    /// Replaces the config file with `text` (e.g. an invalid one) and sends SIGHUP; the
    /// handle keeps the config it knew.
    pub fn reload_raw(&self, text: &str) {
        self.agent.rewrite_config(text);
        self.agent.signal("HUP");
    }

    /// The sample `name{labels}` of `/metrics` (labels exactly these, any order); `None`
    /// while the series is absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_sample(self.admin(), name, labels)
    }

    /// [`metric`](Self::metric) of a service's series (`{service="<service>"}`), 0 while absent
    /// (a counter not yet incremented).
    pub fn service_metric(&self, name: &str, service: &str) -> f64 {
        self.metric(name, &[("service", service)]).unwrap_or(0.0)
    }

    /// [`metric`](Self::metric) of a backend's series (`{backend="127.0.0.1:<port>",
    /// service="<service>"}`), 0 while absent.
    pub fn backend_metric(&self, name: &str, service: &str, port: u16) -> f64 {
        let backend = format!("127.0.0.1:{port}");
        self.metric(name, &[("backend", &backend), ("service", service)])
            .unwrap_or(0.0)
    }

    /// `GET /services`.
    pub fn services(&self) -> Value {
        let (status, body) = http_get(self.admin(), "/services").expect("GET /services");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("/services is JSON")
    }

    /// The `/services` entry of `service`.
    pub fn service(&self, service: &str) -> Value {
        self.services()[service].clone()
    }

    /// The `/services` entry of the backend on 127.0.0.1:`port` of `service`.
    pub fn backend(&self, service: &str, port: u16) -> Option<Value> {
        self.service(service)["backends"]
            .as_array()?
            .iter()
            .find(|b| b["port"] == port)
            .cloned()
    }

    /// The backends `service` routes to (`host:port`, sorted); `None` before the admin API
    /// answers or while synapse does not know the service.
    pub fn routes(&self, service: &str) -> Option<Vec<String>> {
        routed(self.admin(), service)
    }

    /// Waits until `service` has synced with ZooKeeper and routes to `n` backends.
    #[track_caller]
    pub fn wait_routes(&self, service: &str, n: usize) {
        eventually(&format!("{service} routes to {n} backends"), WAIT, || {
            let (status, body) = http_get(self.admin(), "/services").ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let synced = v[service]["synced"].as_bool()?;
            (status == 200 && synced && v[service]["backends"].as_array()?.len() == n).then_some(())
        });
    }

    /// Waits until `service` routes to exactly the backends on 127.0.0.1:`ports`.
    #[track_caller]
    pub fn wait_routed_to(&self, service: &str, ports: &[u16]) {
        let want = addrs(ports);
        eventually(&format!("{service} routes to {want:?}"), WAIT, || {
            (self.routes(service)? == want).then_some(())
        });
    }
}

/// `127.0.0.1:<port>` for each port, sorted (as [`Synapse::routes`] lists them).
pub fn addrs(ports: &[u16]) -> Vec<String> {
    let mut v: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The file the builder writes is one synapse's own loader accepts, keys and all.
    #[test]
    fn synapse_loads_what_the_builder_writes() {
        let b = SynapseBuilder::new("127.0.0.1:2181")
            .session_timeout(Duration::from_secs(2))
            .drain_timeout(Duration::from_secs(10))
            .top("first_sync_timeout", "500ms")
            .service(SynapseService::tcp("web").with("balance", "least_conn"))
            .service(SynapseService::http("api").no_listen())
            .top(
                "http_listeners",
                json!([{"listen": free_port(), "routes": [{"host": "api.local", "service": "api"}]}]),
            );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synapse.json");
        std::fs::write(&file, b.text()).unwrap();
        let config = synapse::config::Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{}", b.text()));
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.zk_session_timeout, Duration::from_secs(2));
        assert_eq!(config.admin_listen.port(), b.admin());

        // A reload keeps the ports of the services it does not touch.
        let web = b.port("web");
        let b = b.without("api").without_top("http_listeners").tcp("more");
        assert_eq!(b.port("web"), web);
        std::fs::write(&file, b.text()).unwrap();
        synapse::config::Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{}", b.text()));
    }
}
