//! What ZooKeeper should hold for a service, as a pure function of its health, the
//! operator's state and the warm-up ramp. The result travels to the reporters on a `watch`
//! channel (latest value wins; DESIGN §3.4).

use std::sync::Arc;
use std::time::Instant;

use common::codec::{self, Node};

use crate::config::ServiceConfig;

/// The state a service's node should be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No node.
    Absent,
    /// A node with `"available": true` and this weight.
    Available {
        /// Weight written in the payload, `0..=255`.
        weight: u8,
    },
    /// A node with `"available": false` and a reason (`expose_unavailable: true`).
    Unavailable {
        /// Written as `unavailable_reason`.
        reason: String,
    },
}

/// What the operator asked through the maintenance API (persisted in the state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Operator {
    /// Deregistered (or marked unavailable) whatever the checks say.
    pub disabled: bool,
    /// Registered even when the checks fail.
    pub force: bool,
    /// Replaces the configured weight.
    pub weight: Option<u8>,
}

/// Everything the desired state depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// Every check is up (after hysteresis).
    pub healthy: bool,
    /// Names of the checks that are down, for the reason.
    pub down_checks: &'a [String],
    /// The operator's state for this service (global disable folded in by the caller).
    pub operator: &'a Operator,
    /// The configured weight.
    pub weight: u8,
    /// Keep the node with `available: false` instead of deleting it.
    pub expose_unavailable: bool,
    /// The warm-up ramp's current ceiling, while it runs.
    pub warmup: Option<u8>,
    /// Why the service may not become available although it would (the `pre_available`
    /// hook failed).
    pub held: Option<&'a str>,
}

/// The one rule: disabled beats everything; then healthy or forced registers with the
/// operator's weight (else the configured one), bounded by the warm-up ramp, unless a hook
/// holds it back; otherwise the node goes, or stays unavailable with `expose_unavailable`.
pub fn desired(i: &Inputs<'_>) -> State {
    let down = |reason: String| {
        if i.expose_unavailable {
            State::Unavailable { reason }
        } else {
            State::Absent
        }
    };
    if i.operator.disabled {
        return down("disabled by operator".to_string());
    }
    if i.healthy || i.operator.force {
        if let Some(why) = i.held {
            return down(why.to_string());
        }
        let weight = i.operator.weight.unwrap_or(i.weight);
        // A forced service is not "turning healthy": no ramp.
        let weight = match i.warmup {
            Some(ceiling) if i.healthy => weight.min(ceiling.max(1)),
            _ => weight,
        };
        return State::Available { weight };
    }
    if i.down_checks.is_empty() {
        down("checks failing".to_string())
    } else {
        down(format!("checks failing: {}", i.down_checks.join(", ")))
    }
}

/// A desired state with its payload, as published to the reporters.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The state.
    pub state: State,
    /// The payload to write (`None` for [`State::Absent`]).
    pub payload: Option<Arc<Vec<u8>>>,
    /// When this state was decided (for the desired-change → write latency).
    pub since: Instant,
}

impl Default for Desired {
    fn default() -> Self {
        Desired {
            state: State::Absent,
            payload: None,
            since: Instant::now(),
        }
    }
}

impl Desired {
    /// The desired state `state` of service `s`, with its payload.
    pub fn new(state: State, s: &ServiceConfig) -> Desired {
        let payload = payload(&state, s).map(Arc::new);
        Desired {
            state,
            payload,
            since: Instant::now(),
        }
    }
}

/// The payload for `state` (none when absent).
pub fn payload(state: &State, s: &ServiceConfig) -> Option<Vec<u8>> {
    let (weight, available, reason) = match state {
        State::Absent => return None,
        State::Available { weight } => (*weight, true, None),
        State::Unavailable { reason } => (0, false, Some(reason.clone())),
    };
    Some(codec::encode(&node(s, weight, available, reason)))
}

/// The node describing service `s` in the given state.
pub fn node(s: &ServiceConfig, weight: u8, available: bool, reason: Option<String>) -> Node {
    Node {
        host: s.host.clone(),
        port: s.port,
        name: Some(s.instance_id.clone()),
        // An unavailable node keeps the configured weight: readers that do not know
        // `available` (airbnb synapse) see the usual node.
        weight: Some(u32::from(if available { weight } else { s.weight })),
        available,
        unavailable_reason: reason,
        haproxy_server_options: s.haproxy_server_options.clone(),
        labels: s.labels.clone(),
        shard: None,
    }
}

#[cfg(test)]
mod tests;
