//! Encoding and decoding of ZooKeeper node payloads (pure, no I/O).
//!
//! A service instance ([`Node`]) is stored in ZooKeeper as one (ephemeral, sequential) child znode of
//! the service's path. Three payload dialects are in use and [`decode`] accepts all of them:
//!
//! 1. **airbnb nerve**: the znode data is a JSON object
//!    `{"host": "10.0.0.1", "port": 8080, "name": "i-abc", "weight": 10,
//!    "haproxy_server_options": "backup", "labels": {"az": "us-east-1a"}}`.
//!    Only `host` and `port` are required; unknown keys are ignored.
//! 2. **go-nerve**: the same object, plus `"available"` (a bool; missing means `true`) and
//!    `"unavailable_reason"` (a string). go-nerve may write `port` and `weight` as numeric strings
//!    (`"8080"`), which are accepted as well.
//! 3. **Finagle / Aurora serversets** (children are usually named `member_<seq>`):
//!    `{"serviceEndpoint": {"host": "10.0.0.1", "port": 8080},
//!    "additionalEndpoints": {"http": {"host": "10.0.0.1", "port": 8081}},
//!    "status": "ALIVE", "shard": 3}`.
//!    Only `serviceEndpoint` is used (plus `status` and `shard`). A `status` other than `"ALIVE"` makes the
//!    node unavailable (`available == false`, reason `serverset status <STATUS>`); a missing status
//!    means `ALIVE`.
//!
//! In addition, airbnb nerve's `use_path_encoding` puts the (airbnb-style) JSON into the child *name*:
//! `base64_<len>_<urlsafe base64 of the JSON>_<seq>`, where `<len>` is the length of the base64
//! segment and `<seq>` is the sequence number ZooKeeper appends. When [`decode`] sees such a name it
//! decodes the JSON from the name and ignores the znode data (which may then be empty). Note that the
//! URL-safe base64 alphabet contains `_` and `-`, so the name is split by the declared length, never by
//! searching for `_`. Both padded (what airbnb nerve writes) and unpadded base64 are accepted.
//!
//! [`encode`] writes the airbnb-nerve dialect plus go-nerve's `available` (always: go-synapse only
//! puts a server back in rotation when it reads `"available": true`; airbnb readers ignore the key)
//! and, for unavailable nodes, `unavailable_reason`. [`encode_path_name`] builds the path-encoded
//! child-name prefix.
//!
//! Decoding validates what it returns: the host passes [`check_host`] (an IP address or a host name),
//! the port is in `1..=65535`, and the weight is a non-negative integer that fits in a `u32`. It never
//! panics, whatever the input.

use std::collections::BTreeMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

/// Prefix of airbnb nerve's path-encoded child names.
const PATH_PREFIX: &str = "base64_";

/// The `status` value of a healthy serverset member.
const SERVERSET_ALIVE: &str = "ALIVE";

/// Longest excerpt of offending input quoted in an error message (in characters).
const MAX_QUOTED_CHARS: usize = 64;

/// URL-safe base64 that accepts both padded and unpadded input.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One service instance as found in (or written to) ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Host name or IP address the instance listens on; passes [`check_host`] once decoded.
    pub host: String,
    /// TCP port, `1..=65535` once decoded.
    pub port: u16,
    /// Instance name (airbnb nerve's `name`); for serversets, the endpoint key or `member_<seq>` child
    /// name is not used: None.
    pub name: Option<String>,
    /// Relative weight, default None (consumers treat None as 1 (or 100 as they like)).
    pub weight: Option<u32>,
    /// go-nerve `available`; missing means true.
    pub available: bool,
    /// go-nerve `unavailable_reason` (or `serverset status <STATUS>` for serversets that are not alive).
    pub unavailable_reason: Option<String>,
    /// airbnb nerve `haproxy_server_options`, appended to the HAProxy `server` line by consumers.
    pub haproxy_server_options: Option<String>,
    /// Free-form labels; BTreeMap<String,String>. Non-string label values in input are turned to their
    /// JSON text.
    pub labels: BTreeMap<String, String>,
    /// Finagle serverset shard, if any.
    pub shard: Option<i64>,
}

/// Why a znode could not be decoded into a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The znode data is empty (or only whitespace) and the child name is not path-encoded.
    #[error("node data is empty")]
    Empty,
    /// The payload is not valid UTF-8.
    #[error("node data is not valid UTF-8")]
    NotUtf8,
    /// The payload is not valid JSON; holds serde_json's message.
    #[error("node data is not valid JSON: {0}")]
    Json(String),
    /// The payload is valid JSON but not an object; holds the JSON type found.
    #[error("node data must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// A required field is missing (or `null`).
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// The field, e.g. `labels` or `serviceEndpoint.host`.
        field: &'static str,
        /// What was expected, e.g. `a string`.
        expected: &'static str,
        /// The (possibly shortened) JSON text found instead.
        found: String,
    },
    /// The port is not a number (or numeric string) in `1..=65535`; holds its JSON text.
    #[error("port {0} is not a number in 1..=65535")]
    BadPort(String),
    /// The host is not an IP address nor a host name (see [`check_host`]); holds the
    /// (shortened) host.
    #[error("host {0:?} is not an IP address or a valid host name")]
    BadHost(String),
    /// The weight is not a non-negative integer that fits in a u32; holds its JSON text.
    #[error("weight {0} is not a non-negative integer that fits in 32 bits")]
    BadWeight(String),
    /// The child name starts with `base64_` but is not a valid path-encoded name.
    #[error("bad path-encoded child name: {0}")]
    BadPathEncoding(String),
}

/// The airbnb-nerve wire form written by [`encode`]; field order here is the key order on the wire.
#[derive(Serialize)]
struct WireNode<'a> {
    host: &'a str,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    haproxy_server_options: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    /// Always written, as go-nerve does: go-synapse re-enables a server in HAProxy only on an
    /// explicit `true`.
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable_reason: Option<&'a str>,
}

/// Encodes `node` as the airbnb-nerve JSON payload (compact, deterministic key order).
///
/// Keys, in order: `host`, `port` (a JSON number), then `name`, `weight`, `haproxy_server_options` and
/// `labels` when set / non-empty, then `available` (always), then `unavailable_reason` when the node is
/// unavailable and a reason is set, as go-nerve writes them. `shard` is not written (it is a serverset
/// concept).
pub fn encode(node: &Node) -> Vec<u8> {
    let wire = WireNode {
        host: &node.host,
        port: node.port,
        name: node.name.as_deref(),
        weight: node.weight,
        haproxy_server_options: node.haproxy_server_options.as_deref(),
        labels: &node.labels,
        available: node.available,
        unavailable_reason: if node.available {
            None
        } else {
            node.unavailable_reason.as_deref()
        },
    };
    // Serializing this struct cannot fail: it has only strings, integers, bools and a string-keyed
    // map, and no custom `Serialize` impls. The fallback is therefore unreachable.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Builds airbnb nerve's path-encoded child-name prefix for `node`:
/// `base64_<len>_<urlsafe base64 (padded) of encode(node)>_`.
///
/// ZooKeeper appends the sequence number when the znode is created with the sequential flag; the result
/// (`base64_…_0000000001`) is understood by [`decode`]. The prefix has no leading `/`.
pub fn encode_path_name(node: &Node) -> String {
    encode_path_name_bytes(&encode(node))
}

/// [`encode_path_name`] of an already encoded payload.
pub fn encode_path_name_bytes(payload: &[u8]) -> String {
    let encoded = URL_SAFE.encode(payload);
    format!("{PATH_PREFIX}{}_{encoded}_", encoded.len())
}

/// Decodes the znode `child_name` with payload `data` into a [`Node`].
///
/// `child_name` is the last path component (a full path is tolerated: only the part after the last `/`
/// is looked at). If it is path-encoded (`base64_<len>_<b64>_<seq>`), the JSON comes from the name and
/// `data` is ignored; otherwise `data` must hold one of the JSON dialects described in the
/// [module docs](self). Never panics.
pub fn decode(child_name: &str, data: &[u8]) -> Result<Node, DecodeError> {
    let name = child_name.rsplit('/').next().unwrap_or(child_name);
    if let Some(rest) = name.strip_prefix(PATH_PREFIX) {
        let json = decode_path_name(rest)?;
        return decode_json(&json);
    }
    decode_json(data)
}

/// Decodes the part of a path-encoded child name after `base64_`: `<len>_<b64 of len bytes>[_<seq>]`.
fn decode_path_name(rest: &str) -> Result<Vec<u8>, DecodeError> {
    let (len_text, after_len) = rest
        .split_once('_')
        .ok_or_else(|| DecodeError::BadPathEncoding("no `_` after the length".to_owned()))?;
    if len_text.is_empty() || !len_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::BadPathEncoding(format!(
            "length {} is not a number",
            quote(len_text)
        )));
    }
    let len: usize = len_text
        .parse()
        .map_err(|_| DecodeError::BadPathEncoding(format!("length {} is too large", quote(len_text))))?;
    let encoded = after_len.get(..len).ok_or_else(|| {
        DecodeError::BadPathEncoding(format!(
            "declared length {len} does not fit the {} bytes that follow",
            after_len.len()
        ))
    })?;
    let tail = after_len.get(len..).unwrap_or_default();
    if let Some(seq) = tail.strip_prefix('_') {
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::BadPathEncoding(format!(
                "sequence {} after the encoded segment is not a number",
                quote(seq)
            )));
        }
    } else if !tail.is_empty() {
        return Err(DecodeError::BadPathEncoding(format!(
            "declared length {len} does not match the encoded segment (followed by {})",
            quote(tail)
        )));
    }
    URL_SAFE_LENIENT
        .decode(encoded)
        .map_err(|e| DecodeError::BadPathEncoding(format!("invalid URL-safe base64: {e}")))
}

/// Decodes a JSON payload in any of the supported dialects.
fn decode_json(data: &[u8]) -> Result<Node, DecodeError> {
    let text = std::str::from_utf8(data).map_err(|_| DecodeError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(DecodeError::Empty);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(DecodeError::NotAnObject(json_type(&value)));
    };
    match field(&obj, "serviceEndpoint") {
        Some(endpoint) => decode_serverset(&obj, endpoint),
        None => decode_nerve(&obj),
    }
}

/// Decodes the airbnb nerve / go-nerve dialect.
fn decode_nerve(obj: &Map<String, Value>) -> Result<Node, DecodeError> {
    let host = parse_host(field(obj, "host"), "host")?;
    let port = parse_port(field(obj, "port"), "port")?;
    let name = optional_string(obj, "name")?;
    let weight = field(obj, "weight").map(parse_weight).transpose()?;
    let available = match field(obj, "available") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(wrong_type("available", "a boolean", other)),
    };
    let unavailable_reason = optional_string(obj, "unavailable_reason")?;
    let haproxy_server_options = optional_string(obj, "haproxy_server_options")?;
    let labels = match field(obj, "labels") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(other) => return Err(wrong_type("labels", "an object", other)),
    };
    Ok(Node {
        host,
        port,
        name,
        weight,
        available,
        unavailable_reason,
        haproxy_server_options,
        labels,
        shard: None,
    })
}

/// Decodes the Finagle / Aurora serverset dialect, given its `serviceEndpoint` value.
fn decode_serverset(obj: &Map<String, Value>, endpoint: &Value) -> Result<Node, DecodeError> {
    let Value::Object(endpoint) = endpoint else {
        return Err(wrong_type("serviceEndpoint", "an object", endpoint));
    };
    let host = parse_host(field(endpoint, "host"), "serviceEndpoint.host")?;
    let port = parse_port(field(endpoint, "port"), "serviceEndpoint.port")?;
    let status = match field(obj, "status") {
        None => SERVERSET_ALIVE,
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(wrong_type("status", "a string", other)),
    };
    let (available, unavailable_reason) = if status == SERVERSET_ALIVE {
        (true, None)
    } else {
        (false, Some(format!("serverset status {status}")))
    };
    let shard = match field(obj, "shard") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| wrong_type("shard", "an integer", v))?),
    };
    Ok(Node {
        host,
        port,
        name: None,
        weight: None,
        available,
        unavailable_reason,
        haproxy_server_options: None,
        labels: BTreeMap::new(),
        shard,
    })
}

/// The value of `key`, treating an explicit `null` like a missing key.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// An optional string field (`null` and missing both give `None`).
fn optional_string(obj: &Map<String, Value>, key: &'static str) -> Result<Option<String>, DecodeError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

/// A required host: a string that passes [`check_host`].
fn parse_host(value: Option<&Value>, key: &'static str) -> Result<String, DecodeError> {
    match value {
        None => Err(DecodeError::MissingField(key)),
        Some(Value::String(s)) => match check_host(s) {
            Ok(()) => Ok(s.clone()),
            Err(_) => Err(DecodeError::BadHost(shorten(s))),
        },
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

/// Longest accepted host name, in bytes, not counting a trailing dot (RFC 1035).
pub const MAX_HOST_BYTES: usize = 253;

/// Longest label of a host name, in bytes (RFC 1035).
const MAX_LABEL_BYTES: usize = 63;

/// Checks that `host` is something a backend address can be: an IPv4 literal
/// (`10.0.0.1`), a bare IPv6 literal (`fd00::1`; no brackets, no zone: payloads and
/// `host:port` parsers expect it bare), or a host name in the RFC 1123 syntax: dot-separated
/// labels of 1 to 63 ASCII letters, digits and hyphens, not starting or ending with a hyphen,
/// at most 253 bytes in all, one trailing dot allowed, and a last label that is not all
/// digits (`10.0.0.256` is a bad address, not a name).
///
/// Underscores are accepted in labels: RFC 1123 does not allow them in host names, but real
/// fleets have them (`db_replica-3.internal`) and resolvers look them up fine.
///
/// Shared by [`decode`] (a payload's host) and nerve's config (the registered `host`). Returns
/// why the host is refused.
pub fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty host");
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.starts_with('[') {
        return Err("an IPv6 address is written without brackets");
    }
    if host.contains(':') {
        return Err("not a valid IPv6 address");
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > MAX_HOST_BYTES {
        return Err("longer than 253 bytes");
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err("a label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only ASCII letters, digits, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a valid IPv4 address");
    }
    Ok(())
}

/// A required port: a JSON integer or a string of ASCII digits, in `1..=65535`.
fn parse_port(value: Option<&Value>, key: &'static str) -> Result<u16, DecodeError> {
    let value = value.ok_or(DecodeError::MissingField(key))?;
    let port = match value {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => parse_digits(s).and_then(|p| u16::try_from(p).ok()),
        _ => None,
    };
    port.filter(|&p| p != 0)
        .ok_or_else(|| DecodeError::BadPort(shorten(&value.to_string())))
}

/// A weight: a JSON integer or a string of ASCII digits, in `0..=u32::MAX`.
fn parse_weight(value: &Value) -> Result<u32, DecodeError> {
    let weight = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_digits(s),
        _ => None,
    };
    weight
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| DecodeError::BadWeight(shorten(&value.to_string())))
}

/// Parses a non-empty string of ASCII digits (no sign, no whitespace); `None` if not one or too large.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A [`DecodeError::WrongType`] for `field`, quoting (a shortened form of) the value found.
fn wrong_type(field: &'static str, expected: &'static str, found: &Value) -> DecodeError {
    DecodeError::WrongType {
        field,
        expected,
        found: shorten(&found.to_string()),
    }
}

/// The JSON type name of `value`, for error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` cut to at most [`MAX_QUOTED_CHARS`] characters (with `…` when cut), so that hostile input
/// cannot blow up error messages and logs.
fn shorten(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `s` shortened and quoted, for error messages about child names.
fn quote(s: &str) -> String {
    format!("{:?}", shorten(s))
}

#[cfg(test)]
mod tests;
