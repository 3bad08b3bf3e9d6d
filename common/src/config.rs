//! Reading config files: YAML or JSON (by extension) into raw serde structs, with every
//! problem reported at once as `file: key.path: reason`.
//!
//! Each agent keeps a raw, `deny_unknown_fields` mirror of its config and turns it into a
//! validated type. Lists whose elements are independent (services, checks) are deserialized
//! one by one with [`Problems::take`], so that one bad service does not hide the errors of
//! the next one.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A config file that could not be used: every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// What is wrong, one entry per key.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", self.file.display(), p)?;
        }
        Ok(())
    }
}

/// One problem at one key path, e.g. `services[2].checks[0].timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path from the document root; empty for the document itself.
    pub path: String,
    /// Why the value was refused.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Collects problems while a raw config is validated.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, reason: impl fmt::Display) {
        self.0.push(Problem {
            path: path.into(),
            reason: reason.to_string(),
        });
    }

    /// Deserializes `value` (found at key path `path`) into `T`, recording the first problem
    /// inside it with its full key path.
    pub fn take<T: DeserializeOwned>(&mut self, path: &str, value: serde_json::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let inner = err.path().to_string();
                let full = match (path.is_empty(), inner == ".") {
                    (_, true) => path.to_string(),
                    (true, false) => inner,
                    (false, false) if inner.starts_with('[') => format!("{path}{inner}"),
                    (false, false) => format!("{path}.{inner}"),
                };
                self.push(full, err.into_inner());
                None
            }
        }
    }

    /// `Ok(value)` when no problem was recorded, else the error for `file`.
    pub fn finish<T>(self, file: &Path, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                file: file.to_path_buf(),
                problems: self.0,
            })
        }
    }
}

/// Reads a YAML (`.yaml`, `.yml`) or JSON (`.json`) file into a JSON value.
pub fn read_document(file: &Path) -> Result<serde_json::Value, ConfigError> {
    let fail = |reason: String| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            reason,
        }],
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read file: {e}")))?;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "json" => serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}"))),
        "yaml" | "yml" => serde_norway::from_str(&text).map_err(|e| fail(format!("not valid YAML: {e}"))),
        _ => Err(fail(format!(
            "unknown file extension {ext:?}: use .yaml, .yml or .json"
        ))),
    }
}

/// Reads `file` and turns it into a validated config with `validate`, which records every
/// problem in the given [`Problems`] (and returns `None` only after recording one).
pub fn load<T>(
    file: &Path,
    validate: impl FnOnce(serde_json::Value, &mut Problems) -> Option<T>,
) -> Result<T, ConfigError> {
    let doc = read_document(file)?;
    let mut p = Problems::default();
    let config = validate(doc, &mut p);
    match p.finish(file, config)? {
        Some(c) => Ok(c),
        None => Err(ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                path: String::new(),
                reason: "invalid config".into(),
            }],
        }),
    }
}

/// `zk_hosts`: a connect string, or (airbnb nerve style) a list of `host:port`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ZkHosts {
    /// `host:port,host:port[/chroot]`.
    One(String),
    /// `[host:port, ...]`, joined with commas.
    Many(Vec<String>),
}

/// Validates a service's `zk_hosts` and `zk_path` (keys under `at`); returns the connect
/// string.
pub fn zk_location(p: &mut Problems, at: &str, hosts: ZkHosts, path: &str) -> String {
    let hosts = match hosts {
        ZkHosts::One(h) => h,
        ZkHosts::Many(list) => list.join(","),
    };
    if let Err(e) = check_zk_hosts(&hosts) {
        p.push(format!("{at}.zk_hosts"), e);
    }
    if let Err(e) = check_zk_path(path) {
        p.push(format!("{at}.zk_path"), e);
    }
    hosts
}

/// Validates a service name (`at.name`): non-empty, letters, digits, `-`, `_`, `.`.
pub fn check_service_name(p: &mut Problems, at: &str, name: &str) {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        p.push(
            format!("{at}.name"),
            format!("{name:?} must be non-empty, made of letters, digits, '-', '_', '.'"),
        );
    }
}

/// The admin listen address from an optional `admin:` section, or `default`.
pub fn admin_listen(p: &mut Problems, admin: Option<RawAdminConfig>, default: SocketAddr) -> SocketAddr {
    match admin.and_then(|a| a.listen) {
        None => default,
        Some(text) => parse_listen(&text).unwrap_or_else(|e| {
            p.push("admin.listen", e);
            default
        }),
    }
}

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"1.5s"` into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number and a unit, like \"250ms\" or \"2s\"")
    })?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("invalid duration {text:?}: missing unit (ms, s, m or h)")),
        u => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {u:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Serde adapter for `Option<Duration>`.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log:` section, shared by both agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `synapse=debug,info`. Default `info`;
    /// `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_level() -> String {
    "info".to_string()
}

/// `admin:` section, shared by both agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminConfig {
    /// Listen address of the admin HTTP server.
    pub listen: Option<String>,
}

/// Parses a listen address: `host:port`, or a bare port meaning `127.0.0.1:port`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("invalid listen address {text:?}: expected ip:port or a port"))
}

/// Checks a ZooKeeper connect string: `host:port[,host:port...][/chroot]`.
pub fn check_zk_hosts(text: &str) -> Result<(), String> {
    let (hosts, chroot) = match text.find('/') {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    if hosts.is_empty() {
        return Err("empty ZooKeeper connect string".into());
    }
    for h in hosts.split(',') {
        let ok = h
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("invalid ZooKeeper server {h:?}: expected host:port"));
        }
    }
    if let Some(c) = chroot {
        check_zk_path(c)?;
    }
    Ok(())
}

/// Checks an absolute ZooKeeper path: starts with `/`, no empty segment, no trailing `/`.
pub fn check_zk_path(path: &str) -> Result<(), String> {
    let bad = !path.starts_with('/')
        || path.len() > 1 && path.ends_with('/')
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..");
    if bad {
        Err(format!(
            "invalid ZooKeeper path {path:?}: expected an absolute path like /services/web"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
