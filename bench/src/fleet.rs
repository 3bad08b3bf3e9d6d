//! The fleet phase (`--only fleet`): N watchers of one service path, each with its own
//! ZooKeeper session through `common::registry` (as N synapses: `replace_lagging_session`,
//! `read_only`, the agents' default splay and session timeout), and M registrations through
//! nerve's registration code (`Registration`, one session each), against a 3-server ensemble
//! started for the phase. For each N:
//!
//! - propagation of a single change (a registration created or removed) from the write to
//!   every watcher (p50/p99 of the last watcher's latency, over the changes);
//! - ZooKeeper requests per change per watcher (the watches' own count, `Session::requests`;
//!   and the servers' `zk_packets_received` from `mntr`, pings included);
//! - the ensemble's CPU (utime+stime of the three JVMs) and packet rate, quiet and during 20
//!   changes/s;
//! - storms: leader kill, full ensemble restart, every server frozen past the session timeout
//!   (every session expires): packets per 100 ms window at the ensemble (peak, as a rate) and
//!   the time until every watcher holds the right membership again (a change is written as
//!   soon as the ensemble takes it; measured from the event).
//!
//! The restart storm is also run once with the splay off (an unspread fleet) at the size
//! closest to 1000, for the target "peak at most 1/5 of an unspread fleet". A variant with two
//! observers (watchers connected to the observers only) measures propagation at that size.
//! Writes `fleet.json` and `fleet.png` next to the results JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::registry::{self, Registration, Registry, RegistryOptions, Session, WatchUpdate};
use integration_tests::zk::{four_letter_word, parse_mode, ZkOptions};
use integration_tests::ZkCluster;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const PATH: &str = "/services/fleet";
/// Registrations held all along (M nerves).
const REGISTRATIONS: usize = 10;
/// Timed single changes per size.
const CHANGES: usize = 20;
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(120);

/// What one watcher knows, and when it saw the probe change it is asked about.
struct WatcherState {
    members: Mutex<BTreeSet<String>>,
}

/// The change being timed: a child with this prefix present (or absent); when each watcher
/// first saw it so.
struct Probe {
    present: bool,
    seen: Vec<Option<Instant>>,
}

struct Fleet {
    cancel: CancellationToken,
    states: Vec<Arc<WatcherState>>,
    sessions: Vec<Arc<Session>>,
    probe: Arc<Mutex<Option<Probe>>>,
    // Kept alive: a registry's sessions stop with its token, not its drop, but the handle
    // documents ownership.
    _registries: Vec<Registry>,
}

fn probe_matches(members: &BTreeSet<String>, present: bool) -> bool {
    members.iter().any(|m| m.starts_with("probe_")) == present
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            cancel: CancellationToken::new(),
            states: Vec::new(),
            sessions: Vec::new(),
            probe: Arc::new(Mutex::new(None)),
            _registries: Vec::new(),
        }
    }

    /// Adds watchers up to `n` (in batches, so the ensemble is not stormed by the setup).
    fn grow(&mut self, rt: &Runtime, connect: &str, n: usize, splay: Duration) {
        // A probe is armed for the watchers of its time.
        *self.probe.lock().unwrap_or_else(PoisonError::into_inner) = None;
        while self.states.len() < n {
            let batch = (n - self.states.len()).min(50);
            for _ in 0..batch {
                let _guard = rt.enter();
                let reg = Registry::new(
                    RegistryOptions {
                        session_timeout: SESSION_TIMEOUT,
                        replace_lagging_session: true,
                        read_only: true,
                        splay,
                        ..Default::default()
                    },
                    self.cancel.clone(),
                );
                let session = reg.session(connect);
                let mut rx = registry::watch(session.clone(), PATH.into(), self.cancel.clone());
                let state = Arc::new(WatcherState {
                    members: Mutex::new(BTreeSet::new()),
                });
                let index = self.states.len();
                let (st, probe) = (state.clone(), self.probe.clone());
                rt.spawn(async move {
                    while let Some(u) = rx.recv().await {
                        let mut members = st.members.lock().unwrap_or_else(PoisonError::into_inner);
                        match u {
                            WatchUpdate::Reset(all) => *members = all.into_iter().map(|m| m.id).collect(),
                            WatchUpdate::Upsert(m) => {
                                members.insert(m.id);
                            }
                            WatchUpdate::Remove(id) => {
                                members.remove(&id);
                            }
                            WatchUpdate::Invalid { .. } => {}
                        }
                        let mut p = probe.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(p) = p.as_mut() {
                            let present = p.present;
                            if let Some(slot @ None) = p.seen.get_mut(index) {
                                if probe_matches(&members, present) {
                                    *slot = Some(Instant::now());
                                }
                            }
                        }
                    }
                });
                self.states.push(state);
                self.sessions.push(session);
                self._registries.push(reg);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn correct(&self, expected: &BTreeSet<String>) -> usize {
        self.states
            .iter()
            .filter(|s| *s.members.lock().unwrap_or_else(PoisonError::into_inner) == *expected)
            .count()
    }

    fn requests(&self) -> u64 {
        self.sessions.iter().map(|s| s.requests()).sum()
    }

    fn arm(&self, present: bool) {
        let mut p = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = self
            .states
            .iter()
            .map(|s| {
                probe_matches(&s.members.lock().unwrap_or_else(PoisonError::into_inner), present)
                    .then(Instant::now)
            })
            .collect();
        *p = Some(Probe { present, seen });
    }

    /// Waits until every watcher saw the probe change; their times.
    fn wait_probe(&self, timeout: Duration) -> Result<Vec<Instant>> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let p = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(p) = p.as_ref() {
                    if p.seen.iter().all(Option::is_some) {
                        return Ok(p.seen.iter().flatten().copied().collect());
                    }
                }
            }
            if Instant::now() > deadline {
                let p = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
                let missing = p
                    .as_ref()
                    .map_or(0, |p| p.seen.iter().filter(|s| s.is_none()).count());
                bail!(
                    "{missing} of {} watchers did not see the change within {timeout:?}",
                    self.states.len()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The nerve side: M registrations plus the probe, each its own session.
struct Nerves {
    regs: Vec<Registration>,
    probe: Registration,
    _registry: Vec<Registry>,
}

impl Nerves {
    /// `splay`: as nerve's `zookeeper.splay` (the fleet's own).
    fn start(rt: &Runtime, connect: &str, cancel: &CancellationToken, splay: Duration) -> Result<Nerves> {
        let _guard = rt.enter();
        // Their sessions' logs (RUST_LOG) say `nerve`, the watchers' do not.
        let _span = tracing::info_span!("nerve").entered();
        let mut registries = Vec::new();
        let mut make = |name: &str| {
            let reg = Registry::new(
                RegistryOptions {
                    session_timeout: SESSION_TIMEOUT,
                    splay,
                    ..Default::default()
                },
                cancel.clone(),
            );
            let r = Registration::new(reg.session(connect), PATH, name);
            registries.push(reg);
            r
        };
        let mut regs: Vec<Registration> = (0..REGISTRATIONS).map(|i| make(&format!("host{i}"))).collect();
        let probe = make("probe");
        for (i, r) in regs.iter_mut().enumerate() {
            let data = payload(10_000 + i as u16);
            ensure(rt, r, &data)?;
        }
        Ok(Nerves {
            regs,
            probe,
            _registry: registries,
        })
    }

    fn expected(&self, probe: bool) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = self
            .regs
            .iter()
            .filter_map(|r| r.path().and_then(|p| p.rsplit('/').next()).map(str::to_string))
            .collect();
        if probe {
            if let Some(p) = self.probe.path().and_then(|p| p.rsplit('/').next()) {
                set.insert(p.to_string());
            }
        }
        set
    }

    /// Re-asserts the M registrations (after a storm their sessions may have been replaced).
    fn settle(&mut self, rt: &Runtime) -> Result<()> {
        for (i, r) in self.regs.iter_mut().enumerate() {
            let data = payload(10_000 + i as u16);
            ensure(rt, r, &data)?;
        }
        Ok(())
    }

    fn set_probe(&mut self, rt: &Runtime, present: bool) -> Result<()> {
        if present {
            let data = payload(20_000);
            ensure(rt, &mut self.probe, &data)
        } else {
            remove(rt, &mut self.probe)
        }
    }
}

fn payload(port: u16) -> Vec<u8> {
    format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}").into_bytes()
}

/// Makes the registration hold `data`, retrying (sessions come and go during storms).
fn ensure(rt: &Runtime, r: &mut Registration, data: &[u8]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        match rt.block_on(r.ensure(data)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("registering kept failing: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes the registration's node, retrying.
fn remove(rt: &Runtime, r: &mut Registration) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        match rt.block_on(r.remove()) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("deregistering kept failing: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `zk_packets_received` of every server, sampled every 100 ms in a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<u64>>>,
}

fn packets(port: u16) -> Option<u64> {
    let mntr = four_letter_word(port, "mntr", Duration::from_millis(300)).ok()?;
    mntr.lines()
        .find_map(|l| l.strip_prefix("zk_packets_received"))
        .and_then(|v| v.trim().parse().ok())
}

impl Sampler {
    fn start(ports: Vec<u16>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut last: Vec<Option<u64>> = ports.iter().map(|p| packets(*p)).collect();
            let mut windows = Vec::new();
            let mut next = Instant::now() + Duration::from_millis(100);
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next += Duration::from_millis(100);
                let mut total = 0;
                for (i, p) in ports.iter().enumerate() {
                    let now = packets(*p);
                    total += match (last[i], now) {
                        (Some(a), Some(b)) if b >= a => b - a,
                        // Restarted: its counter began again.
                        (_, Some(b)) => b,
                        _ => 0,
                    };
                    if now.is_some() {
                        last[i] = now;
                    }
                }
                windows.push(total);
            }
            windows
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

fn jvm_cpu_ticks(zk: &ZkCluster) -> u64 {
    zk.indices()
        .filter_map(|i| zk.pid(i))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ports(zk: &ZkCluster) -> Vec<u16> {
    zk.indices().map(|i| zk.client_port(i)).collect()
}

/// One timed change: (last watcher's latency, median watcher's latency), ms.
fn timed_change(rt: &Runtime, fleet: &Fleet, nerves: &mut Nerves, present: bool) -> Result<(f64, f64)> {
    fleet.arm(present);
    let t0 = Instant::now();
    nerves.set_probe(rt, present)?;
    let seen = fleet.wait_probe(WAIT)?;
    let mut ms: Vec<f64> = seen
        .iter()
        .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok((*ms.last().unwrap_or(&0.0), percentile(&ms, 0.5)))
}

fn wait_correct(fleet: &Fleet, expected: &BTreeSet<String>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while fleet.correct(expected) < fleet.states.len() {
        if Instant::now() > deadline {
            bail!(
                "{} of {} watchers hold the right membership after {timeout:?}",
                fleet.correct(expected),
                fleet.states.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// What a storm cost and how long the fleet took to be right again.
struct Storm {
    /// Peak packets/s at the ensemble over 100 ms windows.
    peak: f64,
    /// Mean packets/s over the sampled span.
    mean: f64,
    /// Seconds from the event until some server led (or stood alone) again.
    serving: f64,
    /// Seconds from the event until every watcher saw the change written after it.
    correct: f64,
    /// `correct` minus `serving`: how long the fleet took once the ensemble served again.
    correct_after_serving: f64,
    /// Packets per 100 ms window, from the event on.
    windows: Vec<u64>,
}

/// Polls the servers' `srvr` until one is leader (or standalone); the instant it saw so.
fn first_serving(ports: Vec<u16>, deadline: Instant) -> JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            let serving = ports.iter().any(|p| {
                four_letter_word(*p, "srvr", Duration::from_millis(200))
                    .ok()
                    .is_some_and(|s| matches!(parse_mode(&s), Some("leader" | "standalone")))
            });
            if serving {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
}

/// A storm: `event` breaks things, then the probe flips as soon as the ensemble takes it.
/// "Serving again" is measured from the end of the event (a restart's kill, a leader's kill,
/// the thaw of frozen servers); what breaks before it (the freeze) is not counted.
fn storm(
    rt: &Runtime,
    zk: &mut ZkCluster,
    fleet: &Fleet,
    nerves: &mut Nerves,
    event: impl FnOnce(&mut ZkCluster),
) -> Result<Storm> {
    let present = !probe_present(fleet);
    event(zk);
    let t0 = Instant::now();
    let sampler = Sampler::start(ports(zk));
    let serving = first_serving(ports(zk), t0 + WAIT);
    fleet.arm(present);
    nerves.set_probe(rt, present)?;
    let seen = fleet.wait_probe(WAIT);
    let correct = t0.elapsed().as_secs_f64();
    // The tail of the storm (late re-lists) after everyone is right.
    std::thread::sleep(Duration::from_secs(3));
    let windows = sampler.finish();
    let serving = serving
        .join()
        .ok()
        .flatten()
        .map_or(f64::NAN, |t| t.saturating_duration_since(t0).as_secs_f64());
    seen?;
    nerves.settle(rt)?;
    wait_correct(fleet, &nerves.expected(present), WAIT)?;
    let peak = windows.iter().copied().max().unwrap_or(0) as f64 * 10.0;
    let mean = windows.iter().sum::<u64>() as f64 / (windows.len().max(1) as f64 / 10.0);
    Ok(Storm {
        peak,
        mean,
        serving,
        correct,
        correct_after_serving: correct - serving,
        windows,
    })
}

/// The reconnection storm alone: the whole ensemble killed and restarted, no change written,
/// sampled until every session of the fleet is connected again and 3 s more. (Peak packets/s,
/// seconds from the kill until the last session was connected again, the windows.)
fn quiet_restart(zk: &mut ZkCluster, fleet: &Fleet) -> Result<(f64, f64, Vec<u64>)> {
    restart_all(zk);
    let t0 = Instant::now();
    let sampler = Sampler::start(ports(zk));
    // Every session loses its connection at the kill: wait until they show it (or 5 s), then
    // until each is connected again.
    let lost = t0 + Duration::from_secs(5);
    while fleet.sessions.iter().any(|s| s.status().connected) && Instant::now() < lost {
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = t0 + WAIT;
    while !fleet.sessions.iter().all(|s| s.status().connected) {
        if Instant::now() > deadline {
            bail!("not every session reconnected within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let windows = sampler.finish();
    let peak = windows.iter().copied().max().unwrap_or(0) as f64 * 10.0;
    Ok((peak, all, windows))
}

fn freeze_past_expiry(zk: &mut ZkCluster) {
    for i in zk.indices() {
        zk.freeze(i);
    }
    // The clients declare their sessions expired after 7/5 of the timeout without a server;
    // the servers expire them once thawed.
    std::thread::sleep(SESSION_TIMEOUT * 7 / 5 + Duration::from_secs(1));
    for i in zk.indices() {
        zk.thaw(i);
    }
}

fn restart_all(zk: &mut ZkCluster) {
    zk.kill_all();
    zk.spawn_all();
}

fn kill_leader(zk: &mut ZkCluster) {
    if let Some(l) = zk.leader() {
        zk.kill(l);
    }
}

/// Raises the soft open-files limit is the operator's job (run.sh does `ulimit -n`); this says
/// how many sessions it allows.
fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// The registry's logs (when `RUST_LOG` is set), the open-files check, the runtime.
fn prelude(sizes: &[usize]) -> Result<(Runtime, u64)> {
    // The registry's own logs, when asked for (`RUST_LOG=common::registry=info`).
    if std::env::var_os("RUST_LOG").is_some() {
        let quiet = common::config::LogConfig {
            level: "off".into(),
            ..Default::default()
        };
        common::telemetry::init(&quiet).context("RUST_LOG")?;
    }
    let limit = open_files_limit().unwrap_or(1024);
    let max = sizes.iter().copied().max().unwrap_or(0) as u64;
    if limit < max + 512 {
        bail!(
            "the open-files limit ({limit}) bounds the fleet below {max} sessions (one socket each): \
             run through bench/run.sh (ulimit -n 65536) or raise it"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok((rt, limit))
}

/// The 1-minute load average (`/proc/loadavg`), to say how shared the machine was.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The full-restart storm alone (`--fleet-restart-rounds K`): per size, K rounds, each a fresh
/// fleet with the agents' splay and then a fresh one with the splay off (an unspread fleet),
/// against the same ensemble. Each fleet goes through two restarts: one with no change
/// written (the reconnection storm alone: the sessions' reconnections and pings), then the
/// phase's storm (a change written as soon as the ensemble takes it: its peak also holds that
/// change's fan-out, N notifications and their reads). For the target "peak at most 1/5 of an unspread fleet's"
/// without the rest of the phase. Writes `fleet-restart.json` next to the results JSON.
pub fn run_restart_rounds(out: &Path, sizes: &[usize], rounds: usize) -> Result<(String, Value)> {
    let (rt, _) = prelude(sizes)?;
    let mut zk = ZkCluster::start_with(3, ZkOptions::default());
    let cs = zk.connect_string();
    let splay = common::config::DEFAULT_SPLAY;
    let mut rows = Vec::new();
    let mut table = String::from(
        "| N | round | fleet | load average | restart, no change: peak pkt/s | all reconnected after | restart + a change: peak pkt/s | serving after | all right after (after serving) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for &n in sizes {
        for round in 1..=rounds {
            for (label, s) in [("spread", splay), ("unspread", Duration::ZERO)] {
                println!("fleet: restart storm, N={n}, round {round}, {label}");
                let mut f = Fleet::new();
                let mut nerves = Nerves::start(&rt, &cs, &f.cancel, s)?;
                f.grow(&rt, &cs, n, s);
                wait_correct(&f, &nerves.expected(probe_present(&f)), WAIT)?;
                // The growth's last re-lists are over.
                std::thread::sleep(Duration::from_secs(2));
                let load = load_average();
                let (quiet_peak, reconnected, quiet_windows) = quiet_restart(&mut zk, &f)?;
                wait_correct(&f, &nerves.expected(probe_present(&f)), WAIT)?;
                std::thread::sleep(Duration::from_secs(2));
                let restart = storm(&rt, &mut zk, &f, &mut nerves, restart_all)?;
                let _ = writeln!(
                    table,
                    "| {n} | {round} | {label} | {load:.1} | {quiet_peak:.0} | {reconnected:.1} s | {:.0} | {:.1} s | {:.1} s ({:.1} s) |",
                    restart.peak,
                    restart.serving,
                    restart.correct,
                    restart.correct_after_serving
                );
                rows.push(json!({
                    "n": n,
                    "round": round,
                    "fleet": label,
                    "splay_s": s.as_secs_f64(),
                    "load_average_1m": load,
                    "restart_without_change": {
                        "peak_packets_per_s": quiet_peak,
                        "all_reconnected_after_s": reconnected,
                        "packets_per_100ms": quiet_windows,
                    },
                    "storm_full_restart": storm_json(&restart),
                }));
                f.cancel.cancel();
                drop((f, nerves));
                // The cancelled sessions close before the next fleet grows.
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }
    let json = json!({
        "session_timeout_s": SESSION_TIMEOUT.as_secs_f64(),
        "splay_s": splay.as_secs_f64(),
        "rounds": rows,
    });
    let dir = out.parent().unwrap_or(Path::new("."));
    std::fs::write(
        dir.join("fleet-restart.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok((table, json))
}

/// Runs the phase; returns the printed table and the JSON.
pub fn run(out: &Path, sizes: &[usize]) -> Result<(String, Value)> {
    let (rt, limit) = prelude(sizes)?;
    let mut zk = ZkCluster::start_with(3, ZkOptions::default());
    let cs = zk.connect_string();
    let mut rows: Vec<Value> = Vec::new();
    let mut fleet = Fleet::new();
    let splay = common::config::DEFAULT_SPLAY;
    let mut nerves = Nerves::start(&rt, &cs, &fleet.cancel, splay)?;
    let mut unspread_at = None;
    let reference = sizes
        .iter()
        .copied()
        .min_by_key(|n| (*n as i64 - 1000).abs())
        .unwrap_or(0);
    for &n in sizes {
        println!("fleet: growing to {n} watchers");
        let grow_started = Instant::now();
        // Each size starts without the probe (the storms of the previous size flipped it).
        nerves.set_probe(&rt, false)?;
        fleet.grow(&rt, &cs, n, splay);
        wait_correct(&fleet, &nerves.expected(false), WAIT).context("initial sync")?;
        let grown = grow_started.elapsed().as_secs_f64();

        // Propagation and requests per change.
        let (mut last, mut median) = (Vec::new(), Vec::new());
        let (req0, pk0, t0) = (fleet.requests(), total_packets(&zk), Instant::now());
        for k in 0..CHANGES {
            let (l, m) = timed_change(&rt, &fleet, &mut nerves, k % 2 == 0)?;
            last.push(l);
            median.push(m);
            std::thread::sleep(Duration::from_millis(200));
        }
        let span = t0.elapsed().as_secs_f64();
        let requests_per = (fleet.requests() - req0) as f64 / (CHANGES * n) as f64;
        let packets = total_packets(&zk).saturating_sub(pk0) as f64;
        last.sort_by(f64::total_cmp);
        median.sort_by(f64::total_cmp);

        // Quiet and 20 changes/s.
        let quiet = measure_load(&zk, Duration::from_secs(10), || Ok(()))?;
        let mut flip = false;
        let busy = measure_load(&zk, Duration::from_secs(10), || {
            flip = !flip;
            nerves.set_probe(&rt, flip)?;
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        })?;
        if flip {
            nerves.set_probe(&rt, false)?;
        }
        wait_correct(&fleet, &nerves.expected(false), WAIT)?;
        // Packets per change per watcher beyond the quiet rate (pings), from the servers.
        let server_per = (packets - quiet.1 * span).max(0.0) / (CHANGES * n) as f64;

        println!("fleet N={n}: storms");
        let leader = storm(&rt, &mut zk, &fleet, &mut nerves, kill_leader)?;
        for i in zk.indices() {
            if !zk.is_running(i) {
                zk.restart(i);
            }
        }
        wait_correct(&fleet, &nerves.expected(probe_present(&fleet)), WAIT)?;
        let restart = storm(&rt, &mut zk, &fleet, &mut nerves, restart_all)?;
        let expiry = storm(&rt, &mut zk, &fleet, &mut nerves, freeze_past_expiry)?;
        let row = json!({
            "n": n,
            "setup_s": grown,
            "propagation_last_ms": {"p50": percentile(&last, 0.5), "p99": percentile(&last, 0.99)},
            "propagation_median_watcher_ms": {"p50": percentile(&median, 0.5), "p99": percentile(&median, 0.99)},
            "requests_per_change_per_watcher": requests_per,
            "server_packets_per_change_per_watcher": server_per,
            "quiet": {"ensemble_cpu_pct": quiet.0, "packets_per_s": quiet.1},
            "changes_20_per_s": {"ensemble_cpu_pct": busy.0, "packets_per_s": busy.1},
            "storm_leader_kill": storm_json(&leader),
            "storm_full_restart": storm_json(&restart),
            "storm_expiry": storm_json(&expiry),
        });
        println!("{row}");
        rows.push(row);
        if n == reference {
            unspread_at = Some(n);
        }
    }
    fleet.cancel.cancel();
    drop(fleet);

    // The same restart storm with an unspread fleet (splay off) at the reference size.
    let mut unspread = Value::Null;
    if let Some(n) = unspread_at {
        println!("fleet: unspread fleet of {n} for the restart storm");
        let mut f = Fleet::new();
        let mut nerves = Nerves::start(&rt, &cs, &f.cancel, Duration::ZERO)?;
        f.grow(&rt, &cs, n, Duration::ZERO);
        wait_correct(&f, &nerves.expected(probe_present(&f)), WAIT)?;
        let restart = storm(&rt, &mut zk, &f, &mut nerves, restart_all)?;
        unspread = json!({"n": n, "storm_full_restart": storm_json(&restart)});
        f.cancel.cancel();
    }
    drop(zk);

    // Observers: two observers beside the three voters, watchers on the observers only.
    let observers = observer_variant(&rt, reference)?;

    let json = json!({
        "session_timeout_s": SESSION_TIMEOUT.as_secs_f64(),
        "splay_s": splay.as_secs_f64(),
        "registrations": REGISTRATIONS,
        "changes_per_size": CHANGES,
        "open_files_limit": limit,
        "sizes": rows,
        "unspread": unspread,
        "observers": observers,
    });
    let dir = out.parent().unwrap_or(Path::new("."));
    std::fs::write(dir.join("fleet.json"), serde_json::to_string_pretty(&json)?)?;
    let png = dir.join("fleet.png");
    if let Err(e) = plot(&json, &png) {
        println!("fleet: no plot ({e:#})");
    }
    Ok((table(&json), json))
}

fn probe_present(fleet: &Fleet) -> bool {
    fleet
        .states
        .first()
        .is_some_and(|s| probe_matches(&s.members.lock().unwrap_or_else(PoisonError::into_inner), true))
}

fn total_packets(zk: &ZkCluster) -> u64 {
    ports(zk).into_iter().filter_map(packets).sum()
}

/// (ensemble CPU %, packets/s) over `d` while `step` runs in a loop.
fn measure_load(zk: &ZkCluster, d: Duration, mut step: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    let (c0, p0, t0) = (jvm_cpu_ticks(zk), total_packets(zk), Instant::now());
    while t0.elapsed() < d {
        step()?;
        std::thread::sleep(Duration::from_millis(1).min(d));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (jvm_cpu_ticks(zk) - c0) as f64 / 100.0 / secs * 100.0;
    Ok((cpu, total_packets(zk).saturating_sub(p0) as f64 / secs))
}

fn storm_json(s: &Storm) -> Value {
    json!({
        "peak_packets_per_s": s.peak,
        "mean_packets_per_s": s.mean,
        "serving_after_s": s.serving,
        "all_correct_after_s": s.correct,
        "all_correct_after_serving_s": s.correct_after_serving,
        "packets_per_100ms": s.windows,
    })
}

fn observer_variant(rt: &Runtime, n: usize) -> Result<Value> {
    if n == 0 {
        return Ok(Value::Null);
    }
    println!("fleet: {n} watchers on two observers");
    let zk = ZkCluster::start_with(
        3,
        ZkOptions {
            observers: 2,
            ..Default::default()
        },
    );
    let observers = format!("{},{}", zk.server_address(3), zk.server_address(4));
    let mut f = Fleet::new();
    let mut nerves = Nerves::start(rt, &zk.connect_string(), &f.cancel, common::config::DEFAULT_SPLAY)?;
    f.grow(rt, &observers, n, common::config::DEFAULT_SPLAY);
    wait_correct(&f, &nerves.expected(false), WAIT)?;
    let mut last = Vec::new();
    for k in 0..CHANGES {
        last.push(timed_change(rt, &f, &mut nerves, k % 2 == 0)?.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    last.sort_by(f64::total_cmp);
    let quiet = measure_load(&zk, Duration::from_secs(10), || Ok(()))?;
    f.cancel.cancel();
    Ok(json!({
        "n": n,
        "observers": 2,
        "propagation_last_ms": {"p50": percentile(&last, 0.5), "p99": percentile(&last, 0.99)},
        "quiet": {"ensemble_cpu_pct": quiet.0, "packets_per_s": quiet.1},
    }))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(f64::NAN)
}

fn table(j: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| N | propagation p50 / p99 (ms) | requests per change per watcher (watch / server packets) | ensemble CPU quiet / 20 ch/s (%) | packets/s quiet / 20 ch/s | leader kill: peak pkt/s, all right after (after serving) | full restart: peak pkt/s, all right after (after serving) | expiry of every session: peak pkt/s, all right after (after serving) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in j["sizes"].as_array().into_iter().flatten() {
        let storm = |k: &str| {
            format!(
                "{:.0}, {:.1} s ({:.1} s)",
                f(r, &[k, "peak_packets_per_s"]),
                f(r, &[k, "all_correct_after_s"]),
                f(r, &[k, "all_correct_after_serving_s"])
            )
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} / {:.1} | {:.2} / {:.2} | {:.1} / {:.1} | {:.0} / {:.0} | {} | {} | {} |",
            r["n"],
            f(r, &["propagation_last_ms", "p50"]),
            f(r, &["propagation_last_ms", "p99"]),
            f(r, &["requests_per_change_per_watcher"]),
            f(r, &["server_packets_per_change_per_watcher"]),
            f(r, &["quiet", "ensemble_cpu_pct"]),
            f(r, &["changes_20_per_s", "ensemble_cpu_pct"]),
            f(r, &["quiet", "packets_per_s"]),
            f(r, &["changes_20_per_s", "packets_per_s"]),
            storm("storm_leader_kill"),
            storm("storm_full_restart"),
            storm("storm_expiry"),
        );
    }
    if !j["unspread"].is_null() {
        let u = &j["unspread"];
        let _ = writeln!(
            out,
            "\nUnspread fleet (splay 0) of {}: full restart peak {:.0} pkt/s, all right after {:.1} s ({:.1} s after serving)",
            u["n"],
            f(u, &["storm_full_restart", "peak_packets_per_s"]),
            f(u, &["storm_full_restart", "all_correct_after_s"]),
            f(u, &["storm_full_restart", "all_correct_after_serving_s"])
        );
    }
    if !j["observers"].is_null() {
        let o = &j["observers"];
        let _ = writeln!(
            out,
            "With 2 observers (watchers on observers only), N={}: propagation p50 / p99 {:.1} / {:.1} ms, quiet ensemble CPU {:.1} %",
            o["n"],
            f(o, &["propagation_last_ms", "p50"]),
            f(o, &["propagation_last_ms", "p99"]),
            f(o, &["quiet", "ensemble_cpu_pct"])
        );
    }
    out
}

fn plot(j: &Value, png: &Path) -> Result<()> {
    use plotters::prelude::*;
    /// A named series of (N, value) points and its colour.
    type Line = (&'static str, Vec<(f64, f64)>, RGBColor);
    // The bitmap backend draws text with a font we give it (no system font lookup).
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .context("DejaVuSans.ttf (fonts-dejavu-core) not found")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("cannot load the font"))?;
    let rows = j["sizes"].as_array().cloned().unwrap_or_default();
    let series =
        |path: &[&str]| -> Vec<(f64, f64)> { rows.iter().map(|r| (f(r, &["n"]), f(r, path))).collect() };
    let root = BitMapBackend::new(png, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let max_n = rows.iter().map(|r| f(r, &["n"])).fold(1.0, f64::max);
    let lines: [Line; 2] = [
        ("p50", series(&["propagation_last_ms", "p50"]), BLUE),
        ("p99", series(&["propagation_last_ms", "p99"]), RED),
    ];
    let top = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.2;
    let mut c = ChartBuilder::on(&left)
        .caption("propagation to the last watcher (ms)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_n * 1.05, 0.0..top)?;
    c.configure_mesh().x_desc("watchers (N)").draw()?;
    for (name, pts, color) in lines {
        c.draw_series(LineSeries::new(pts.clone(), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    c.configure_series_labels().border_style(BLACK).draw()?;
    let storms: [Line; 3] = [
        (
            "leader kill",
            series(&["storm_leader_kill", "peak_packets_per_s"]),
            BLUE,
        ),
        (
            "full restart",
            series(&["storm_full_restart", "peak_packets_per_s"]),
            RED,
        ),
        (
            "expiry of all",
            series(&["storm_expiry", "peak_packets_per_s"]),
            GREEN,
        ),
    ];
    let top = storms
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.2;
    let mut c = ChartBuilder::on(&right)
        .caption(
            "storm: peak packets/s at the ensemble (100 ms windows)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_n * 1.05, 0.0..top)?;
    c.configure_mesh().x_desc("watchers (N)").draw()?;
    for (name, pts, color) in storms {
        c.draw_series(LineSeries::new(pts.clone(), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    c.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
