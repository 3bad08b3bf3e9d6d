//! Reading config files: YAML or JSON (by extension) into raw serde structs, with every
//! problem reported at once as `file: key.path: reason`.
//!
//! Each agent keeps a raw, `deny_unknown_fields` mirror of its config and turns it into a
//! validated type. Lists whose elements are independent (services, checks) are deserialized
//! one by one with [`Problems::take`], so that one bad service does not hide the errors of
//! the next one; inside one value, `take` removes each offending key and tries again, so
//! every bad key of every struct level is reported in one pass.
//!
//! The file itself must be a regular file (symlinks to one are fine) of at most
//! [`MAX_FILE_BYTES`]: `-c /dev/zero`, a FIFO or a directory fail at once.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::registry::{RegistryOptions, ZkTls};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// Largest config file read, in bytes (4 MiB). Real configs are a few KiB; the cap keeps a
/// wrong `-c` (a log, a disk image) from being read into memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Most deserialization attempts [`Problems::take`] makes on one value (each one removes a
/// bad key or stands in for one) before it gives up on the rest.
const MAX_ATTEMPTS: usize = 200;

/// Shortest accepted `zookeeper.session_timeout` (1 s).
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest accepted `zookeeper.session_timeout` (5 min). ZooKeeper servers cap the timeout
/// at 20 ticks anyway (40 s by default); beyond the client's 32-bit milliseconds a larger
/// value would silently wrap.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(300);

/// Default `zookeeper.session_timeout` (10 s).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

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
pub struct Problems {
    list: Vec<Problem>,
    /// Key paths whose value [`Problems::take`] refused (and removed or stood in for): later
    /// problems at or under them are consequences, not news.
    refused: Vec<String>,
}

impl Problems {
    /// Records a problem at `path`, unless [`Problems::take`] already refused the value
    /// there (a check of the default or stand-in value would only repeat it).
    pub fn push(&mut self, path: impl Into<String>, reason: impl fmt::Display) {
        let path = path.into();
        let under = |r: &String| {
            path == *r
                || path
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| !r.is_empty() && (rest.starts_with('.') || rest.starts_with('[')))
        };
        if self.refused.iter().any(under) {
            return;
        }
        self.list.push(Problem {
            path,
            reason: reason.to_string(),
        });
    }

    /// Records a problem at `path` and refuses the value there: later problems at or under
    /// `path` are consequences of this one and are dropped.
    pub fn refuse(&mut self, path: &str, reason: impl fmt::Display) {
        self.push(path, reason);
        self.refused.push(path.to_string());
    }

    /// Deserializes `value` (found at key path `path`) into `T`, recording every problem
    /// inside it with its full key path.
    ///
    /// serde stops at the first error, so on an error the offending key is recorded, removed
    /// from `value` and the deserialization tried again (a bounded number of times). When a
    /// required key is missing, or was removed that way (then serde's follow-up "missing
    /// field" is not recorded), a neutral stand-in (`""`, `0`, `[]`, `{}` or `false`, the
    /// first that fits) takes its place, so the rest of the value is still checked; if none
    /// fits, the struct holding the key is removed in turn.
    ///
    /// Returns `Some` when `value` deserializes once the bad keys are gone or stood in for,
    /// so the caller can go on checking the rest: later problems pushed at a refused key are
    /// dropped as repeats, and the recorded problems still fail the config.
    pub fn take<T: DeserializeOwned>(&mut self, path: &str, mut value: Value) -> Option<T> {
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let err = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(v) => return Some(v),
                Err(err) => err,
            };
            let at: Vec<Seg> = err.path().iter().map(Seg::from).collect();
            let reason = err.into_inner().to_string();
            if let Some(key) = missing_field(&reason) {
                let mut field = at.clone();
                field.push(Seg::Key(key.to_string()));
                if !removed.contains(&field) {
                    self.push(join_path(path, &at), reason);
                    self.refused.push(join_path(path, &field));
                    removed.push(field.clone());
                }
                if stand_in::<T>(&mut value, &field) {
                    continue;
                }
            } else {
                let full = join_path(path, &at);
                self.push(full.clone(), reason);
                self.refused.push(full);
            }
            let target = removal_target(&at)?;
            if !remove_at(&mut value, &target) {
                return None;
            }
            self.refused.push(join_path(path, &target));
            removed.push(target);
        }
        self.push(
            path,
            format!("more than {MAX_ATTEMPTS} problems; fix these first"),
        );
        None
    }

    /// `Ok(value)` when no problem was recorded, else the error for `file`.
    pub fn finish<T>(self, file: &Path, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                file: file.to_path_buf(),
                problems: self.list,
            })
        }
    }
}

/// One step of a key path, as [`Problems::take`] walks and edits a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
    /// A step serde could not name (an enum variant, a non-string key): not walkable.
    Opaque,
}

impl From<&serde_path_to_error::Segment> for Seg {
    fn from(s: &serde_path_to_error::Segment) -> Seg {
        match s {
            serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
            _ => Seg::Opaque,
        }
    }
}

/// `prefix` followed by `at`, written `a.b[2].c`.
fn join_path(prefix: &str, at: &[Seg]) -> String {
    let mut out = prefix.to_string();
    for seg in at {
        match seg {
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Opaque => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// The key serde reports missing in a "missing field `x`" message.
fn missing_field(reason: &str) -> Option<&str> {
    reason.strip_prefix("missing field `")?.strip_suffix('`')
}

/// What to remove for an error at `at`: the deepest object key on the walkable part of the
/// path (a bad list element takes its whole list with it, so that later indices keep their
/// meaning). `None` at the root: nothing left to remove.
fn removal_target(at: &[Seg]) -> Option<Vec<Seg>> {
    let walkable = at.iter().position(|s| *s == Seg::Opaque).unwrap_or(at.len());
    let last_key = at[..walkable].iter().rposition(|s| matches!(s, Seg::Key(_)))?;
    Some(at[..=last_key].to_vec())
}

/// Puts the first neutral value `T` accepts at `field` (a required key, missing or whose bad
/// value was removed); false, with the key removed again, when none fits.
fn stand_in<T: DeserializeOwned>(value: &mut Value, field: &[Seg]) -> bool {
    let Some((Seg::Key(key), parents)) = field.split_last() else {
        return false;
    };
    let candidates = [
        Value::String(String::new()),
        Value::from(0),
        Value::Array(Vec::new()),
        Value::Object(serde_json::Map::new()),
        Value::Bool(false),
    ];
    for candidate in candidates {
        let Some(obj) = walk(value, parents).and_then(Value::as_object_mut) else {
            return false;
        };
        obj.insert(key.clone(), candidate);
        match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(_) => return true,
            Err(err) => {
                let at: Vec<Seg> = err.path().iter().map(Seg::from).collect();
                if !at.starts_with(field) {
                    return true;
                }
            }
        }
    }
    remove_at(value, field);
    false
}

/// The value at `path` (keys and indices) inside `value`.
fn walk<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut here = value;
    for seg in path {
        here = match seg {
            Seg::Key(k) => here.as_object_mut()?.get_mut(k)?,
            Seg::Index(i) => here.as_array_mut()?.get_mut(*i)?,
            Seg::Opaque => return None,
        };
    }
    Some(here)
}

/// Removes the key at `target` (which ends with a key) from `value`; false if not found.
fn remove_at(value: &mut Value, target: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = target.split_last() else {
        return false;
    };
    walk(value, parents)
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove(last))
        .is_some()
}

/// Reads a YAML (`.yaml`, `.yml`) or JSON (`.json`) file into a JSON value.
///
/// Only a regular file (or a symlink to one) of at most [`MAX_FILE_BYTES`] is read.
pub fn read_document(file: &Path) -> Result<serde_json::Value, ConfigError> {
    let fail = |reason: String| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            reason,
        }],
    };
    let text = read_limited(file).map_err(fail)?;
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

/// The text of `file`, refusing anything but a regular file of at most [`MAX_FILE_BYTES`].
fn read_limited(file: &Path) -> Result<String, String> {
    // Checked on the path first, because opening a FIFO blocks until a writer shows up.
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read file: {e}"))?;
    check_file_type(&meta)?;
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot read file: {e}"))?;
    // Checked again on the open handle: the path may have been replaced in between.
    let meta = opened.metadata().map_err(|e| format!("cannot read file: {e}"))?;
    check_file_type(&meta)?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| format!("not valid UTF-8: {e}"))
}

fn too_big() -> String {
    format!(
        "file is larger than the {} MiB limit for a config file",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// Accepts a regular file within the size cap.
fn check_file_type(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return if meta.len() > MAX_FILE_BYTES {
            Err(too_big())
        } else {
            Ok(())
        };
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(format!(
        "not a regular file ({kind}): give the path of a config file"
    ))
}

/// Reads `file` and turns it into a validated config with `validate`, which records every
/// problem in the given [`Problems`] (and returns `None` only after recording one).
pub fn load<T>(
    file: &Path,
    validate: impl FnOnce(serde_json::Value, &mut Problems) -> Option<T>,
) -> Result<T, ConfigError> {
    let mut doc = read_document(file)?;
    let mut p = Problems::default();
    env::expand(&mut doc, &mut p, &|name| std::env::var(name).ok());
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
#[serde(
    untagged,
    expecting = "not a connect string \"host:port,...[/chroot]\" nor a list of \"host:port\""
)]
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

/// Longest service name or instance id, in bytes (the longest DNS name).
pub const MAX_NAME_BYTES: usize = 253;

/// Validates a service name (`at.name`): 1 to [`MAX_NAME_BYTES`] letters, digits, `-`, `_`,
/// `.`.
pub fn check_service_name(p: &mut Problems, at: &str, name: &str) {
    if let Err(e) = check_name(name) {
        p.push(format!("{at}.name"), e);
    }
}

/// Checks a name that ends up in ZooKeeper node names, payloads, HAProxy server names and
/// metrics labels: 1 to [`MAX_NAME_BYTES`] ASCII letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{:?} must be 1 to {MAX_NAME_BYTES} bytes long",
            shorten(name)
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "{:?} must be made of ASCII letters, digits, '-', '_', '.'",
            shorten(name)
        ));
    }
    Ok(())
}

/// `s` cut to 64 characters, so that a hostile value cannot flood an error message.
fn shorten(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The admin listen address from an optional `admin:` section, or `default` (refused like a
/// service listen address: see [`parse_listen`]).
pub fn admin_listen(p: &mut Problems, admin: Option<RawAdminConfig>, default: SocketAddr) -> SocketAddr {
    match admin.and_then(|a| a.listen) {
        None => default,
        Some(text) => parse_listen(&text).unwrap_or_else(|e| {
            p.push("admin.listen", e);
            default
        }),
    }
}

/// `upgrade_socket`: an absolute path that fits a unix socket address (at most 107 bytes).
pub fn upgrade_socket(text: &str, p: &mut Problems) -> Option<PathBuf> {
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        p.push("upgrade_socket", "must be an absolute path");
        None
    } else if text.len() > 107 {
        p.push(
            "upgrade_socket",
            "longer than a unix socket path may be (107 bytes)",
        );
        None
    } else {
        Some(path)
    }
}

/// Longest duration any key accepts (24 h): far beyond any sensible timeout or interval,
/// and far from the overflows of `Instant + Duration` that an absurd value would cause.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"1.5s"` into a [`Duration`] of at most
/// [`MAX_DURATION`].
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
    let d =
        Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("invalid duration {text:?}: longer than 24h"));
    }
    Ok(d)
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
    /// `tracing` filter directive, e.g. `info` or `synapse=debug,info`, checked at load
    /// time by [`check_log_level`]. Default `info`; `RUST_LOG` wins when set.
    #[serde(default = "default_level", deserialize_with = "log_level")]
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

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    check_log_level(&level).map_err(serde::de::Error::custom)?;
    Ok(level)
}

/// Checks a `log.level` directive: what `tracing_subscriber::EnvFilter` parses, and also
/// every comma-separated directive without `=` must be a level (`off`, `error`, `warn`,
/// `info`, `debug`, `trace`): `EnvFilter` would take a typo like `verbose` as a target name
/// and silently log nothing. (A bare target is written `target=trace`.)
pub fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("empty log level: use off, error, warn, info, debug or trace".into());
    }
    if !level.is_ascii() {
        // Targets and levels are ASCII; tracing-subscriber's parser also panics on some
        // other characters (it slices inside them).
        return Err(format!(
            "invalid log level {:?}: only ASCII characters are allowed",
            shorten(level)
        ));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[']) && directive.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "invalid log level {:?}: {:?} is not a level (off, error, warn, info, debug, \
                 trace) nor a target=level directive",
                shorten(level),
                shorten(directive)
            ));
        }
    }
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("invalid log level {:?}: {e}", shorten(level)))
}

/// `zookeeper:` section, shared by both agents.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZookeeperConfig {
    /// Requested session timeout, in [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`].
    #[serde(default, deserialize_with = "session_timeout")]
    session_timeout: Option<Duration>,
    /// See [`ZkSessionConfig::splay`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub splay: Option<Duration>,
    /// See [`ZkSessionConfig::read_only`].
    pub read_only: Option<bool>,
    /// See [`ZkSessionConfig::follow_reconfig`].
    pub follow_reconfig: Option<bool>,
    /// See [`ZkSessionConfig::tls`].
    pub tls: Option<RawZkTls>,
}

impl RawZookeeperConfig {
    /// The session timeout to request; default [`DEFAULT_SESSION_TIMEOUT`].
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout.unwrap_or(DEFAULT_SESSION_TIMEOUT)
    }
}

/// Default `zookeeper.splay` (5 s; the delay is also bounded by half the session timeout).
pub const DEFAULT_SPLAY: Duration = Duration::from_secs(5);

/// `zookeeper.tls`: reach the ensemble over TLS (its `secureClientPort`s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZkTls {
    /// PEM file of the CA(s) that sign the servers' certificates.
    pub ca_file: PathBuf,
    /// PEM certificate (chain) presented to servers that ask for one (`ssl.clientAuth`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// The `zookeeper:` keys that shape how an agent's sessions treat a shared ensemble, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkSessionConfig {
    /// Upper bound of the random delay before the steps a whole fleet takes after the same
    /// event (a new session after an expiry or outage, a re-list after a reconnection), at
    /// most half the session timeout; `0s` disables it. Default [`DEFAULT_SPLAY`].
    pub splay: Duration,
    /// Accept read-only sessions from servers cut off from their quorum, so membership
    /// reads go on in a minority partition. synapse only (default true); refused in nerve,
    /// which writes.
    pub read_only: bool,
    /// Follow the ensemble's dynamic configuration (`/zookeeper/config`): new sessions use
    /// the servers it lists. Default true (ignored with `tls`: the configuration lists
    /// plaintext ports).
    pub follow_reconfig: bool,
    /// TLS material, read at load. Default none (plaintext).
    pub tls: Option<ZkTls>,
}

impl ZkSessionConfig {
    /// Validates the session keys of `zookeeper:` (`read_only_default`: the agent's default;
    /// `None`: the agent writes and refuses `read_only: true`).
    pub fn validate(
        p: &mut Problems,
        splay: Option<Duration>,
        read_only: Option<bool>,
        follow_reconfig: Option<bool>,
        tls: Option<&RawZkTls>,
        read_only_default: Option<bool>,
    ) -> ZkSessionConfig {
        let read_only = match (read_only_default, read_only) {
            (None, Some(true)) => {
                p.push(
                    "zookeeper.read_only",
                    "nerve writes its nodes: a read-only session cannot (only synapse may use read_only: true)",
                );
                false
            }
            (None, _) => false,
            (Some(default), r) => r.unwrap_or(default),
        };
        let tls = tls.and_then(|t| {
            let pair = match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                (Some(_), None) => {
                    p.push("zookeeper.tls.key_file", "required with cert_file");
                    return None;
                }
                (None, Some(_)) => {
                    p.push("zookeeper.tls.cert_file", "required with key_file");
                    return None;
                }
            };
            match ZkTls::from_files(&t.ca_file, pair) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    p.push("zookeeper.tls", e);
                    None
                }
            }
        });
        ZkSessionConfig {
            splay: splay.unwrap_or(DEFAULT_SPLAY),
            read_only,
            follow_reconfig: follow_reconfig.unwrap_or(true),
            tls,
        }
    }

    /// Sets these keys on registry options.
    pub fn apply(&self, options: &mut RegistryOptions) {
        options.splay = self.splay;
        options.read_only = self.read_only;
        options.follow_reconfig = self.follow_reconfig;
        options.tls = self.tls.clone();
    }
}

/// Deserializes an optional session timeout, refusing one outside
/// [`MIN_SESSION_TIMEOUT`]..=[`MAX_SESSION_TIMEOUT`].
pub fn session_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let t = opt_duration(d)?;
    match t {
        Some(t) if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&t) => Err(
            serde::de::Error::custom(format!("session timeout {t:?} is out of range: use 1s to 5m")),
        ),
        _ => Ok(t),
    }
}

/// `admin:` section, shared by both agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminConfig {
    /// Listen address of the admin HTTP server.
    pub listen: Option<String>,
}

/// Parses a listen address: `ip:port` (`[v6]:port`), or a bare port meaning
/// `127.0.0.1:port`. Port 0 is refused: it would bind a random port nobody can reach.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let addr = match text.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => text.parse().map_err(|_| {
            format!(
                "invalid listen address {:?}: expected ip:port or a port",
                shorten(text)
            )
        })?,
    };
    if addr.port() == 0 {
        return Err(format!("invalid listen address {text:?}: port 0 is not allowed"));
    }
    Ok(addr)
}

/// True when `a` and `b` cannot both be bound: same port, and the same address or a
/// wildcard covering the other one. `0.0.0.0` covers every IPv4 address; `[::]` covers
/// every address of both families (Linux binds it dual-stack by default); an IPv4-mapped
/// IPv6 address is its IPv4 address.
pub fn listen_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let v6_any = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    let v4_any_over =
        |any: IpAddr, other: IpAddr| matches!(any, IpAddr::V4(v4) if v4.is_unspecified()) && other.is_ipv4();
    x == y || v6_any(x) || v6_any(y) || v4_any_over(x, y) || v4_any_over(y, x)
}

/// Checks a ZooKeeper connect string: `host:port[,host:port...][/chroot]`, where `host`
/// is an IP address (IPv6 bracketed or not) or a host name (see
/// [`crate::codec::check_host`]) and the chroot a valid path ([`check_zk_path`]).
pub fn check_zk_hosts(text: &str) -> Result<(), String> {
    let (hosts, chroot) = match text.find('/') {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    if hosts.is_empty() {
        return Err("empty ZooKeeper connect string".into());
    }
    for h in hosts.split(',') {
        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
            let host_ok = match host.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => crate::codec::check_host(host).is_ok(),
            };
            host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "invalid ZooKeeper server {:?}: expected host:port",
                shorten(h)
            ));
        }
    }
    if let Some(c) = chroot {
        check_zk_path(c).map_err(|e| format!("chroot: {e}"))?;
    }
    Ok(())
}

/// Checks an absolute ZooKeeper path: starts with `/`, no empty segment, no trailing `/`,
/// no `.` or `..` segment, and none of the characters ZooKeeper refuses (see
/// [`zk_char_allowed`]).
pub fn check_zk_path(path: &str) -> Result<(), String> {
    let bad = !path.starts_with('/')
        || path.len() > 1 && path.ends_with('/')
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..");
    if bad {
        return Err(format!(
            "invalid ZooKeeper path {:?}: expected an absolute path like /services/web",
            shorten(path)
        ));
    }
    if let Some(c) = path.chars().find(|c| !zk_char_allowed(*c)) {
        return Err(format!(
            "invalid ZooKeeper path {:?}: ZooKeeper refuses the character {:?} (U+{:04X})",
            shorten(path),
            c,
            u32::from(c)
        ));
    }
    Ok(())
}

/// Whether ZooKeeper accepts `c` in a path (its `PathUtils.validatePath`): not U+0000 to
/// U+001F, U+007F to U+009F, U+D800 to U+F8FF or U+FFF0 to U+FFFF. ZooKeeper checks UTF-16
/// units, so characters beyond U+FFFF (surrogate pairs) are refused as well.
pub fn zk_char_allowed(c: char) -> bool {
    !matches!(u32::from(c), 0..=0x1F | 0x7F..=0x9F | 0xD800..=0xF8FF | 0xFFF0..)
}

/// Where a service's nodes really live, to tell whether two services share a path: the
/// ensemble (its servers, sorted) and the absolute path (chroot + `zk_path`).
pub fn zk_location_key(zk_hosts: &str, zk_path: &str) -> (Vec<String>, String) {
    let (hosts, chroot) = match zk_hosts.find('/') {
        Some(i) => (&zk_hosts[..i], &zk_hosts[i..]),
        None => (zk_hosts, ""),
    };
    let mut servers: Vec<String> = hosts.split(',').map(str::to_ascii_lowercase).collect();
    servers.sort();
    servers.dedup();
    let path = match zk_path {
        "/" if !chroot.is_empty() => chroot.to_string(),
        _ => format!("{chroot}{zk_path}"),
    };
    (servers, path)
}

mod env;

#[cfg(test)]
mod tests;
