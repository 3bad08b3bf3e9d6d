//! Config reloads (SIGHUP) as a diff, in the manner of sozu's `ConfigState::diff`: [`plan`]
//! compares the running config with the new one and says what happens to each service and
//! shared listener; it touches nothing (pure). [`crate::supervisor`] applies the plan.
//!
//! Services are compared by name:
//!
//! - **unchanged**: untouched (same socket, same watcher, same table);
//! - **changed, same ZooKeeper location** ([`ServiceAction::Update`]): its watcher switches to
//!   a successor service with the new settings and rebuilds the table, keeping members and
//!   backend states; the accept loop is replaced by one serving the successor, on the same
//!   socket when `listen` did not change (connections in the backlog are not lost; open
//!   connections go on);
//! - **changed ZooKeeper location** ([`ServiceAction::Move`]): a new watcher (and service)
//!   replaces the old one, which is retired like a removed one (the socket is handed over
//!   when `listen` is the same);
//! - **removed**: its listener stops accepting at once and closes, its watcher stops, and
//!   its open connections get `drain_timeout`, then are closed;
//! - **added**: a listener and a watcher start.
//!
//! `mode: http` services: their listener's routes are swapped in place, so keep-alive
//! connections follow a changed service from their next request. Shared HTTP listeners
//! (`http_listeners`, by address) are kept, added or removed the same way, and their routes
//! rebuilt after every reload; a listener whose settings changed gets a new accept loop on
//! its socket.
//!
//! Top-level keys other than `drain_timeout`, `http_keepalive_timeout` and the services'
//! defaults (`zookeeper`, `admin`, `log`, `state_file`, `file_output`) need a restart: a
//! change is listed in [`Plan::restart_only`], logged and ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::config::{Config, HttpListenerConfig, ServiceConfig};

/// What a reload does to one service.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceAction {
    /// Same config: untouched.
    Unchanged,
    /// New settings, same ZooKeeper location: a successor takes over its watcher.
    Update(ServiceConfig),
    /// Another ZooKeeper location: retired, and started anew.
    Move(ServiceConfig),
    /// Gone from the config: retired, its metric series forgotten.
    Remove,
    /// New in the config: started.
    Add(ServiceConfig),
}

/// What a reload does to one shared HTTP listener.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerAction {
    /// Kept, with these settings (its routes are rebuilt); `restart`: its connection settings
    /// changed, so it gets a new accept loop on its socket.
    Keep {
        /// The new settings.
        config: HttpListenerConfig,
        /// A new accept loop is needed.
        restart: bool,
    },
    /// New: bound and started.
    Add(HttpListenerConfig),
    /// Gone: stops accepting; its connections drain.
    Remove,
}

/// The difference between two configs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// By name: the running services (in name order), then the added ones (in config
    /// order).
    pub services: Vec<(String, ServiceAction)>,
    /// By address: the removed shared listeners first, then the kept and added ones.
    pub listeners: Vec<(SocketAddr, ListenerAction)>,
    /// `http_keepalive_timeout` changed: every HTTP listener needs a new accept loop.
    pub keepalive_changed: bool,
    /// Keys that changed but take effect only at restart.
    pub restart_only: Vec<&'static str>,
}

/// How many services a plan adds, changes, removes and leaves alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Added.
    pub added: usize,
    /// Updated or moved.
    pub changed: usize,
    /// Removed.
    pub removed: usize,
    /// Unchanged.
    pub unchanged: usize,
}

impl Plan {
    /// The counts of [`Plan::services`], for the reload's log line.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (_, a) in &self.services {
            match a {
                ServiceAction::Unchanged => c.unchanged += 1,
                ServiceAction::Update(_) | ServiceAction::Move(_) => c.changed += 1,
                ServiceAction::Remove => c.removed += 1,
                ServiceAction::Add(_) => c.added += 1,
            }
        }
        c
    }
}

/// Compares the running config `old` with `new`.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let wanted: BTreeMap<&str, &ServiceConfig> = new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let running: BTreeMap<&str, &ServiceConfig> = old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut services = Vec::new();
    for (name, was) in &running {
        let action = match wanted.get(name) {
            None => ServiceAction::Remove,
            Some(now) if *now == *was => ServiceAction::Unchanged,
            Some(now) if now.zk_hosts == was.zk_hosts && now.zk_path == was.zk_path => {
                ServiceAction::Update((*now).clone())
            }
            Some(now) => ServiceAction::Move((*now).clone()),
        };
        services.push((name.to_string(), action));
    }
    let mut added = BTreeSet::new();
    for s in &new.services {
        if !running.contains_key(s.name.as_str()) && added.insert(s.name.as_str()) {
            services.push((s.name.clone(), ServiceAction::Add(s.clone())));
        }
    }

    let keepalive_changed = old.http_keepalive_timeout != new.http_keepalive_timeout;
    let was: BTreeMap<SocketAddr, &HttpListenerConfig> =
        old.http_listeners.iter().map(|l| (l.listen, l)).collect();
    let now: BTreeMap<SocketAddr, &HttpListenerConfig> =
        new.http_listeners.iter().map(|l| (l.listen, l)).collect();
    let mut listeners: Vec<(SocketAddr, ListenerAction)> = was
        .keys()
        .filter(|a| !now.contains_key(a))
        .map(|a| (*a, ListenerAction::Remove))
        .collect();
    for (addr, config) in &now {
        let action = match was.get(addr) {
            Some(old) => ListenerAction::Keep {
                config: (*config).clone(),
                restart: keepalive_changed
                    || old.idle_timeout != config.idle_timeout
                    || old.tcp_keepalive != config.tcp_keepalive,
            },
            None => ListenerAction::Add((*config).clone()),
        };
        listeners.push((*addr, action));
    }

    Plan {
        services,
        listeners,
        keepalive_changed,
        restart_only: restart_only(old, new),
    }
}

/// The top-level keys that changed but take effect only at restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut ignored = Vec::new();
    if new.zk_session_timeout != old.zk_session_timeout {
        ignored.push("zookeeper.session_timeout");
    }
    if new.admin_listen != old.admin_listen {
        ignored.push("admin.listen");
    }
    if new.log.level != old.log.level || new.log.format != old.log.format {
        ignored.push("log");
    }
    if new.state_file != old.state_file {
        ignored.push("state_file");
    }
    if new.file_output != old.file_output {
        ignored.push("file_output");
    }
    ignored
}

#[cfg(test)]
mod tests;
