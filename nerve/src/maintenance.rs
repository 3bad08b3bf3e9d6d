//! The operator's state: per service `disable` / `enable[?force=true]` / `weight/N`, and a
//! global `disable` / `enable`, set through the admin API (`PUT`/`POST` only) or `nerve ctl`,
//! kept in a small state file (replaced atomically) so it survives a restart, and kept in
//! memory across a reload.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::desired::{Operator, State};
use crate::service::ServiceHandle;

/// The services currently running (replaced on reload).
pub type Services = Arc<RwLock<Vec<ServiceHandle>>>;

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Persisted {
    /// Every service disabled.
    pub disabled: bool,
    /// Per service name. A service without an entry has the default (enabled, not forced,
    /// configured weight).
    pub services: BTreeMap<String, Operator>,
}

/// Why an operator action failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// No such service.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// The state file could not be written (the change is applied, but would not survive a
    /// restart).
    #[error("cannot write the state file {file}: {source}")]
    Save {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The operator's state and the services it applies to.
#[derive(Debug)]
pub struct Maintenance {
    services: Services,
    state: Mutex<Persisted>,
    file: Option<PathBuf>,
}

impl Maintenance {
    /// Loads the state file (a missing file is an empty state; an unreadable one is logged
    /// and ignored: the services then start enabled).
    pub fn new(services: Services, file: Option<PathBuf>) -> Maintenance {
        let state = file.as_deref().map(load).unwrap_or_default();
        if state != Persisted::default() {
            info!(?state, "operator state restored from the state file");
        }
        Maintenance {
            services,
            state: Mutex::new(state),
            file,
        }
    }

    /// The running services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// A copy of the operator state.
    pub fn snapshot(&self) -> Persisted {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The operator state service `name` runs with (the global disable folded in).
    pub fn effective(&self, name: &str) -> Operator {
        let state = self.snapshot();
        let mut op = state.services.get(name).cloned().unwrap_or_default();
        op.disabled |= state.disabled;
        op
    }

    /// Pushes the effective operator state to every running service (those whose state
    /// does not change are not woken).
    pub fn apply(&self) {
        let services = self.services.read().unwrap_or_else(|p| p.into_inner());
        for s in services.iter() {
            let op = self.effective(&s.config.name);
            s.operator.send_if_modified(|o| {
                if *o == op {
                    return false;
                }
                *o = op;
                true
            });
        }
    }

    /// Changes the state of service `name` (or the global one, `None`), applies and saves it.
    pub fn update(
        &self,
        name: Option<&str>,
        change: impl FnOnce(&mut Persisted),
    ) -> Result<(), MaintenanceError> {
        if let Some(name) = name {
            let known = self
                .services
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|s| s.config.name == name);
            if !known {
                return Err(MaintenanceError::UnknownService(name.to_string()));
            }
        }
        let saved = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut state);
            state.services.retain(|_, o| *o != Operator::default());
            state.clone()
        };
        info!(service = name.unwrap_or("*"), state = ?saved, "operator state changed");
        self.apply();
        self.save(&saved)
    }

    fn save(&self, state: &Persisted) -> Result<(), MaintenanceError> {
        let Some(file) = &self.file else { return Ok(()) };
        let body = serde_json::to_vec_pretty(state).unwrap_or_default();
        crate::report::write_atomic(file, &body).map_err(|source| MaintenanceError::Save {
            file: file.clone(),
            source,
        })
    }

    /// Waits until every reporter of service `name` (every service for `None`) has written a
    /// state other than "available" (the node is gone or marked unavailable) and the
    /// service's disable sequence (hooks, `min_disable_time`) is over, up to `wait`. True
    /// when reached.
    pub async fn wait_down(&self, name: Option<&str>, wait: Duration) -> bool {
        let services: Vec<ServiceHandle> = self
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| name.is_none_or(|n| s.config.name == n))
            .cloned()
            .collect();
        let all = async {
            for s in services {
                for mut r in s.reports.iter().map(|r| r.status.clone()) {
                    let down =
                        |s: &crate::report::ReportStatus| !matches!(s.applied, Some(State::Available { .. }));
                    // An error: the reporter ended (its service stopped, deregistered).
                    let _ = r.wait_for(down).await;
                }
                let mut drain = s.drain.clone();
                let _ = drain.wait_for(crate::hooks::DrainStatus::done).await;
            }
        };
        tokio::time::timeout(wait, all).await.is_ok()
    }
}

fn load(file: &std::path::Path) -> Persisted {
    match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(state) => state,
            Err(e) => {
                warn!(file = %file.display(), error = %e, "the state file is not valid; starting with every service enabled");
                Persisted::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
        Err(e) => {
            warn!(file = %file.display(), error = %e, "cannot read the state file; starting with every service enabled");
            Persisted::default()
        }
    }
}

/// Parses the `wait` query parameter (a duration like `5s`, at most 5 minutes).
pub fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, String> {
    match query_param(query, "wait") {
        None => Ok(None),
        Some(v) => {
            let d = common::config::parse_duration(&v).map_err(|e| format!("wait: {e}"))?;
            if d > Duration::from_secs(300) {
                return Err("wait: at most 5m".to_string());
            }
            Ok(Some(d))
        }
    }
}

/// The value of `key` in a query string (`a=1&b=2`), if present.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests;
