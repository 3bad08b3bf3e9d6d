//! Which backends a service routes to, from what ZooKeeper lists: label filters, default
//! servers, previous backends, locality preference. Pure (no I/O, no clock): the watcher runs
//! [`select`] before each table build.
//!
//! The steps, in order:
//! 1. ZooKeeper's available nodes that pass every label filter (`label_filters`).
//! 2. Fallbacks: with `keep_default_servers`, the default servers are added; otherwise they
//!    stand in when step 1 left nothing. When nothing is left either, the current table is
//!    kept if `use_previous_backends` (and it has backends). Default servers are the
//!    operator's own list: label filters do not apply to them.
//! 3. Locality: when enough usable backends carry this host's zone label, the others are
//!    demoted to backups (used only when no local one is usable: down, ejected, weight 0);
//!    below the threshold every backend is a primary (failover).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use common::codec::Node;

use crate::balance::ServerOptions;

/// How a label filter compares a node's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The label is present and equals the value.
    Equals(String),
    /// The label is absent or differs from the value.
    NotEquals(String),
    /// The label is present and one of the values.
    In(BTreeSet<String>),
    /// The label is absent or none of the values.
    NotIn(BTreeSet<String>),
}

impl Condition {
    /// The config names: airbnb synapse's `equals` / `not-equals`, plus `in` / `not-in`
    /// (`_` may stand for `-`).
    pub const NAMES: &'static [&'static str] = &["equals", "not-equals", "in", "not-in"];
}

/// `label_filters[]`: one condition on one label. A node is routed only when it passes every
/// filter of its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    /// The label's key.
    pub label: String,
    /// The condition.
    pub condition: Condition,
}

impl LabelFilter {
    /// Whether `labels` pass this filter.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.label);
        match &self.condition {
            Condition::Equals(v) => got == Some(v),
            Condition::NotEquals(v) => got != Some(v),
            Condition::In(set) => got.is_some_and(|g| set.contains(g)),
            Condition::NotIn(set) => !got.is_some_and(|g| set.contains(g)),
        }
    }
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.condition {
            Condition::Equals(v) => write!(f, "{}={v}", self.label),
            Condition::NotEquals(v) => write!(f, "{}!={v}", self.label),
            Condition::In(s) => write!(f, "{} in [{}]", self.label, join(s)),
            Condition::NotIn(s) => write!(f, "{} not in [{}]", self.label, join(s)),
        }
    }
}

/// How many local backends are enough (`locality.min_local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinLocal {
    /// At least this many usable local backends.
    Count(u32),
    /// Usable local backends make at least this share (0–100) of all usable backends.
    Percent(u32),
}

impl fmt::Display for MinLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinLocal::Count(n) => write!(f, "{n}"),
            MinLocal::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `locality`: prefer the backends in this host's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locality {
    /// The label naming a backend's zone. Default `zone`.
    pub label: String,
    /// This host's zone (typically `${ZONE}`).
    pub value: String,
    /// Below this, every backend is used (failover). Default 1.
    pub min_local: MinLocal,
}

/// A backend from the config (`default_servers[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultServer {
    /// Its id in the table and the admin API: `default:<name>`, or `default:<host:port>`.
    pub id: String,
    /// Host, port, name, weight, labels, `haproxy_server_options`.
    pub node: Node,
}

/// Where the backends of a table come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// ZooKeeper's nodes (and, with `keep_default_servers`, the default servers).
    None,
    /// ZooKeeper has none that pass the filters: the default servers.
    DefaultServers,
    /// ZooKeeper has none, there are no default servers, and the current table is kept.
    Previous,
}

/// Where locality left a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalityState {
    /// No locality configured (or no host zone).
    #[default]
    Off,
    /// Enough local backends: the others are backups.
    Local {
        /// Usable local backends.
        local: usize,
        /// Usable backends in all.
        usable: usize,
    },
    /// Too few local backends: every backend is a primary.
    Failover {
        /// Usable local backends.
        local: usize,
        /// Usable backends in all.
        usable: usize,
    },
}

/// What to build the next table from.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// `(id, node)` of each backend; empty with [`Fallback::Previous`].
    pub entries: Vec<(String, Node)>,
    /// `host:port` of the backends locality demoted to backups.
    pub demoted: HashSet<String>,
    /// Where they come from.
    pub fallback: Fallback,
    /// Locality's verdict.
    pub locality: LocalityState,
    /// ZooKeeper nodes available but refused by a label filter.
    pub filtered_out: usize,
}

/// What [`select`] needs of a service's config.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// `label_filters`.
    pub label_filters: &'a [LabelFilter],
    /// `default_servers`.
    pub default_servers: &'a [DefaultServer],
    /// `keep_default_servers`.
    pub keep_default_servers: bool,
    /// `use_previous_backends`.
    pub use_previous_backends: bool,
    /// `locality` (None: off).
    pub locality: Option<&'a Locality>,
    /// `default_weight`, for whether a backend is usable (weight > 0).
    pub default_weight: u32,
}

/// The backends to route to, from ZooKeeper's `available` nodes; `has_current`: the current
/// table has backends (so it can be kept).
pub fn select<'a>(
    available: impl IntoIterator<Item = (&'a String, &'a Node)>,
    has_current: bool,
    rules: Rules<'_>,
) -> Selection {
    let mut entries = Vec::new();
    let mut filtered_out = 0;
    for (id, node) in available {
        if rules.label_filters.iter().all(|f| f.matches(&node.labels)) {
            entries.push((id.clone(), node.clone()));
        } else {
            filtered_out += 1;
        }
    }
    let defaults = || {
        rules
            .default_servers
            .iter()
            .map(|d| (d.id.clone(), d.node.clone()))
    };
    let fallback = if !entries.is_empty() {
        if rules.keep_default_servers {
            entries.extend(defaults());
        }
        Fallback::None
    } else if !rules.default_servers.is_empty() {
        entries.extend(defaults());
        Fallback::DefaultServers
    } else if rules.use_previous_backends && has_current {
        Fallback::Previous
    } else {
        Fallback::None
    };
    let (demoted, locality) = if fallback == Fallback::Previous {
        (HashSet::new(), LocalityState::Off)
    } else {
        locality_of(&entries, rules)
    };
    Selection {
        entries,
        demoted,
        fallback,
        locality,
        filtered_out,
    }
}

/// Locality over `entries`: the `host:port` of the backends to demote, and the verdict.
pub fn locality_of(entries: &[(String, Node)], rules: Rules<'_>) -> (HashSet<String>, LocalityState) {
    match rules.locality {
        Some(loc) if !loc.value.is_empty() => locality(entries, loc, rules.default_weight),
        _ => (HashSet::new(), LocalityState::Off),
    }
}

/// Splits `entries` into local and other usable backends; demotes the others when the local
/// ones are enough.
fn locality(
    entries: &[(String, Node)],
    loc: &Locality,
    default_weight: u32,
) -> (HashSet<String>, LocalityState) {
    let usable = |n: &Node| {
        let opts = ServerOptions::parse(n.haproxy_server_options.as_deref());
        !opts.backup && opts.effective_weight(n.weight, default_weight) > 0
    };
    let is_local = |n: &Node| n.labels.get(&loc.label) == Some(&loc.value);
    let total = entries.iter().filter(|(_, n)| usable(n)).count();
    let local = entries.iter().filter(|(_, n)| usable(n) && is_local(n)).count();
    let enough = match loc.min_local {
        MinLocal::Count(c) => local >= c as usize,
        MinLocal::Percent(p) => total > 0 && local * 100 >= p as usize * total,
    };
    if !enough {
        return (HashSet::new(), LocalityState::Failover { local, usable: total });
    }
    let demoted = entries
        .iter()
        .filter(|(_, n)| !is_local(n))
        .map(|(_, n)| format!("{}:{}", n.host, n.port))
        .collect();
    (demoted, LocalityState::Local { local, usable: total })
}

#[cfg(test)]
mod tests;
