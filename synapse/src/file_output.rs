//! `file_output`: one JSON file per service with the backends it routes to, for clients that
//! do not go through the proxy. The format is airbnb synapse's `file_output`:
//! `<output_directory>/<service>.json` holds an array of
//! `{"name", "host", "port", "id", "weight", "haproxy_server_options", "labels"}` (`id`: the
//! numeric suffix of the znode name, or null), to which synapse adds `effective_weight` and
//! `backup` (a backup, or demoted by locality: use only when no other backend answers).
//!
//! A file is written when its content changes (so that clients may watch it), through a
//! temporary file renamed over it: readers see the old list or the new one, never a part.
//! A service's file appears with its first table (from ZooKeeper, the state file or the
//! default servers). `*.json` files of services synapse does not route (removed by a reload,
//! or left by an earlier config) are removed, as airbnb synapse does: the directory is
//! synapse's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cache::write_atomically;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::table::RouteTable;

/// Why the output directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot create file_output directory {dir}: {source}")]
pub struct FileOutputError {
    /// The directory.
    pub dir: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Creates `dir` (and its parents) if missing.
pub fn prepare(dir: &Path) -> Result<(), FileOutputError> {
    std::fs::create_dir_all(dir).map_err(|source| FileOutputError {
        dir: dir.to_path_buf(),
        source,
    })
}

/// The numeric suffix of a znode name (`..._0000000007` → 7), as airbnb synapse's `id`.
fn numeric_id(znode: &str) -> Option<u64> {
    znode.rsplit('_').next()?.parse().ok()
}

/// The file content for `table`.
pub fn render(table: &RouteTable) -> Vec<u8> {
    let list: Vec<serde_json::Value> = table
        .backends()
        .iter()
        .map(|b| {
            json!({
                "name": b.node.name,
                "host": b.node.host,
                "port": b.node.port,
                "id": numeric_id(&b.id),
                "weight": b.node.weight,
                "haproxy_server_options": b.node.haproxy_server_options,
                "labels": b.node.labels,
                "effective_weight": b.weight,
                "backup": b.backup,
            })
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_else(|_| b"[]".to_vec())
}

/// Writes the files until `cancel` fires. `installed` is bumped after every table install
/// and every reload.
pub async fn run_writer(
    dir: PathBuf,
    services: Arc<ArcSwap<Vec<Arc<Service>>>>,
    mut installed: watch::Receiver<u64>,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    // What each file holds now, by service name.
    let mut written: HashMap<String, Vec<u8>> = HashMap::new();
    let mut first = true;
    loop {
        let current = services.load_full();
        let mut jobs = Vec::new();
        for s in current.iter() {
            let snapshot = s.snapshot.load();
            if !snapshot.synced() {
                continue;
            }
            let content = render(&snapshot.table);
            if written.get(&s.config.name) != Some(&content) {
                jobs.push((s.config.name.clone(), content));
            }
        }
        let names: Vec<String> = current.iter().map(|s| s.config.name.clone()).collect();
        let purge = first || written.keys().any(|n| !names.contains(n));
        first = false;
        let d = dir.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut results = Vec::new();
            for (name, content) in jobs {
                let r = write_atomically(&d.join(format!("{name}.json")), &content);
                results.push((name, content, r));
            }
            if purge {
                remove_others(&d, &names);
            }
            results
        })
        .await;
        for (name, content, r) in done.unwrap_or_default() {
            metrics.file_output_write(r.is_ok());
            match r {
                Ok(()) => {
                    written.insert(name, content);
                }
                Err(err) => warn!(service = %name, error = %err, "file_output not written"),
            }
        }
        written.retain(|n, _| current.iter().any(|s| &s.config.name == n));
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = installed.changed() => if r.is_err() { return },
        }
    }
}

/// Removes the `*.json` files of `dir` that are not one of `names`.
fn remove_others(dir: &Path, names: &[String]) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(stem) = file.strip_suffix(".json") else {
            continue;
        };
        if file.starts_with('.') || names.iter().any(|n| n == stem) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                info!(file = %entry.path().display(), "file_output: removed the file of a service not routed")
            }
            Err(err) => {
                warn!(file = %entry.path().display(), error = %err, "file_output: cannot remove the file of a service not routed")
            }
        }
    }
}

#[cfg(test)]
mod tests;
