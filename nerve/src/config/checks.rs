//! The `checks[]` of a service: raw flat struct → validated [`CheckConfig`].
//!
//! One flat raw struct for every check type (tagged enums lose the key path of an inner
//! error); keys that do not belong to the check's type are refused by name.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::config::{self as cc, Problems};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use serde::Deserialize;

/// Default time allowed for one run of a check (1 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Shortest accepted `interval` / `check_interval` (10 ms).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One health check, with the service's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Label in metrics (`check`), logs and `/status`: the `name` key, else
    /// `<index>_<type>` (`0_tcp`). Unique within the service.
    pub name: String,
    /// Host to check (default: the service's). For `exec`, passed as `NERVE_HOST`.
    pub host: String,
    /// Port to check (default: the service's). For `exec`, passed as `NERVE_PORT`.
    pub port: u16,
    /// Time allowed for one run, connect included. Default 1 s.
    pub timeout: Duration,
    /// Time between the starts of two runs, before jitter (±10 %). Default: the service's
    /// `check_interval` (1 s).
    pub interval: Duration,
    /// Consecutive successes before the check is up (also at start). Default: the
    /// service's `rise` (2).
    pub rise: NonZeroU32,
    /// Consecutive failures before the check is down. Default: the service's `fall` (2).
    pub fall: NonZeroU32,
    /// What to check.
    pub kind: CheckKind,
}

/// The kind of a check and its type-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// TCP connect succeeds; optionally `send` bytes, then `expect` bytes in the answer.
    Tcp {
        /// Sent once connected. Default: nothing.
        send: Option<Vec<u8>>,
        /// Must appear in the first bytes received (the checker reads at most 4 KiB).
        /// Default: nothing is read.
        expect: Option<Vec<u8>>,
    },
    /// An HTTP/1.1 request (TLS when `tls` is set: type `https`).
    Http(HttpCheck),
    /// A command; exit status 0 is healthy.
    Exec(ExecCheck),
    /// Redis `PING` answered `PONG` (after `AUTH` when a password is set).
    Redis {
        /// ACL user name for `AUTH` (Redis 6+). Default: none (`AUTH <password>`).
        username: Option<String>,
        /// Password for `AUTH`. Default: none (no `AUTH`).
        password: Option<String>,
    },
    /// `grpc.health.v1.Health/Check` over HTTP/2 (h2c, or TLS when `tls` is set).
    Grpc {
        /// Service name asked about; empty (the default) asks about the server as a whole.
        service: String,
        /// TLS settings, when `tls: true`.
        tls: Option<TlsConfig>,
    },
}

impl CheckKind {
    /// The check's type as written in the config (`tcp`, `http`, `https`, `exec`, `redis`,
    /// `grpc`).
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http(h) if h.tls.is_some() => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Exec(_) => "exec",
            CheckKind::Redis { .. } => "redis",
            CheckKind::Grpc { .. } => "grpc",
        }
    }
}

/// `GET` or `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET` (default).
    Get,
    /// `HEAD`: no body is sent back, so `expect_body` is refused.
    Head,
}

/// An `http` / `https` check.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    /// Default `GET`.
    pub method: HttpMethod,
    /// Request path and query. Default `/health`.
    pub uri: String,
    /// Request headers, `Host` included (`host_header`, or `Host` in `headers`; default
    /// the checked `host:port`).
    pub headers: Vec<(String, String)>,
    /// Accepted statuses. Default `200-399`.
    pub expect_status: StatusSet,
    /// Must appear in the first bytes of the body (the checker reads at most 64 KiB).
    /// Default: the body is not read.
    pub expect_body: Option<String>,
    /// TLS settings (type `https`).
    pub tls: Option<TlsConfig>,
}

/// TLS client settings of an `https` or `grpc` (`tls: true`) check.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificates trusted instead of the built-in Mozilla roots (`tls_ca_file`, read at
    /// load). Default: none (the built-in roots).
    pub ca_file: Option<PathBuf>,
    /// The certificates of `ca_file`, DER.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// The trust anchors made of `ca_certs`, checked at load (`None`: the built-in roots).
    pub roots: Option<Arc<RootCertStore>>,
    /// Accept any certificate (`tls_skip_verify`). Default false.
    pub skip_verify: bool,
    /// Name sent as SNI (unless an IP address) and verified in the certificate
    /// (`tls_server_name`). Default: the checked host.
    pub server_name: String,
}

// By what the file says: `roots` is made of `ca_certs`.
impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.ca_certs == other.ca_certs
            && self.skip_verify == other.skip_verify
            && self.server_name == other.server_name
    }
}

/// An `exec` check.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecCheck {
    /// Program and arguments (`sh -c <command>` with `shell: true`).
    pub argv: Vec<String>,
    /// Variables added to nerve's environment: `NERVE_SERVICE`, `NERVE_HOST`, `NERVE_PORT`,
    /// then the configured `env` (which may override them).
    pub env: BTreeMap<String, String>,
}

/// Accepted HTTP statuses: inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    /// True when `status` is in one of the ranges.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![(200, 399)])
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// What a service passes down to its checks.
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckDefaults<'a> {
    pub service: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub interval: Duration,
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
}

/// A flat struct rather than a tagged enum, so that serde reports the key path of a bad
/// field inside a check (tagged enums buffer their content and lose it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    interval: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    // tcp
    send: Option<serde_json::Value>,
    expect: Option<serde_json::Value>,
    // http, https
    method: Option<String>,
    uri: Option<String>,
    host_header: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    expect_status: Option<serde_json::Value>,
    expect_body: Option<String>,
    // https, grpc
    tls: Option<bool>,
    tls_ca_file: Option<String>,
    tls_skip_verify: Option<bool>,
    tls_server_name: Option<String>,
    // exec
    command: Option<serde_json::Value>,
    shell: Option<bool>,
    env: Option<BTreeMap<String, String>>,
    // redis
    username: Option<String>,
    password: Option<String>,
    // grpc
    service: Option<String>,
}

const KNOWN_TYPES: [&str; 6] = ["tcp", "http", "https", "exec", "redis", "grpc"];
const TYPES: &str = "tcp, http, https, exec, redis or grpc";

/// Validates one check (at key path `at`, index `index` in its service).
pub(super) fn validate_check(
    at: &str,
    index: usize,
    c: RawCheck,
    d: CheckDefaults<'_>,
    p: &mut Problems,
) -> CheckConfig {
    let kind_name = c.kind.as_str();
    // Keys that only some types take: refused by name on the others.
    let only: [(&str, bool, &[&str]); 18] = [
        ("send", c.send.is_some(), &["tcp"]),
        ("expect", c.expect.is_some(), &["tcp"]),
        ("method", c.method.is_some(), &["http", "https"]),
        ("uri", c.uri.is_some(), &["http", "https"]),
        ("host_header", c.host_header.is_some(), &["http", "https"]),
        ("headers", c.headers.is_some(), &["http", "https"]),
        ("expect_status", c.expect_status.is_some(), &["http", "https"]),
        ("expect_body", c.expect_body.is_some(), &["http", "https"]),
        ("tls", c.tls.is_some(), &["grpc"]),
        ("tls_ca_file", c.tls_ca_file.is_some(), &["https", "grpc"]),
        ("tls_skip_verify", c.tls_skip_verify.is_some(), &["https", "grpc"]),
        ("tls_server_name", c.tls_server_name.is_some(), &["https", "grpc"]),
        ("command", c.command.is_some(), &["exec"]),
        ("shell", c.shell.is_some(), &["exec"]),
        ("env", c.env.is_some(), &["exec"]),
        ("username", c.username.is_some(), &["redis"]),
        ("password", c.password.is_some(), &["redis"]),
        ("service", c.service.is_some(), &["grpc"]),
    ];
    if KNOWN_TYPES.contains(&kind_name) {
        for (key, set, types) in only {
            if set && !types.contains(&kind_name) {
                p.push(
                    format!("{at}.{key}"),
                    format!(
                        "{kind_name} checks do not take this key (only {})",
                        types.join(", ")
                    ),
                );
            }
        }
    }
    if c.port == Some(0) {
        p.push(format!("{at}.port"), "port must be in 1..=65535");
    }
    if let Some(h) = &c.host {
        super::check_host(p, format!("{at}.host"), h);
    }
    let host = c.host.unwrap_or_else(|| d.host.to_string());
    let port = c.port.unwrap_or(d.port);
    let kind = match kind_name {
        "tcp" => CheckKind::Tcp {
            send: c.send.map(|v| bytes_value(p, &format!("{at}.send"), &v)),
            expect: c.expect.map(|v| bytes_value(p, &format!("{at}.expect"), &v)),
        },
        "http" | "https" => {
            let tls = (kind_name == "https").then(|| {
                tls_config(
                    at,
                    &host,
                    &c.tls_ca_file,
                    c.tls_skip_verify,
                    &c.tls_server_name,
                    p,
                )
            });
            CheckKind::Http(http_check(
                at,
                c.method,
                c.uri,
                c.host_header,
                c.headers,
                c.expect_status,
                c.expect_body,
                &host,
                port,
                tls,
                p,
            ))
        }
        "exec" => CheckKind::Exec(exec_check(at, c.command, c.shell, c.env, d, &host, port, p)),
        "redis" => {
            if c.username.is_some() && c.password.is_none() {
                p.push(format!("{at}.username"), "a username needs a password");
            }
            CheckKind::Redis {
                username: c.username,
                password: c.password,
            }
        }
        "grpc" => {
            let tls = if c.tls == Some(true) {
                Some(tls_config(
                    at,
                    &host,
                    &c.tls_ca_file,
                    c.tls_skip_verify,
                    &c.tls_server_name,
                    p,
                ))
            } else {
                for (key, set) in [
                    ("tls_ca_file", c.tls_ca_file.is_some()),
                    ("tls_skip_verify", c.tls_skip_verify.is_some()),
                    ("tls_server_name", c.tls_server_name.is_some()),
                ] {
                    if set {
                        p.push(format!("{at}.{key}"), "only used with tls: true");
                    }
                }
                None
            };
            CheckKind::Grpc {
                service: c.service.unwrap_or_default(),
                tls,
            }
        }
        other => {
            p.push(
                format!("{at}.type"),
                format!("unknown check type {other:?}: expected {TYPES}"),
            );
            CheckKind::Tcp {
                send: None,
                expect: None,
            }
        }
    };
    let timeout = c.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        p.push(format!("{at}.timeout"), "must be more than 0");
    }
    let interval = c.interval.unwrap_or(d.interval);
    if interval < MIN_INTERVAL {
        p.push(format!("{at}.interval"), "must be at least 10ms");
    }
    let count = |key: &str, v: Option<u32>, default: NonZeroU32, p: &mut Problems| match v {
        None => default,
        Some(v) => NonZeroU32::new(v).unwrap_or_else(|| {
            p.push(format!("{at}.{key}"), "must be at least 1");
            NonZeroU32::MIN
        }),
    };
    let rise = count("rise", c.rise, d.rise, p);
    let fall = count("fall", c.fall, d.fall, p);
    let name = match c.name {
        Some(name) => {
            if let Err(e) = cc::check_name(&name) {
                p.push(format!("{at}.name"), e);
            }
            name
        }
        None => format!("{index}_{}", kind.label()),
    };
    CheckConfig {
        name,
        host,
        port,
        timeout,
        interval,
        rise,
        fall,
        kind,
    }
}

/// `send` / `expect`: a string (its UTF-8 bytes; YAML escapes like `"\r\n"` work) or
/// `{hex: "0d0a"}` for arbitrary bytes. Never empty.
fn bytes_value(p: &mut Problems, at: &str, v: &serde_json::Value) -> Vec<u8> {
    let bytes = match v {
        serde_json::Value::String(s) => Ok(s.as_bytes().to_vec()),
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("hex") => match &o["hex"] {
            serde_json::Value::String(h) => decode_hex(h).map_err(|e| (format!("{at}.hex"), e)),
            _ => Err((format!("{at}.hex"), "expected a string of hex digits".to_string())),
        },
        _ => Err((at.to_string(), "expected a string or {hex: \"...\"}".to_string())),
    };
    match bytes {
        Ok(b) if b.is_empty() => {
            p.push(at, "must not be empty");
            b
        }
        Ok(b) => b,
        Err((key, e)) => {
            p.push(key, e);
            Vec::new()
        }
    }
}

/// Hex digits, optionally separated by spaces, into bytes.
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".to_string());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{:?} is not a hex byte", String::from_utf8_lossy(pair)))
        })
        .collect()
}

/// Headers nerve sets itself or that would contradict the request it sends.
const RESERVED_HEADERS: [&str; 4] = ["connection", "content-length", "transfer-encoding", "te"];

#[allow(clippy::too_many_arguments)]
fn http_check(
    at: &str,
    method: Option<String>,
    uri: Option<String>,
    host_header: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    expect_status: Option<serde_json::Value>,
    expect_body: Option<String>,
    host: &str,
    port: u16,
    tls: Option<TlsConfig>,
    p: &mut Problems,
) -> HttpCheck {
    let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => HttpMethod::Get,
        Some("HEAD") => HttpMethod::Head,
        Some(_) => {
            p.push(format!("{at}.method"), "expected GET or HEAD");
            HttpMethod::Get
        }
    };
    if method == HttpMethod::Head && expect_body.is_some() {
        p.push(
            format!("{at}.expect_body"),
            "a HEAD answer has no body: use method GET",
        );
    }
    if expect_body.as_deref() == Some("") {
        p.push(format!("{at}.expect_body"), "must not be empty");
    }
    let uri = uri.unwrap_or_else(|| "/health".to_string());
    // What the check builds its request from: refused here, not at every run.
    if !uri.starts_with('/') || uri.parse::<hyper::Uri>().is_err() {
        p.push(
            format!("{at}.uri"),
            format!("{uri:?} must be a request path starting with '/'"),
        );
    }
    let mut list: Vec<(String, String)> = Vec::new();
    let mut host_set = false;
    if let Some(h) = host_header {
        if h.is_empty() || hyper::header::HeaderValue::from_str(&h).is_err() {
            p.push(
                format!("{at}.host_header"),
                format!("{h:?} is not a valid Host header value"),
            );
        }
        list.push(("Host".to_string(), h));
        host_set = true;
    }
    for (name, value) in headers.unwrap_or_default() {
        let key = format!("{at}.headers.{name}");
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.push(key, "not a valid header name");
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            p.push(key, "set by nerve itself");
            continue;
        }
        if hyper::header::HeaderValue::from_str(&value).is_err() {
            p.push(key, format!("{value:?} is not a valid header value"));
            continue;
        }
        if lower == "host" {
            if host_set {
                p.push(key, "the Host header is already set by host_header");
                continue;
            }
            if value.is_empty() {
                p.push(key, "must not be empty");
            }
            host_set = true;
        }
        list.push((name, value));
    }
    if !host_set {
        list.insert(0, ("Host".to_string(), authority(host, port)));
    }
    let expect_status = match &expect_status {
        None => StatusSet::default(),
        Some(v) => parse_status_set(v).unwrap_or_else(|e| {
            p.push(format!("{at}.expect_status"), e);
            StatusSet::default()
        }),
    };
    HttpCheck {
        method,
        uri,
        headers: list,
        expect_status,
        expect_body,
        tls,
    }
}

/// `host:port`, with IPv6 addresses in brackets (as in a URL or a `Host` header).
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn tls_config(
    at: &str,
    host: &str,
    ca_file: &Option<String>,
    skip_verify: Option<bool>,
    server_name: &Option<String>,
    p: &mut Problems,
) -> TlsConfig {
    let (key, name) = match server_name {
        Some(n) => (format!("{at}.tls_server_name"), n.clone()),
        None => (format!("{at}.host"), host.to_string()),
    };
    if ServerName::try_from(name.as_str()).is_err() {
        let hint = if server_name.is_none() {
            " (set tls_server_name)"
        } else {
            ""
        };
        p.push(key, format!("{name:?} is not a valid TLS server name{hint}"));
    }
    let mut ca_certs = Vec::new();
    if let Some(file) = ca_file {
        match read_ca_file(file) {
            Ok(certs) => ca_certs = certs,
            Err(e) => p.push(format!("{at}.tls_ca_file"), e),
        }
    }
    let roots = (!ca_certs.is_empty())
        .then(|| root_store(&ca_certs).ok().map(Arc::new))
        .flatten();
    TlsConfig {
        ca_file: ca_file.as_ref().map(PathBuf::from),
        ca_certs,
        roots,
        skip_verify: skip_verify.unwrap_or(false),
        server_name: name,
    }
}

/// Reads the PEM certificates of `file`; each must be usable as a trust anchor.
fn read_ca_file(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{file:?}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file:?} holds no PEM certificate"));
    }
    root_store(&certs).map_err(|e| format!("{file:?}: {e}"))?;
    Ok(certs)
}

/// The trust anchors of `certs`, refused if one is not a usable CA certificate.
fn root_store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|e| format!("certificate #{} is not usable as a trust anchor: {e}", i + 1))?;
    }
    Ok(store)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn exec_check(
    at: &str,
    command: Option<serde_json::Value>,
    shell: Option<bool>,
    env: Option<BTreeMap<String, String>>,
    d: CheckDefaults<'_>,
    host: &str,
    port: u16,
    p: &mut Problems,
) -> ExecCheck {
    let key = format!("{at}.command");
    let shell = shell.unwrap_or(false);
    let argv = command_argv(command, shell).unwrap_or_else(|e| {
        p.push(&key, e);
        Vec::new()
    });
    let mut vars = BTreeMap::from([
        ("NERVE_SERVICE".to_string(), d.service.to_string()),
        ("NERVE_HOST".to_string(), host.to_string()),
        ("NERVE_PORT".to_string(), port.to_string()),
    ]);
    for (name, value) in env.unwrap_or_default() {
        if name.is_empty() || name.contains(['=', '\0']) {
            p.push(
                format!("{at}.env.{name}"),
                "not a valid variable name (empty, or with '=' or NUL)",
            );
        } else if value.contains('\0') {
            p.push(format!("{at}.env.{name}"), "must not contain NUL characters");
        } else {
            vars.insert(name, value);
        }
    }
    ExecCheck { argv, env: vars }
}

/// The argv of `command`: a list of strings, or with `shell: true` one string (or a list
/// of one) run by `sh -c`.
fn command_argv(command: Option<serde_json::Value>, shell: bool) -> Result<Vec<String>, String> {
    let list: Vec<String> = match command {
        None => return Err("a command is required".to_string()),
        Some(serde_json::Value::String(s)) if shell => vec![s],
        Some(serde_json::Value::String(_)) => {
            return Err(
                "a string is run by a shell only with shell: true; give a list [program, arg, ...]"
                    .to_string(),
            )
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or("expected a list of strings")?,
        Some(_) => {
            return Err("expected a list [program, arg, ...] (or a string with shell: true)".to_string())
        }
    };
    if list.iter().any(|a| a.contains('\0')) {
        return Err("must not contain NUL characters".to_string());
    }
    if !shell {
        return match list.first() {
            Some(program) if !program.is_empty() => Ok(list),
            _ => Err("must start with a program".to_string()),
        };
    }
    match list.as_slice() {
        [script] if !script.trim().is_empty() => Ok(vec!["sh".to_string(), "-c".to_string(), script.clone()]),
        [_] | [] => Err("must not be empty".to_string()),
        _ => Err("with shell: true, give one string (the script)".to_string()),
    }
}

/// `200`, `"200"`, `"200-299"`, or a list of those.
pub(super) fn parse_status_set(v: &serde_json::Value) -> Result<StatusSet, String> {
    match v {
        serde_json::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(parse_status_range)
            .collect::<Result<Vec<_>, _>>()
            .map(StatusSet),
        serde_json::Value::Array(_) => Err("expected at least one status".to_string()),
        one => parse_status_range(one).map(|r| StatusSet(vec![r])),
    }
}

/// `200`, `"200"` or `"200-299"`.
pub(super) fn parse_status_range(v: &serde_json::Value) -> Result<(u16, u16), String> {
    let text = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "expected a status, a range like \"200-299\" or a list of them, got {other}"
            ))
        }
    };
    let (lo, hi) = text.split_once('-').unwrap_or((&text, &text));
    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    match (parse(lo), parse(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!(
            "invalid status range {text:?}: expected statuses in 100..=599 like \"200-299\""
        )),
    }
}
