//! The state file: the backends synapse last knew from ZooKeeper, per service, so that a
//! synapse started while ZooKeeper is unreachable routes from them at once.
//!
//! Format (JSON, one file per synapse):
//!
//! ```json
//! {"version": 1, "written_at_unix_ms": 1700000000000,
//!  "services": {"web": {"zk_hosts": "zk1:2181", "zk_path": "/services/web",
//!                       "confirmed_at_unix_ms": 1700000000000,
//!                       "members": [{"id": "i-1_web_0000000007",
//!                                    "node": {"host": "10.0.0.1", "port": 8080, ...}}]}}}
//! ```
//!
//! `node` is the node payload as nerve writes it (read back with the same codec).
//! `confirmed_at_unix_ms` is when ZooKeeper last vouched for the members: the last write
//! while the service's session was connected and its table came from ZooKeeper's current
//! listing. An entry is used at start only when it is younger than `state_file_ttl`, its
//! ZooKeeper location is the service's, and it has members.
//!
//! Writes go to a temporary file in the same directory, flushed to disk, then renamed over
//! the file: a reader (or a crash) sees the old file or the new one, never a part. They
//! happen after table changes, at most once per [`MIN_INTERVAL`], every [`REFRESH`] (or a
//! quarter of the TTL, if shorter) to renew the confirmation times, and once at shutdown.
//! A failed write is logged (once per [`WARN_EVERY`]) and counted, and routing goes on.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use common::codec::{self, Node};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{ServiceConfig, StateFile};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::table::SyncSource;

/// Least time between two writes.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time between two writes (renewing the confirmation times).
pub const REFRESH: Duration = Duration::from_secs(60);
/// At most one warning about failed writes per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The format written and read.
const VERSION: u32 = 1;

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading failed (a missing file is not an error: see [`load`]).
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a state file of this version.
    #[error("state file {path} is not usable: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write state file {path}: {source}")]
    Write {
        /// The file (or its temporary file).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct FileDoc {
    version: u32,
    written_at_unix_ms: u64,
    services: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    zk_hosts: String,
    zk_path: String,
    confirmed_at_unix_ms: u64,
    members: Vec<FileMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileMember {
    id: String,
    node: serde_json::Value,
}

/// One service's entry, read back.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The ZooKeeper connect string it came from.
    pub zk_hosts: String,
    /// The path it came from.
    pub zk_path: String,
    /// When ZooKeeper last vouched for the members (ms since the Unix epoch).
    pub confirmed_at_unix_ms: u64,
    /// `(znode id, node)`; members that no longer decode are dropped.
    pub members: Vec<(String, Node)>,
}

/// Why an entry is not used.
enum Unusable {
    Missing,
    Elsewhere,
    Expired(Duration),
}

/// The state file as read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    entries: HashMap<String, Entry>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads the state file; a missing one is empty.
pub fn load(path: &Path) -> Result<Loaded, CacheError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(source) => {
            return Err(CacheError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let format = |reason: String| CacheError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let doc: FileDoc = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    if doc.version != VERSION {
        return Err(format(format!("version {} (expected {VERSION})", doc.version)));
    }
    let mut entries = HashMap::new();
    for (name, e) in doc.services {
        let mut members = Vec::with_capacity(e.members.len());
        for m in e.members {
            match codec::decode(&m.id, m.node.to_string().as_bytes()) {
                Ok(node) => members.push((m.id, node)),
                Err(err) => {
                    warn!(service = %name, zk.node = %m.id, error = %err, "state file: skipping a member that does not decode")
                }
            }
        }
        entries.insert(
            name,
            Entry {
                zk_hosts: e.zk_hosts,
                zk_path: e.zk_path,
                confirmed_at_unix_ms: e.confirmed_at_unix_ms,
                members,
            },
        );
    }
    Ok(Loaded { entries })
}

impl Loaded {
    /// The entry of `service` if it is usable at `now` with `ttl` (logged either way).
    pub fn usable(&self, service: &ServiceConfig, ttl: Duration, now: SystemTime) -> Option<&Entry> {
        let name = &service.name;
        match self.check(service, ttl, now) {
            Ok(e) => {
                info!(service = %name, backends = e.members.len(), "state file: routing from its entry until ZooKeeper answers");
                Some(e)
            }
            Err(Unusable::Missing) => None,
            Err(Unusable::Elsewhere) => {
                info!(service = %name, "state file: entry is for another ZooKeeper path; not used");
                None
            }
            Err(Unusable::Expired(age)) => {
                info!(service = %name, ?age, ?ttl, "state file: entry older than state_file_ttl; not used");
                None
            }
        }
    }

    fn check(&self, service: &ServiceConfig, ttl: Duration, now: SystemTime) -> Result<&Entry, Unusable> {
        let e = self.entries.get(&service.name).ok_or(Unusable::Missing)?;
        if e.zk_hosts != service.zk_hosts || e.zk_path != service.zk_path {
            return Err(Unusable::Elsewhere);
        }
        if e.members.is_empty() {
            return Err(Unusable::Missing);
        }
        let age = Duration::from_millis(unix_ms(now).saturating_sub(e.confirmed_at_unix_ms));
        if age > ttl {
            return Err(Unusable::Expired(age));
        }
        Ok(e)
    }

    /// Confirmation times of the usable entries, by service (the writer carries them on
    /// until ZooKeeper confirms again).
    fn confirmed(&self, services: &[ServiceConfig], ttl: Duration, now: SystemTime) -> HashMap<String, u64> {
        services
            .iter()
            .filter_map(|s| {
                let e = self.check(s, ttl, now).ok()?;
                Some((s.name.clone(), e.confirmed_at_unix_ms))
            })
            .collect()
    }
}

/// The writer's memory, and the document it writes.
#[derive(Debug)]
struct Writer {
    path: PathBuf,
    /// When ZooKeeper last vouched for each service's members.
    confirmed: HashMap<String, u64>,
    last_write: Option<Instant>,
    last_warning: Option<Instant>,
    metrics: Metrics,
}

impl Writer {
    /// The document for the current services at `now`.
    fn document(&mut self, services: &[Arc<Service>], now: SystemTime) -> FileDoc {
        let now_ms = unix_ms(now);
        let mut out = BTreeMap::new();
        for s in services {
            let snapshot = s.snapshot.load_full();
            let known = &snapshot.known;
            if known.members.is_empty() {
                continue;
            }
            let connected = s.session.as_ref().is_some_and(|z| z.status().connected);
            let name = &s.config.name;
            if known.current && connected && snapshot.source == SyncSource::Zookeeper {
                self.confirmed.insert(name.clone(), now_ms);
            }
            let Some(&confirmed) = self.confirmed.get(name) else {
                continue;
            };
            let members = known
                .members
                .iter()
                .map(|(id, node)| FileMember {
                    id: id.clone(),
                    node: serde_json::from_slice(&codec::encode(node)).unwrap_or(serde_json::Value::Null),
                })
                .collect();
            out.insert(
                name.clone(),
                FileEntry {
                    zk_hosts: s.config.zk_hosts.clone(),
                    zk_path: s.config.zk_path.clone(),
                    confirmed_at_unix_ms: confirmed,
                    members,
                },
            );
        }
        FileDoc {
            version: VERSION,
            written_at_unix_ms: now_ms,
            services: out,
        }
    }

    async fn write(&mut self, services: &[Arc<Service>]) {
        let doc = self.document(services, SystemTime::now());
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
            write_atomically(&path, &bytes)
        })
        .await;
        self.last_write = Some(Instant::now());
        let result = match result {
            Ok(r) => r,
            Err(join) => Err(CacheError::Write {
                path: self.path.clone(),
                source: std::io::Error::other(join.to_string()),
            }),
        };
        self.metrics.state_file_write(result.is_ok());
        match result {
            Ok(()) => debug!(path = %self.path.display(), "state file written"),
            Err(err) => {
                if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    warn!(error = %err, "state file not written; routing goes on");
                    self.last_warning = Some(Instant::now());
                }
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory (flushed to
/// disk, then renamed over `path`), so that readers never see a partial file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CacheError::Write { path: p, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(bytes).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err(path))
}

/// Keeps the state file up to date until `cancel` fires, then writes it once more.
/// `installed` is bumped after every table install; `loaded` is what start read (its
/// confirmation times carry on).
pub async fn run_writer(
    file: StateFile,
    services: Arc<ArcSwap<Vec<Arc<Service>>>>,
    mut installed: watch::Receiver<u64>,
    loaded: &Loaded,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let configs: Vec<ServiceConfig> = services.load().iter().map(|s| s.config.clone()).collect();
    let mut w = Writer {
        path: file.path.clone(),
        confirmed: loaded.confirmed(&configs, file.ttl, SystemTime::now()),
        // Not at once: the watchers seed their tables from the file first, and a write
        // before that would drop their entries.
        last_write: Some(Instant::now()),
        last_warning: None,
        metrics,
    };
    let refresh = (file.ttl / 4).clamp(MIN_INTERVAL, REFRESH);
    loop {
        let next_refresh = w.last_write.unwrap_or_else(Instant::now) + refresh;
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = installed.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(next_refresh.into()) => {}
        }
        if let Some(t) = w.last_write {
            let ready = t + MIN_INTERVAL;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(ready.into()) => {}
            }
        }
        // A change during the pause above is in this write.
        installed.borrow_and_update();
        w.write(&services.load()).await;
    }
    w.write(&services.load()).await;
}

#[cfg(test)]
mod tests;
