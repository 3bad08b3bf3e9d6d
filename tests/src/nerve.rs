//! [`NerveBuilder`]: a real nerve (the binary) from a config written as data, and the
//! [`Nerve`] handle: admin port, metrics, status, reload, log, stop.
//!
//! The file is JSON serialised from [`NerveFile`], a typed mirror of the keys of nerve's
//! file the harness sets itself; any other key goes in as a JSON value under its documented
//! name ([`NerveService::with`], [`NerveBuilder::top`]), read by nerve's own loader.
//!
//! ```no_run
//! # use integration_tests::nerve::{NerveBuilder, NerveService};
//! # let (cs, port) = ("127.0.0.1:2181", 8080);
//! let nerve = NerveBuilder::new(cs)
//!     .instance_id("host-a")
//!     .service(NerveService::tcp("web", port).rise(2))
//!     .start();
//! ```

use std::process::ExitStatus;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::agents::{http_get, metric_sample, Agent};
use crate::synapse::{duration_text, AdminFile, Replaced, WAIT};
use crate::{eventually, free_port};

/// nerve's config file, as the builder writes it.
#[derive(Debug, Clone, Serialize)]
pub struct NerveFile {
    /// `instance_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The admin API, always on a port of its own.
    pub admin: AdminFile,
    /// The ZooKeeper session.
    #[serde(skip_serializing_if = "is_default_zk")]
    pub zookeeper: NerveZookeeperFile,
    /// `drain_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_time: Option<String>,
    /// The services.
    pub services: Vec<NerveServiceFile>,
    /// Any other top-level key (`state_file`, `log`, ...).
    #[serde(flatten)]
    pub top: Map<String, Value>,
}

fn is_default_zk(z: &NerveZookeeperFile) -> bool {
    z.session_timeout.is_none() && z.auth.is_none()
}

/// `zookeeper:` of nerve's file: synapse's keys plus the credentials nerve registers with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NerveZookeeperFile {
    /// Requested session timeout, e.g. `"2s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<String>,
    /// `auth: {scheme, credentials}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<ZkAuthFile>,
}

/// ZooKeeper credentials (`zookeeper.auth`).
#[derive(Debug, Clone, Serialize)]
pub struct ZkAuthFile {
    /// e.g. `digest`.
    pub scheme: String,
    /// e.g. `user:password`.
    pub credentials: String,
}

/// One entry of nerve's `services:`.
#[derive(Debug, Clone, Serialize)]
pub struct NerveServiceFile {
    /// Service name.
    pub name: String,
    /// Per-service `instance_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Address registered.
    pub host: String,
    /// Port registered (and checked).
    pub port: u16,
    /// Connect string.
    pub zk_hosts: String,
    /// Parent path of the nodes.
    pub zk_path: String,
    /// `check_interval`.
    pub check_interval: String,
    /// `rise`.
    pub rise: u32,
    /// `fall`.
    pub fall: u32,
    /// The checks, as the file writes them.
    pub checks: Vec<Value>,
    /// Any other key of the service.
    #[serde(flatten)]
    pub keys: Map<String, Value>,
}

/// One service for [`NerveBuilder::service`]. Defaults: host 127.0.0.1, `zk_path`
/// `/services/<name>`, checks every 100 ms, rise 1, fall 2.
#[derive(Debug, Clone)]
pub struct NerveService {
    name: String,
    port: u16,
    instance_id: Option<String>,
    zk_path: Option<String>,
    check_interval: Duration,
    rise: u32,
    fall: u32,
    checks: Vec<Value>,
    keys: Map<String, Value>,
}

impl NerveService {
    /// Service `name` on 127.0.0.1:`port`, checked by a TCP connect (timeout 500 ms).
    pub fn tcp(name: &str, port: u16) -> NerveService {
        NerveService {
            name: name.to_string(),
            port,
            instance_id: None,
            zk_path: None,
            check_interval: Duration::from_millis(100),
            rise: 1,
            fall: 2,
            checks: vec![json!({"type": "tcp", "timeout": "500ms"})],
            keys: Map::new(),
        }
    }

    /// Registers under `path` instead of `/services/<name>`.
    pub fn zk_path(mut self, path: &str) -> Self {
        self.zk_path = Some(path.to_string());
        self
    }

    /// This service's own `instance_id`.
    pub fn instance_id(mut self, id: &str) -> Self {
        self.instance_id = Some(id.to_string());
        self
    }

    /// `check_interval`.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// `rise`.
    pub fn rise(mut self, n: u32) -> Self {
        self.rise = n;
        self
    }

    /// `fall`.
    pub fn fall(mut self, n: u32) -> Self {
        self.fall = n;
        self
    }

    /// Replaces the checks (each as the file writes it, e.g. `json!({"type": "http", ...})`).
    pub fn checks(mut self, checks: Vec<Value>) -> Self {
        self.checks = checks;
        self
    }

    /// Any other key of the service, by its name in the file (`weight`, `warmup`, `hooks`,
    /// `reporters`, ...).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.insert(key.to_string(), value.into());
        self
    }
}

/// A nerve to start: the config (as data) and how to run the process.
#[derive(Debug, Clone)]
pub struct NerveBuilder {
    zk: String,
    admin: u16,
    instance_id: Option<String>,
    session_timeout: Option<Duration>,
    auth: Option<ZkAuthFile>,
    drain_time: Option<Duration>,
    top: Map<String, Value>,
    services: Vec<NerveService>,
    env: Vec<(String, String)>,
}

impl NerveBuilder {
    /// A nerve registering in `zk` (a connect string). The admin API gets a free port.
    pub fn new(zk: &str) -> NerveBuilder {
        NerveBuilder {
            zk: zk.to_string(),
            admin: free_port(),
            instance_id: None,
            session_timeout: None,
            auth: None,
            drain_time: None,
            top: Map::new(),
            services: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds a service.
    pub fn service(mut self, service: NerveService) -> Self {
        self.services.push(service);
        self
    }

    /// Removes the service `name` (for [`Nerve::reload`]).
    pub fn without(mut self, name: &str) -> Self {
        let before = self.services.len();
        self.services.retain(|s| s.name != name);
        assert!(self.services.len() < before, "no service {name} to remove");
        self
    }

    /// Changes the service `name` in place.
    pub fn edit(mut self, name: &str, change: impl FnOnce(NerveService) -> NerveService) -> Self {
        let slot = self
            .services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} to edit"));
        *slot = change(slot.clone());
        self
    }

    /// Top-level `instance_id`.
    pub fn instance_id(mut self, id: &str) -> Self {
        self.instance_id = Some(id.to_string());
        self
    }

    /// `zookeeper.session_timeout`.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// `zookeeper.auth`: the credentials nerve registers with (its nodes get ACLs).
    pub fn zk_auth(mut self, scheme: &str, credentials: &str) -> Self {
        self.auth = Some(ZkAuthFile {
            scheme: scheme.to_string(),
            credentials: credentials.to_string(),
        });
        self
    }

    /// `drain_time`.
    pub fn drain_time(mut self, time: Duration) -> Self {
        self.drain_time = Some(time);
        self
    }

    /// Any other top-level key, by its name in the file.
    pub fn top(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.top.insert(key.to_string(), value.into());
        self
    }

    /// An environment variable for the process (wins over the harness's, e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The admin API's port.
    pub fn admin(&self) -> u16 {
        self.admin
    }

    /// The config file's content, typed.
    pub fn file(&self) -> NerveFile {
        NerveFile {
            instance_id: self.instance_id.clone(),
            admin: AdminFile {
                listen: format!("127.0.0.1:{}", self.admin),
            },
            zookeeper: NerveZookeeperFile {
                session_timeout: self.session_timeout.map(duration_text),
                auth: self.auth.clone(),
            },
            drain_time: self.drain_time.map(duration_text),
            services: self
                .services
                .iter()
                .map(|s| NerveServiceFile {
                    name: s.name.clone(),
                    instance_id: s.instance_id.clone(),
                    host: "127.0.0.1".to_string(),
                    port: s.port,
                    zk_hosts: self.zk.clone(),
                    zk_path: s
                        .zk_path
                        .clone()
                        .unwrap_or_else(|| format!("/services/{}", s.name)),
                    check_interval: duration_text(s.check_interval),
                    rise: s.rise,
                    fall: s.fall,
                    checks: s.checks.clone(),
                    keys: s.keys.clone(),
                })
                .collect(),
            top: self.top.clone(),
        }
    }

    /// The config file's text (JSON).
    pub fn text(&self) -> String {
        serde_json::to_string_pretty(&self.file()).expect("a nerve config serialises")
    }

    /// Starts nerve with this config.
    pub fn start(self) -> Nerve {
        let agent = self.spawn(&[]);
        Nerve { agent, config: self }
    }

    /// Starts nerve with this config and `--takeover` (the config must set
    /// `upgrade_socket`), returning at once: e.g. after a parked nerve exited.
    pub fn start_takeover(self) -> Nerve {
        let agent = self.spawn(&["--takeover"]);
        Nerve { agent, config: self }
    }

    fn spawn(&self, args: &[&str]) -> Agent {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Agent::start_file_with_args("nerve", "nerve.json", &self.text(), &env, None, args)
    }
}

/// A running nerve. Dropping it kills it (SIGKILL; its log is printed if the test failed).
#[derive(Debug)]
pub struct Nerve {
    agent: Agent,
    config: NerveBuilder,
}

impl Nerve {
    /// Upgrades in place: starts a new nerve with the same config and `--takeover` (the
    /// config must set `upgrade_socket`: `.top("upgrade_socket", path)`), waits until the
    /// old one has handed over and exited and the new one confirms, and returns the old
    /// one's exit status and log. The handle then drives the new process.
    pub fn upgrade(&mut self) -> Replaced {
        let new = self.config.spawn(&["--takeover"]);
        let mut old = std::mem::replace(&mut self.agent, new);
        let status = old.wait_exit(WAIT);
        let agent = &self.agent;
        eventually("the new nerve confirms the takeover", WAIT, || {
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

    /// The config last written (at start, or by the last [`reload`](Self::reload)).
    pub fn config(&self) -> &NerveBuilder {
        &self.config
    }

    /// The admin API's port.
    pub fn admin(&self) -> u16 {
        self.config.admin
    }

    /// Everything nerve logged so far.
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

    /// Rewrites the config with `change` applied to the current one and sends SIGHUP.
    pub fn reload(&mut self, change: impl FnOnce(NerveBuilder) -> NerveBuilder) {
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

    /// `GET /status`, once the admin API answers it.
    pub fn status(&self) -> Option<Value> {
        let (status, body) = http_get(self.admin(), "/status").ok()?;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file the builder writes is one nerve's own loader accepts, keys and all.
    #[test]
    fn nerve_loads_what_the_builder_writes() {
        let b = NerveBuilder::new("127.0.0.1:2181")
            .instance_id("host-a")
            .session_timeout(Duration::from_secs(2))
            .zk_auth("digest", "nerve:s3cret")
            .drain_time(Duration::from_secs(1))
            .service(NerveService::tcp("web", 8080).rise(2).with("weight", 10))
            .service(NerveService::tcp("db", 5432).instance_id("db-a").zk_path("/db"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nerve.json");
        std::fs::write(&file, b.text()).unwrap();
        let config = nerve::config::Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{}", b.text()));
        assert_eq!(config.services.len(), 2);
    }
}
