//! Load-balancing policies. HOT PATH: [`Balancer::pick`] runs once per connection.
//!
//! A [`Balancer`] is immutable once built, like the route table that owns it: the service's
//! single writer builds one per membership (or weight) change, off the data path, and the
//! data path only reads it. What changes per connection (active counts, latency estimates,
//! ejections) lives in [`Live`], one per backend identity, carried across tables. A pick is
//! lock-free (relaxed atomics only) and allocation-free; the policies are an enum, not
//! `Box<dyn>`.
//!
//! | policy | first pick | cost |
//! |---|---|---|
//! | [`round_robin`](rr) (default) | smooth weighted round-robin from a precomputed schedule | `O(1)` |
//! | [`least_conn`](least_conn) | lowest `(active + 1) / weight` | `O(n)` |
//! | [`random`](random) | weighted random | `O(log n)` |
//! | [`p2c_ewma`](p2c) | cheaper of two random picks by `latency · (active + 1) / weight` | `O(1)` |
//! | [`hash`](hash) | weighted Maglev on a caller-supplied key | `O(1)` |
//!
//! Rules shared by every policy (HAProxy's, so a fleet moving off HAProxy keeps its meaning):
//!
//! - **Weight 0 is never picked** (draining, or `disabled`). When every backend has weight 0,
//!   a pick returns nothing, as HAProxy sends nothing.
//! - **`backup` backends are used only when no non-backup backend is usable**: a pick lists
//!   the usable primaries first, then, as the last fallbacks, the usable backups.
//! - **Usable = not ejected.** When no backend at all is usable the pick ignores ejection
//!   (Envoy's "panic mode" at 0 %): an ejected backend is a better bet than none. The caller
//!   can enter panic mode earlier with [`Ctx::ignore_ejection`] (the outlier detector knows
//!   the usable fraction; that is where a panic threshold belongs).
//! - **Fallbacks**: a pick yields up to `attempts` distinct backends: the policy's choice,
//!   then the rest of the tier in a walk with a random stride coprime to the tier size (for
//!   `hash`, a stride derived from the key), so the retries of a dead backend spread over the
//!   pool rather than all landing on its neighbour. When the policy's choice is ejected,
//!   `round_robin`, `random` and `hash` first re-draw (twice, weighted) before walking.

mod hash;
mod least_conn;
mod p2c;
mod policy;
mod random;
mod rr;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::backend::{now_ns, ns_at, Attempt, InFlight, Live, DEFAULT_RTT, EWMA_DECAY, FAILURE_PENALTY};
pub use hash::{hash_bytes, hash_ip, mix64};
pub use policy::{HashOn, Policy, PolicyError, PolicyName, ServerOptions, DEFAULT_WEIGHT};
pub use rr::SCHEDULE_CAP;

/// One backend as the balancer sees it, by position in the table's backend list.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// Identity, `host:port`: what `hash` places on its ring. Must be unique.
    pub key: &'a str,
    /// Effective weight; 0 = never picked.
    pub weight: u32,
    /// HAProxy `backup`: only used when no non-backup member is usable.
    pub backup: bool,
    /// Live state, shared with the backend's `BackendState`.
    pub live: &'a Arc<Live>,
}

impl<'a> Member<'a> {
    /// A member from a node payload: `weight <n>` in `haproxy_server_options`, else the
    /// payload's `weight`, else `default_weight` (see [`DEFAULT_WEIGHT`]); `disabled` → 0;
    /// `backup` from the options.
    pub fn from_node(
        key: &'a str,
        node: &common::codec::Node,
        default_weight: u32,
        live: &'a Arc<Live>,
    ) -> Member<'a> {
        let opts = ServerOptions::parse(node.haproxy_server_options.as_deref());
        Member {
            key,
            weight: opts.effective_weight(node.weight, default_weight),
            backup: opts.backup,
            live,
        }
    }
}

/// What a pick needs from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Most backends to return (connect attempts). 0 returns nothing.
    pub attempts: usize,
    /// The hash key for `hash` ([`hash_bytes`] of the header or cookie, [`hash_ip`] of the
    /// client). None (e.g. the header is missing) picks a weighted-random backend. Ignored by
    /// other policies.
    pub key: Option<u64>,
    /// Treat ejected backends as usable (panic mode). Default false.
    pub ignore_ejection: bool,
}

impl Ctx {
    /// Up to `attempts` backends, no key, ejection honoured.
    pub fn new(attempts: usize) -> Ctx {
        Ctx {
            attempts,
            key: None,
            ignore_ejection: false,
        }
    }

    /// With a hash key.
    pub fn with_key(self, key: u64) -> Ctx {
        Ctx {
            key: Some(key),
            ..self
        }
    }

    /// Ignoring ejection (panic mode).
    pub fn ignoring_ejection(self) -> Ctx {
        Ctx {
            ignore_ejection: true,
            ..self
        }
    }
}

/// An immutable balancer over a fixed member list. Picks return member indices (positions
/// in the slice given to [`Balancer::build`]).
#[derive(Debug)]
pub struct Balancer {
    policy: PolicyName,
    len: usize,
    primary: Tier,
    backup: Tier,
    /// splitmix64 state; one relaxed add per pick that needs randomness.
    rng: AtomicU64,
}

impl Default for Balancer {
    /// No members: every pick is empty.
    fn default() -> Self {
        Balancer::build_seeded(PolicyName::default(), &[], 0)
    }
}

impl Balancer {
    /// Builds a balancer for `members` (the table's backends, in the table's order), seeded
    /// from the OS's per-process randomness. Cost: `O(n)` plus `O(S log n)` for
    /// `round_robin` (`S ≤` [`SCHEDULE_CAP`]) or `O(M log M)` for `hash` (`M ≥ 65 537`).
    pub fn build(policy: PolicyName, members: &[Member<'_>]) -> Balancer {
        Balancer::build_seeded(policy, members, random_seed())
    }

    /// [`Balancer::build`] with a fixed seed (tests, reproducible simulations).
    pub fn build_seeded(policy: PolicyName, members: &[Member<'_>], seed: u64) -> Balancer {
        let mut primary = Vec::new();
        let mut backup = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            if m.weight > 0 {
                if m.backup { &mut backup } else { &mut primary }.push(i);
            }
        }
        Balancer {
            policy,
            len: members.len(),
            primary: Tier::build(policy, members, &primary, mix64(seed ^ 1)),
            backup: Tier::build(policy, members, &backup, mix64(seed ^ 2)),
            rng: AtomicU64::new(seed),
        }
    }

    /// The policy.
    pub fn policy(&self) -> PolicyName {
        self.policy
    }

    /// Members given to `build`, including weight-0 ones.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when built from no member.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members that can receive traffic: `(primaries, backups)` with weight > 0.
    pub fn pickable(&self) -> (usize, usize) {
        (self.primary.len(), self.backup.len())
    }

    /// Up to `ctx.attempts` distinct member indices to try in order. Lazy: fallbacks cost
    /// nothing until asked for. Empty when there is no member with weight > 0.
    pub fn pick(&self, ctx: Ctx) -> Picks<'_> {
        Picks {
            b: self,
            ctx,
            left: ctx.attempts,
            stage: 0,
            walking: false,
            yielded: 0,
            pos: 0,
            step: 1,
            visited: 0,
            now: 0,
            seed: None,
            draws: 0,
        }
    }

    fn next_seed(&self) -> u64 {
        mix64(self.rng.fetch_add(GOLDEN, Ordering::Relaxed))
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A seed that differs per process and per call, without a dependency: std's `RandomState`
/// is seeded from the OS once per thread and varied per instance.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns());
    h.finish()
}

/// `bits` mapped uniformly onto `0..n` (Lemire's multiply-shift; no division).
pub(crate) fn reduce(bits: u64, n: usize) -> usize {
    ((u128::from(bits) * n as u128) >> 64) as usize
}

/// The primaries or the backups, with their policy state. Positions are indices into
/// `members`.
#[derive(Debug)]
pub(crate) struct Tier {
    members: Box<[u32]>,
    weights: Box<[u32]>,
    lives: Box<[Arc<Live>]>,
    /// Walk strides, each coprime to the tier size.
    steps: Box<[u32]>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    RoundRobin(rr::Schedule),
    LeastConn,
    Random(random::Cumulative),
    P2cEwma,
    Hash(hash::Maglev),
}

impl Tier {
    fn build(policy: PolicyName, all: &[Member<'_>], picked: &[u32], seed: u64) -> Tier {
        let of = |i: &u32| &all[*i as usize];
        let weights: Box<[u32]> = picked.iter().map(|i| of(i).weight).collect();
        let lives = picked.iter().map(|i| of(i).live.clone()).collect();
        let kind = match policy {
            PolicyName::RoundRobin => Kind::RoundRobin(rr::Schedule::build(&weights, seed)),
            PolicyName::LeastConn => Kind::LeastConn,
            PolicyName::Random => Kind::Random(random::Cumulative::build(&weights)),
            PolicyName::P2cEwma => Kind::P2cEwma,
            PolicyName::Hash => {
                let keys: Vec<&str> = picked.iter().map(|i| of(i).key).collect();
                Kind::Hash(hash::Maglev::build(&keys, &weights))
            }
        };
        Tier {
            members: picked.into(),
            steps: coprime_steps(picked.len()),
            weights,
            lives,
            kind,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn live(&self, pos: u32) -> &Live {
        &self.lives[pos as usize]
    }

    pub(crate) fn weight(&self, pos: u32) -> u32 {
        self.weights[pos as usize]
    }
}

/// Up to 8 strides in `1..n` coprime to `n`, spread over the range (`[1]` for `n ≤ 2`).
fn coprime_steps(n: usize) -> Box<[u32]> {
    let Ok(n) = u32::try_from(n) else {
        return Box::new([1]);
    };
    if n <= 2 {
        return Box::new([1]);
    }
    let mut steps: Vec<u32> = Vec::with_capacity(8);
    for j in 0..8u64 {
        let mut s = (1 + j * u64::from(n) / 8) as u32;
        while s < n && gcd32(s, n) != 1 {
            s += 1;
        }
        if s < n && !steps.contains(&s) {
            steps.push(s);
        }
    }
    steps.into()
}

fn gcd32(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The candidates of one pick, lazily: the usable primaries (policy choice, then the walk),
/// then the usable backups, then (only if nothing was usable) everything ignoring ejection.
/// Yields member indices. Allocation-free.
pub struct Picks<'a> {
    b: &'a Balancer,
    ctx: Ctx,
    left: usize,
    /// 0 primaries, 1 backups, 2 primaries in panic, 3 backups in panic, 4 done.
    stage: u8,
    walking: bool,
    yielded: usize,
    pos: u32,
    step: u32,
    visited: u32,
    /// [`now_ns`], read at most once per pick and only when needed; 0 = not read yet.
    now: u64,
    /// Per-pick random stream: one atomic draw (or the hash key) then local mixing.
    seed: Option<u64>,
    draws: u64,
}

impl fmt::Debug for Picks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picks")
            .field("ctx", &self.ctx)
            .field("left", &self.left)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Picks<'_> {
    fn now(&mut self) -> u64 {
        if self.now == 0 {
            self.now = now_ns();
        }
        self.now
    }

    fn bits(&mut self) -> u64 {
        let seed = match self.seed {
            Some(s) => s,
            None => {
                let s = match self.ctx.key {
                    Some(k) if self.b.policy == PolicyName::Hash => mix64(k ^ GOLDEN),
                    _ => self.b.next_seed(),
                };
                self.seed = Some(s);
                s
            }
        };
        self.draws += 1;
        mix64(seed.wrapping_add(self.draws.wrapping_mul(GOLDEN)))
    }

    fn panic(&self) -> bool {
        self.ctx.ignore_ejection || self.stage >= 2
    }

    fn tier(&self) -> &Tier {
        if self.stage % 2 == 0 {
            &self.b.primary
        } else {
            &self.b.backup
        }
    }

    fn usable(&mut self, pos: u32) -> bool {
        if self.panic() {
            return true;
        }
        let until = self.tier().live(pos).ejected_until();
        until == 0 || until <= self.now()
    }

    /// The policy's choice in the current tier (possibly unusable; the walk then moves on).
    fn first(&mut self) -> u32 {
        let b = self.b;
        let tier = if self.stage % 2 == 0 {
            &b.primary
        } else {
            &b.backup
        };
        match &tier.kind {
            Kind::RoundRobin(s) => {
                let first = s.next().unwrap_or(0);
                self.redraw(first, |me| s.at(me.bits()))
            }
            Kind::Random(c) => {
                let bits = self.bits();
                let first = c.draw(bits).unwrap_or(0);
                self.redraw(first, |me| c.draw(me.bits()))
            }
            Kind::Hash(m) => {
                let first = match self.ctx.key {
                    Some(k) => m.lookup(k),
                    None => m.lookup(self.bits()),
                };
                self.redraw(first.unwrap_or(0), |me| m.lookup(me.bits()))
            }
            Kind::LeastConn => {
                let start = reduce(self.bits(), tier.len()) as u32;
                least_conn::first(tier, start, |p| self.usable(p))
            }
            Kind::P2cEwma => {
                let bits = [self.bits(), self.bits()];
                let now = self.now();
                p2c::first(tier, bits, now, |p| self.usable(p))
            }
        }
    }

    /// `first`, or up to two weighted re-draws if it is not usable.
    fn redraw(&mut self, first: u32, mut draw: impl FnMut(&mut Self) -> Option<u32>) -> u32 {
        let mut pos = first;
        for _ in 0..2 {
            if self.usable(pos) {
                break;
            }
            pos = draw(self).unwrap_or(pos);
        }
        pos
    }
}

impl Iterator for Picks<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.left > 0 && self.stage < 4 {
            if !self.walking {
                // Panic stages only when nothing at all was usable.
                let skip_panic = self.stage >= 2 && (self.yielded > 0 || self.ctx.ignore_ejection);
                if skip_panic || self.tier().len() == 0 {
                    self.stage += 1;
                    continue;
                }
                self.pos = self.first();
                let bits = self.bits();
                let steps = &self.tier().steps;
                self.step = steps.get(reduce(bits, steps.len())).copied().unwrap_or(1);
                self.visited = 0;
                self.walking = true;
            }
            let n = self.tier().len() as u32;
            while self.visited < n {
                let pos = self.pos;
                self.pos = ((u64::from(pos) + u64::from(self.step)) % u64::from(n)) as u32;
                self.visited += 1;
                if self.usable(pos) {
                    self.left -= 1;
                    self.yielded += 1;
                    return Some(self.tier().members[pos as usize] as usize);
                }
            }
            self.walking = false;
            self.stage += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests;
