//! The config-facing side of balancing: policy names, `hash_on`, and the node payload fields
//! that matter to a balancer (`weight`, `haproxy_server_options`).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A balancing policy's name as written in the config (`balance: <name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// `round_robin` (the default): smooth weighted round-robin.
    #[default]
    RoundRobin,
    /// `least_conn`: fewest active connections per unit of weight.
    LeastConn,
    /// `random`: weighted random.
    Random,
    /// `p2c_ewma` (alias `peak_ewma`): power of two choices over peak-EWMA latency.
    #[serde(alias = "peak_ewma")]
    P2cEwma,
    /// `hash`: consistent hashing (Maglev) on `hash_on`.
    Hash,
}

impl PolicyName {
    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "least_conn",
        "random",
        "p2c_ewma",
        "peak_ewma",
        "hash",
    ];

    /// The canonical config name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::RoundRobin => "round_robin",
            PolicyName::LeastConn => "least_conn",
            PolicyName::Random => "random",
            PolicyName::P2cEwma => "p2c_ewma",
            PolicyName::Hash => "hash",
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyName {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(PolicyName::RoundRobin),
            "least_conn" => Ok(PolicyName::LeastConn),
            "random" => Ok(PolicyName::Random),
            "p2c_ewma" | "peak_ewma" => Ok(PolicyName::P2cEwma),
            "hash" => Ok(PolicyName::Hash),
            other => Err(PolicyError::UnknownPolicy(other.to_owned())),
        }
    }
}

/// What the caller hashes for `hash` (`hash_on: header:<name> | cookie:<name> | client_ip`).
/// The balancer only sees the resulting `u64` ([`super::hash_bytes`], [`super::hash_ip`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    /// `header:<name>`: an HTTP request header (name matched case-insensitively; stored
    /// lowercase). HTTP mode only.
    Header(String),
    /// `cookie:<name>`: an HTTP cookie (case-sensitive name). HTTP mode only.
    Cookie(String),
    /// `client_ip`: the client's IP address (not the port). Any mode.
    ClientIp,
}

impl HashOn {
    /// True when the key needs an HTTP request (header or cookie).
    pub fn needs_http(&self) -> bool {
        !matches!(self, HashOn::ClientIp)
    }
}

impl fmt::Display for HashOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashOn::Header(h) => write!(f, "header:{h}"),
            HashOn::Cookie(c) => write!(f, "cookie:{c}"),
            HashOn::ClientIp => f.write_str("client_ip"),
        }
    }
}

impl FromStr for HashOn {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyError::BadHashOn(s.to_owned());
        if s == "client_ip" {
            return Ok(HashOn::ClientIp);
        }
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        // RFC 9110 token characters; covers header and cookie names.
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        match kind {
            "header" if token => Ok(HashOn::Header(name.to_ascii_lowercase())),
            "cookie" if token => Ok(HashOn::Cookie(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl<'de> Deserialize<'de> for HashOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated policy: the name plus, for `hash`, what to hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Smooth weighted round-robin (default).
    #[default]
    RoundRobin,
    /// Weighted least connections.
    LeastConn,
    /// Weighted random.
    Random,
    /// Power of two choices over peak-EWMA latency.
    P2cEwma,
    /// Consistent hashing (Maglev) on a key the caller computes from `HashOn`.
    Hash(HashOn),
}

/// Why a `balance` / `hash_on` setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a policy name.
    #[error("unknown balance policy {0:?}; expected one of round_robin, least_conn, random, p2c_ewma (or peak_ewma), hash")]
    UnknownPolicy(String),
    /// `hash` without `hash_on`.
    #[error("balance: hash needs hash_on (header:<name>, cookie:<name> or client_ip)")]
    MissingHashOn,
    /// `hash_on` with a policy other than `hash`.
    #[error("hash_on is only used with balance: hash (balance is {0})")]
    HashOnWithoutHash(PolicyName),
    /// `hash_on` is malformed.
    #[error("bad hash_on {0:?}; expected header:<name>, cookie:<name> or client_ip")]
    BadHashOn(String),
}

impl Policy {
    /// Validates the two config keys together: `balance` (None = `round_robin`) and
    /// `hash_on` (required by, and only allowed with, `hash`).
    pub fn from_config(name: Option<PolicyName>, hash_on: Option<HashOn>) -> Result<Policy, PolicyError> {
        match (name.unwrap_or_default(), hash_on) {
            (PolicyName::Hash, Some(on)) => Ok(Policy::Hash(on)),
            (PolicyName::Hash, None) => Err(PolicyError::MissingHashOn),
            (other, Some(_)) => Err(PolicyError::HashOnWithoutHash(other)),
            (PolicyName::RoundRobin, None) => Ok(Policy::RoundRobin),
            (PolicyName::LeastConn, None) => Ok(Policy::LeastConn),
            (PolicyName::Random, None) => Ok(Policy::Random),
            (PolicyName::P2cEwma, None) => Ok(Policy::P2cEwma),
        }
    }

    /// [`Policy::from_config`] from strings, e.g. `parse("hash", Some("client_ip"))`.
    pub fn parse(name: &str, hash_on: Option<&str>) -> Result<Policy, PolicyError> {
        let hash_on = hash_on.map(str::parse).transpose()?;
        Policy::from_config(Some(name.parse()?), hash_on)
    }

    /// The policy's name.
    pub fn name(&self) -> PolicyName {
        match self {
            Policy::RoundRobin => PolicyName::RoundRobin,
            Policy::LeastConn => PolicyName::LeastConn,
            Policy::Random => PolicyName::Random,
            Policy::P2cEwma => PolicyName::P2cEwma,
            Policy::Hash(_) => PolicyName::Hash,
        }
    }

    /// What to hash, for `hash`.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match self {
            Policy::Hash(on) => Some(on),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Hash(on) => write!(f, "hash({on})"),
            other => f.write_str(other.name().as_str()),
        }
    }
}

/// The weight of a node whose payload has none, when the config does not say otherwise: 255,
/// the full weight go-nerve and our nerve write. Airbnb nerve writes no weight unless told to,
/// so with this default a fleet mixing both splits evenly during a migration. (HAProxy's own
/// default is 1; a fleet that writes small explicit weights next to weightless nodes should
/// set the default it means.)
pub const DEFAULT_WEIGHT: u32 = 255;

/// The HAProxy server keywords of `haproxy_server_options` that change balancing. Other
/// keywords (`check`, `inter 2s`, `maxconn 10`, ...) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerOptions {
    /// `backup`: only used when no non-backup backend is usable.
    pub backup: bool,
    /// `disabled`: starts in maintenance in HAProxy; here, weight 0 (no new traffic).
    pub disabled: bool,
    /// `weight <n>`: airbnb synapse appends the options after the payload's weight on the
    /// HAProxy `server` line, so this one wins there; it wins here too. The last valid one
    /// counts; a malformed value is ignored.
    pub weight: Option<u32>,
}

impl ServerOptions {
    /// Parses whitespace-separated HAProxy server keywords. Keywords are case-sensitive, as in
    /// HAProxy; `None` or unknown keywords give the defaults.
    pub fn parse(options: Option<&str>) -> ServerOptions {
        let mut out = ServerOptions::default();
        let mut tokens = options.unwrap_or("").split_whitespace();
        while let Some(token) = tokens.next() {
            match token {
                "backup" => out.backup = true,
                "disabled" => out.disabled = true,
                "weight" => {
                    if let Some(Ok(w)) = tokens.next().map(str::parse) {
                        out.weight = Some(w);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The weight a balancer should use: `weight <n>` from the options, else the payload's,
    /// else `default_weight`; 0 when `disabled`.
    pub fn effective_weight(&self, payload: Option<u32>, default_weight: u32) -> u32 {
        if self.disabled {
            0
        } else {
            self.weight.or(payload).unwrap_or(default_weight)
        }
    }
}
