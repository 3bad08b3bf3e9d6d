//! Consistent hashing: weighted Maglev (Eisenbud et al., NSDI 2016), and the stable hash
//! functions callers use to turn a header, cookie or address into a key. HOT PATH:
//! [`Maglev::lookup`] is one multiply and one array read.
//!
//! - Every backend has a permutation of the table's `M` slots (`M` prime), derived from its
//!   identity (`host:port`) only; backends take turns claiming their next free preferred slot
//!   until the table is full. Turns follow weights (the earliest-deadline order of
//!   [`super::rr`], with phases from the identity hash), so a backend's share of slots, and so
//!   of keys, is its share of the weight (within a slot or so: Maglev's turn-taking makes
//!   slot counts nearly exact).
//! - Everything is derived from identities and weights, never from the order of the input or
//!   from process randomness: every synapse host builds the same table, a rebuild with the
//!   same members gives the same table, and adding or removing one backend of `N` moves about
//!   `1/N` of the keys (Maglev trades a little extra movement for near-perfect balance).
//! - `M` is 65 537 up to 655 backends (≥ 100 slots each, ≈1 % imbalance), then the next prime
//!   above 2¹⁷, 2¹⁸, ... Crossing one of those sizes reshuffles most keys, once.

use std::fmt;

use super::reduce;
use super::rr::edf_order;

/// FNV-1a 64-bit of `bytes`, finished with a 64-bit avalanche mix. Stable: the same bytes give
/// the same hash on every host, every process, every version (tests pin known values), so
/// every synapse sends a key to the same backend. Not collision-resistant against an
/// adversary choosing keys; it only needs to spread honest keys.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// [`hash_bytes`] of the address's octets (4 for IPv4, 16 for IPv6). An IPv4-mapped IPv6
/// address hashes as its IPv4 form, so dual-stack listeners agree.
pub fn hash_ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash_bytes(&v4.octets()),
            None => hash_bytes(&v6.octets()),
        },
    }
}

/// The splitmix64 / murmur3 finaliser: every input bit affects every output bit.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Smallest table size: a prime, ≥ 100 slots per backend up to 655 backends.
const BASE_SIZE: u64 = 1 << 16;
/// Largest table size (about 16 M slots, 64 MiB); past it, fewer than 100 slots per backend.
const MAX_SIZE: u64 = 1 << 24;
const EMPTY: u32 = u32::MAX;

/// The lookup table: slot → tier position.
pub(crate) struct Maglev {
    table: Box<[u32]>,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("size", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl Maglev {
    /// Builds the table for backends identified by `keys` with `weights` (both by position;
    /// weight 0 gets no slot).
    pub(crate) fn build(keys: &[&str], weights: &[u32]) -> Maglev {
        let n = keys.len().min(weights.len());
        let live = weights.iter().take(n).filter(|&&w| w > 0).count();
        if live == 0 {
            return Maglev { table: Box::new([]) };
        }
        if live == 1 {
            let pos = weights.iter().position(|&w| w > 0).unwrap_or(0);
            return Maglev {
                table: Box::new([u32::try_from(pos).unwrap_or(0)]),
            };
        }
        let size = table_size(live);
        let ids: Vec<u64> = keys.iter().take(n).map(|k| hash_bytes(k.as_bytes())).collect();
        // Per backend: current preferred slot and the stride of its permutation.
        let mut cursor: Vec<u64> = ids.iter().map(|&h| h % size).collect();
        let skip: Vec<u64> = ids
            .iter()
            .map(|&h| mix64(h ^ 0x6a09_e667_f3bc_c909) % (size - 1) + 1)
            .collect();
        let w: Vec<u64> = weights.iter().take(n).map(|&w| u64::from(w)).collect();
        let phases: Vec<u64> = ids.iter().map(|&h| (h >> 32) + 1).collect();
        // Enough turns for each backend to claim its share of the slots (rounded up, so the
        // total covers the table); every turn claims exactly one slot.
        let sum: u128 = w.iter().map(|&x| u128::from(x)).sum();
        let turns: Vec<u64> = w
            .iter()
            .map(|&x| {
                let share = (u128::from(size) * u128::from(x)).div_ceil(sum);
                u64::try_from(share).unwrap_or(u64::MAX)
            })
            .collect();
        let mut table = vec![EMPTY; usize::try_from(size).unwrap_or(0)];
        let mut filled = 0;
        for pos in edf_order(&w, &phases, &ids, &turns) {
            if filled == table.len() {
                break;
            }
            let p = pos as usize;
            // A permutation of a prime-sized table visits every slot, so this ends.
            loop {
                let slot = cursor[p] as usize;
                // cursor, skip < size: one subtraction instead of a division.
                cursor[p] += skip[p];
                if cursor[p] >= size {
                    cursor[p] -= size;
                }
                if table[slot] == EMPTY {
                    table[slot] = pos;
                    filled += 1;
                    break;
                }
            }
        }
        Maglev {
            table: table.into_boxed_slice(),
        }
    }

    /// The position owning `key`; None for an empty table.
    pub(crate) fn lookup(&self, key: u64) -> Option<u32> {
        self.table
            .get(reduce(mix64(key), self.table.len()))
            .copied()
            .filter(|&p| p != EMPTY)
    }

    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.table.len()
    }
}

/// The first prime at or above `BASE_SIZE · 2ᵏ` for the smallest `k` giving ≥ 100 slots per
/// backend (capped at `MAX_SIZE`).
fn table_size(backends: usize) -> u64 {
    let want = (backends as u64).saturating_mul(100);
    let mut base = BASE_SIZE;
    while base < want && base < MAX_SIZE {
        base <<= 1;
    }
    next_prime(base)
}

fn next_prime(mut n: u64) -> u64 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}
