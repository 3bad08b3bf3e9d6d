//! What synapse's memory grows by per backend and per service: golden budgets (issue 13),
//! held on the ordinary debug binary with real ZooKeeper.
//!
//! Each figure is the difference of two fresh synapse processes' anonymous resident memory
//! (`RssAnon`: heap, stacks; the mapped code, which differs between builds, is left out),
//! a base one and one with the extra backends or services, both measured once every
//! backend is routed and their memory has stopped moving. Two processes rather than one
//! grown in place: a table rebuilt while members arrive would leave freed memory the
//! allocator keeps, which is noise, not cost.
//!
//! The budgets sit about 1.5× above what synapse keeps today on this debug build (4.0 kB per
//! backend; 22.5 kB per service with its backend since its series became atomic cells, 39 kB
//! before; see docs/benchmark.md): a margin a loaded CI machine does not cross, and a
//! doubling of the cost does. Envoy's figures, for scale:
//! ≤ 3 kB per host, ≤ 42 kB per cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::{Duration, Instant};

use integration_tests::agents::http_get;
use integration_tests::{eventually, SynapseBuilder, SynapseService, Zk, ZkCluster};
use serde_json::Value;

/// Budget per extra backend, in bytes (Envoy: ≤ 3 kB per host).
const PER_BACKEND_BUDGET: f64 = 6144.0;
/// Budget per extra service with one backend, in bytes (Envoy: ≤ 42 kB per cluster).
const PER_SERVICE_BUDGET: f64 = 34_816.0;

/// Extra backends, in one service.
const EXTRA_BACKENDS: usize = 1000;
/// Extra services, one backend each.
const EXTRA_SERVICES: usize = 200;

const WAIT: Duration = Duration::from_secs(60);

/// `RssAnon` of `pid`, in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("RssAnon in /proc/<pid>/status (Linux ≥ 4.5)")
}

/// Writes `n` backends under `path` (ports from `first`; nothing listens: only the tables
/// are measured).
fn populate(zk: &Zk, path: &str, first: u16, n: usize) {
    for i in 0..n {
        let port = first + i as u16;
        zk.create(
            &format!("{path}/n{i:05}"),
            format!("{{\"host\":\"127.0.0.1\",\"port\":{port},\"name\":\"i-{i:05}\"}}").as_bytes(),
        );
    }
}

/// Backends routed per service, from `/services`.
fn routed_counts(admin: u16) -> Option<Vec<(String, usize)>> {
    let (status, body) = http_get(admin, "/services").ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let map = v.as_object()?;
    Some(
        map.iter()
            .map(|(k, s)| (k.clone(), s["backends"].as_array().map_or(0, Vec::len)))
            .collect(),
    )
}

/// Starts synapse with `services` (name, path, backends), waits until each routes to all of
/// its backends and the process's memory is steady, returns its `RssAnon`.
fn steady_rss(cs: &str, services: &[(String, String, usize)]) -> u64 {
    let mut b = SynapseBuilder::new(cs).env("RUST_LOG", "warn");
    for (name, path, _) in services {
        b = b.service(SynapseService::tcp(name).zk_path(path));
    }
    let synapse = b.start();
    let admin = synapse.admin();
    eventually("every service routes to all of its backends", WAIT, || {
        let counts = routed_counts(admin)?;
        services
            .iter()
            .all(|(name, _, n)| counts.iter().any(|(k, c)| k == name && c == n))
            .then_some(())
    });
    // Steady: three readings 300 ms apart within 64 KiB of each other (start-up work, the
    // state of the first scrape, lazily touched pages all settle in well under a second).
    let pid = synapse.agent().pid();
    let deadline = Instant::now() + WAIT;
    let mut last: Vec<u64> = Vec::new();
    loop {
        last.push(rss_anon(pid));
        if last.len() >= 3 {
            let w = &last[last.len() - 3..];
            let (lo, hi) = (w.iter().min().unwrap(), w.iter().max().unwrap());
            if hi - lo <= 64 * 1024 {
                return *hi;
            }
        }
        assert!(
            Instant::now() < deadline,
            "synapse's memory never settled: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A service `name` at `/memory/<name>` with `n` backends.
fn service(name: &str, n: usize) -> (String, String, usize) {
    (name.to_string(), format!("/memory/{name}"), n)
}

/// Memory per extra backend and per extra service stays within its budget.
#[test]
fn memory_per_backend_and_per_service_stays_within_budget() {
    let zk_cluster = ZkCluster::standalone();
    let cs = zk_cluster.connect_string();
    let zk = Zk::connect(&cs);
    populate(&zk, "/memory/base", 20_000, 10);
    populate(&zk, "/memory/big", 21_000, 10 + EXTRA_BACKENDS);
    for s in 0..EXTRA_SERVICES {
        populate(&zk, &format!("/memory/s{s:03}"), 30_000 + s as u16, 1);
    }

    let base = steady_rss(&cs, &[service("base", 10)]);
    let big = steady_rss(&cs, &[service("big", 10 + EXTRA_BACKENDS)]);
    let mut many = vec![service("base", 10)];
    many.extend((0..EXTRA_SERVICES).map(|s| service(&format!("s{s:03}"), 1)));
    let wide = steady_rss(&cs, &many);

    let per_backend = (big as f64 - base as f64) / EXTRA_BACKENDS as f64;
    let per_service = (wide as f64 - base as f64) / EXTRA_SERVICES as f64;
    println!(
        "RssAnon: base {:.1} MiB; +{EXTRA_BACKENDS} backends {:.1} MiB ({per_backend:.0} B per backend, \
         budget {PER_BACKEND_BUDGET}); +{EXTRA_SERVICES} services {:.1} MiB ({per_service:.0} B per \
         service, budget {PER_SERVICE_BUDGET})",
        base as f64 / 1048576.0,
        big as f64 / 1048576.0,
        wide as f64 / 1048576.0,
    );
    assert!(
        per_backend <= PER_BACKEND_BUDGET,
        "{per_backend:.0} bytes per backend, over the budget of {PER_BACKEND_BUDGET}"
    );
    assert!(
        per_service <= PER_SERVICE_BUDGET,
        "{per_service:.0} bytes per service, over the budget of {PER_SERVICE_BUDGET}"
    );
}
