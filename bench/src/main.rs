//! The benchmark command (run it through `bench/run.sh`, which installs what is missing and
//! builds the release binaries): synapse beside HAProxy and beside no proxy at all, on one
//! machine, with the load generator and the servers pinned to different CPUs.
//!
//! Phases (`--only a,b`): `keepalive` and `close` (wrk through direct / HAProxy TCP /
//! synapse TCP / HAProxy HTTP / synapse HTTP, rounds interleaved; req/s, latency and each
//! proxy's CPU per request), `rate` (the same targets at a fixed rate, open loop: latency
//! added over direct; see [`rate`]), `redis` (redis-benchmark direct / HAProxy / synapse),
//! `propagation` (ZooKeeper change → synapse routing, beside the
//! raw watch latency, with 1 and 1000 backends), `churn` (20 changes/s while wrk runs: synapse
//! TCP, synapse HTTP, and HAProxy reloaded with `-sf`), `cost` (ZooKeeper requests per change,
//! RSS, idle CPU), `h2` (h2load through HAProxy and synapse, HTTP/2 both sides: see
//! [`h2`]). Prints one table and writes a JSON file. Only when named: `count` (heap
//! allocations and system calls per request, synapse beside HAProxy; see `count.rs`), `fleet` (N watchers
//! and M registrations on a 3-server ensemble: propagation, requests per change, storms; see
//! `fleet.rs`), `scrape` (the latency at a fixed rate while `/metrics` of a big config is scraped,
//! beside not scraped, optionally beside a baseline binary; see `scrape.rs`).

#![forbid(unsafe_code)]
// A command-line tool: failing loudly on a broken setup is the right thing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod count;
mod fleet;
mod h2;
mod procs;
mod rate;
mod scrape;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use integration_tests::{free_port, free_ports, ZkCluster};
use procs::{CpuPerRequest, Frontend, Proc, SynapseService};
use serde_json::{json, Value};
use zookeeper_client as zkc;

const PHASES: &[&str] = &[
    "keepalive",
    "close",
    "rate",
    "redis",
    "propagation",
    "churn",
    "cost",
    "h2",
];
/// Phases run only when named in `--only`.
const OPTIONAL_PHASES: &[&str] = &["count", "fleet", "scrape"];

#[derive(Debug, Parser)]
#[command(about = "synapse beside HAProxy: throughput, latency, propagation, churn, cost")]
struct Args {
    /// Comma-separated phases to run (default: all but count and fleet): keepalive, close (wrk,
    /// closed loop: req/s, latency, the proxies' CPU per request), rate (open loop at a fixed
    /// rate: latency added over direct), redis, propagation, churn, cost, h2; count
    /// (allocations and system calls per request: needs target/release/synapse-count-alloc,
    /// which bench/run.sh builds, and strace); fleet (slow); scrape (p99 at a fixed rate with
    /// and without /metrics scrapes of a big config; see --baseline-synapse).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// CPUs (taskset list) of the load generators, the driver and ZooKeeper.
    #[arg(long, default_value = "0")]
    client_cpus: String,
    /// CPUs (taskset list) of the proxies and backends (nginx, redis, HAProxy, synapse, nerve).
    #[arg(long, default_value = "1")]
    server_cpus: String,
    /// Rounds of each throughput measurement (targets interleaved within a round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each load run (wrk, the rate phase's generator, h2load).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Fixed rate of the rate phase, in percent of HAProxy's keep-alive maximum (TCP for the TCP
    /// rows, HTTP for the HTTP rows; the keepalive phase's medians, or a calibration run of
    /// HAProxy when that phase is not run).
    #[arg(long, default_value_t = 50.0)]
    rate_percent: f64,
    /// Fixed rate of the rate phase in req/s, for TCP and HTTP alike (instead of --rate-percent).
    #[arg(long)]
    rate_rps: Option<f64>,
    /// redis-benchmark requests per test and round.
    #[arg(long, default_value_t = 50_000)]
    redis_requests: usize,
    /// Node creations (and as many deletions) timed in the propagation phase, per size.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Seconds of churn (at 20 changes/s) per proxy.
    #[arg(long, default_value_t = 60)]
    churn_secs: u64,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Fleet sizes (watchers) of the fleet phase.
    #[arg(long, value_delimiter = ',', default_value = "1,100,500,1000,2000")]
    fleet_sizes: Vec<usize>,
    /// With a number K: the fleet phase runs only the full-restart storm, K rounds per size,
    /// each round a fresh fleet with the agents' splay and one with the splay off, alternating
    /// (writes fleet-restart.json). 0: the whole phase.
    #[arg(long, default_value_t = 0)]
    fleet_restart_rounds: usize,
    /// Seconds of each counted run of the count phase.
    #[arg(long, default_value_t = 3)]
    count_secs: u64,
    /// Services of the scrape phase's synapse (one measured, the others filling /metrics).
    #[arg(long, default_value_t = 200)]
    scrape_services: usize,
    /// Backends of each filling service of the scrape phase.
    #[arg(long, default_value_t = 10)]
    scrape_backends: usize,
    /// Milliseconds between two /metrics scrapes in the scrape phase.
    #[arg(long, default_value_t = 100)]
    scrape_interval_ms: u64,
    /// Fixed rate (req/s) of the scrape phase.
    #[arg(long, default_value_t = 2000.0)]
    scrape_rate: f64,
    /// Another synapse binary run beside this one in the scrape phase (rounds interleaved),
    /// e.g. one built from an older commit: before/after on the same machine load.
    #[arg(long)]
    baseline_synapse: Option<PathBuf>,
    /// JSON results file.
    #[arg(long, default_value = "bench/results.json")]
    out: PathBuf,
    /// Workspace target dir holding the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
}

/// Pause before each timed change of the propagation phase: twice synapse's default
/// `debounce`, so each change is an isolated one.
const CHANGE_SPACING: Duration = Duration::from_millis(20);

/// One line of the printed table.
#[derive(Debug)]
struct Row {
    section: &'static str,
    what: String,
    value: String,
}

struct Bench {
    args: Args,
    dir: tempfile::TempDir,
    synapse_bin: PathBuf,
    nerve_bin: PathBuf,
    zk: ZkCluster,
    cs: String,
    rt: tokio::runtime::Runtime,
    writer: zkc::Client,
    rows: Vec<Row>,
    json: serde_json::Map<String, Value>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    for p in &args.only {
        if !PHASES.contains(&p.as_str()) && !OPTIONAL_PHASES.contains(&p.as_str()) {
            bail!(
                "unknown phase {p:?}: use {},{}",
                PHASES.join(","),
                OPTIONAL_PHASES.join(",")
            );
        }
    }
    let only = args.only.clone();
    let run = |p: &str| (only.is_empty() && PHASES.contains(&p)) || only.iter().any(|o| o == p);
    let selected: Vec<&str> = PHASES
        .iter()
        .chain(OPTIONAL_PHASES)
        .copied()
        .filter(|p| run(p))
        .collect();
    let synapse_bin = args.bin_dir.join("synapse");
    let nerve_bin = args.bin_dir.join("nerve");
    for b in [&synapse_bin, &nerve_bin] {
        if !b.is_file() {
            bail!("{} missing: cargo build --release --bins", b.display());
        }
    }
    // The driver runs the rate phase's load generator and starts ZooKeeper: both belong on the
    // client CPUs (bench/run.sh starts it there; this holds when it is run by hand too).
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", &args.client_cpus])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !pinned.success() {
        bail!("taskset could not pin the driver to CPUs {}", args.client_cpus);
    }
    let machine = machine(&args);
    println!("{}", machine["summary"].as_str().unwrap_or_default());

    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let writer = rt.block_on(zk_client(&cs))?;
    let mut b = Bench {
        dir: tempfile::tempdir()?,
        synapse_bin,
        nerve_bin,
        zk,
        cs,
        rt,
        writer,
        rows: Vec::new(),
        json: serde_json::Map::new(),
        args,
    };
    b.json.insert("machine".into(), machine);
    b.json.insert("phases".into(), json!(selected));
    let started = Instant::now();
    if run("keepalive") || run("close") || run("rate") || run("redis") {
        b.throughput(run("keepalive"), run("close"), run("rate"), run("redis"))?;
    }
    if run("propagation") {
        b.propagation()?;
    }
    if run("churn") {
        b.churn()?;
    }
    if run("cost") {
        b.cost()?;
    }
    if run("fleet") {
        let (table, json) = if b.args.fleet_restart_rounds > 0 {
            fleet::run_restart_rounds(&b.args.out, &b.args.fleet_sizes, b.args.fleet_restart_rounds)?
        } else {
            fleet::run(&b.args.out, &b.args.fleet_sizes)?
        };
        println!("\n== fleet ==\n{table}");
        b.json.insert("fleet".into(), json);
    }
    if run("h2") {
        let (rows, section) = h2::run(&h2::Settings {
            client_cpus: &b.args.client_cpus,
            server_cpus: &b.args.server_cpus,
            rounds: b.args.rounds,
            secs: b.args.duration,
            synapse_bin: &b.synapse_bin,
            zk: &b.cs,
            dir: b.dir.path(),
        })?;
        for (what, value) in rows {
            b.row("HTTP/2 end to end (h2load)", what, value);
        }
        b.json.insert("h2".into(), section);
    }
    if run("count") {
        b.count()?;
    }
    if run("scrape") {
        b.scrape()?;
    }
    b.json
        .insert("elapsed_s".into(), json!(started.elapsed().as_secs_f64()));
    b.print();
    if let Some(parent) = b.args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &b.args.out,
        serde_json::to_string_pretty(&Value::Object(b.json.clone()))?,
    )?;
    println!("\nJSON: {}", b.args.out.display());
    Ok(())
}

async fn zk_client(cs: &str) -> Result<zkc::Client> {
    Ok(zkc::Client::connector()
        .with_session_timeout(Duration::from_secs(20))
        .connect(cs)
        .await?)
}

fn persistent() -> zkc::CreateOptions<'static> {
    zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all())
}

fn payload(port: u16) -> Vec<u8> {
    format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}").into_bytes()
}

fn run_text(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        })
        .unwrap_or_else(|e| format!("<{cmd}: {e}>"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// What the numbers were measured on.
fn machine(args: &Args) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cpus = run_text("nproc", &["--all"]);
    let mem = run_text("sh", &["-c", "free -g | awk '/Mem:/ {print $2\" GiB\"}'"]);
    let kernel = run_text("uname", &["-r"]);
    let versions = json!({
        "nginx": run_text("sh", &["-c", "nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1"]),
        "haproxy": run_text("sh", &["-c", "haproxy -v | head -1 || /usr/sbin/haproxy -v | head -1"]),
        "wrk": run_text("sh", &["-c", "wrk -v 2>&1 | head -1"]),
        "redis-benchmark": run_text("redis-benchmark", &["--version"]),
        "rustc": run_text("rustc", &["--version"]),
    });
    let layout = format!(
        "load generators (wrk, redis-benchmark), this driver and ZooKeeper on CPU {}; nginx, redis-server, \
         HAProxy, synapse and nerve on CPU {} (taskset)",
        args.client_cpus, args.server_cpus
    );
    let load = loadavg();
    let summary = format!(
        "machine: {model}, {cpus} CPUs, {mem}, Linux {kernel}\nlayout: {layout}\nload average at start: {load} \
         (other work on the machine makes the numbers noisy)"
    );
    json!({
        "cpu": model, "cpus": cpus, "memory": mem, "kernel": kernel, "versions": versions,
        "layout": layout, "loadavg_at_start": load, "summary": summary,
    })
}

/// Number of CPUs in a taskset list like `1`, `2-3` or `1,3`.
fn cpu_count(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                b.trim().parse::<usize>().unwrap_or(0) + 1 - a.trim().parse::<usize>().unwrap_or(0)
            }
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

/// The `q`-th percentile (0..=100) of `v` (sorted in place), nearest rank.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 50.0)
}

/// A measure over rounds: its median and its range (NaNs, from runs without the measure, left
/// out). On a shared machine the range says how far to trust the median.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        let v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        Spread {
            median: median(v.clone()),
            min: v.iter().copied().reduce(f64::min).unwrap_or(f64::NAN),
            max: v.iter().copied().reduce(f64::max).unwrap_or(f64::NAN),
        }
    }

    /// `median (min–max)` with `decimals` digits; the median alone for a single round.
    pub fn fmt(&self, decimals: usize) -> String {
        if self.min == self.max || self.min.is_nan() {
            format!("{:.decimals$}", self.median)
        } else {
            format!(
                "{:.decimals$} ({:.decimals$}–{:.decimals$})",
                self.median, self.min, self.max
            )
        }
    }

    /// `{median, min, max, rounds}`.
    pub fn json(&self, rounds: &[f64]) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "rounds": rounds})
    }
}

/// One wrk run's result (latencies in ms).
#[derive(Debug, Clone, Default)]
struct WrkRun {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    requests: u64,
    errors: u64,
}

fn wrk(args: &Args, port: u16, close: bool, connections: usize, secs: u64) -> Result<WrkRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("wrk-report.lua");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &args.client_cpus, "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRK_JSON "))
        .with_context(|| {
            format!(
                "no result from wrk: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Value = serde_json::from_str(line)?;
    let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let errors = ["connect", "read", "write", "timeout", "status"]
        .iter()
        .map(|k| v[*k].as_u64().unwrap_or(0))
        .sum();
    Ok(WrkRun {
        rps: n("requests") / (n("duration_us") / 1e6),
        p50: n("p50") / 1e3,
        p99: n("p99") / 1e3,
        p999: n("p999") / 1e3,
        requests: v["requests"].as_u64().unwrap_or(0),
        errors,
    })
}

/// One redis-benchmark test result: (test, req/s, p50 ms, p99 ms).
type RedisRow = (String, f64, f64, f64);

/// redis-benchmark GET and SET through `port`.
fn redis_benchmark(args: &Args, port: u16) -> Result<Vec<RedisRow>> {
    let out = Command::new("taskset")
        .args([
            "-c",
            &args.client_cpus,
            "redis-benchmark",
            "-p",
            &port.to_string(),
            "-c",
            "50",
            "-t",
            "set,get",
            "--csv",
        ])
        .arg("-n")
        .arg(args.redis_requests.to_string())
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<String> = line.split(',').map(|s| s.trim_matches('"').to_string()).collect();
        if f.len() >= 7 {
            rows.push((
                f[0].clone(),
                f[1].parse().unwrap_or(f64::NAN),
                f[4].parse().unwrap_or(f64::NAN),
                f[6].parse().unwrap_or(f64::NAN),
            ));
        }
    }
    if rows.is_empty() {
        bail!("no result from redis-benchmark: {text}");
    }
    Ok(rows)
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else {
        format!("{ms:.2} ms")
    }
}

/// `median (min–max)` of latencies in ms, in the unit of the median.
fn fmt_ms_spread(s: &Spread) -> String {
    if s.min == s.max || s.min.is_nan() {
        return fmt_ms(s.median);
    }
    let (scale, unit, d) = if s.median < 1.0 {
        (1000.0, "µs", 0)
    } else {
        (1.0, "ms", 2)
    };
    format!(
        "{:.d$} {unit} ({:.d$}–{:.d$})",
        s.median * scale,
        s.min * scale,
        s.max * scale
    )
}

impl Bench {
    /// A proxy's CPU per request (user + system, and user alone: median and range over the
    /// rounds) as a row of `section` and in its JSON `entry`.
    fn cpu_row(
        &mut self,
        section: &'static str,
        name: &str,
        cpu: &(Spread, Vec<f64>),
        user: &(Spread, Vec<f64>),
        entry: &mut Value,
    ) {
        self.row(
            section,
            format!("{name}: CPU per request"),
            format!("{} µs (user + system), user {} µs", cpu.0.fmt(1), user.0.fmt(1)),
        );
        entry["cpu_us_per_request"] = cpu.0.json(&cpu.1);
        entry["user_us_per_request"] = user.0.json(&user.1);
    }

    fn row(&mut self, section: &'static str, what: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            section,
            what: what.into(),
            value: value.into(),
        });
    }

    fn print(&self) {
        let w = self
            .rows
            .iter()
            .map(|r| r.what.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::from("\n");
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                let _ = writeln!(out, "\n== {section} ==");
            }
            let _ = writeln!(out, "  {:<w$}  {}", r.what, r.value);
        }
        print!("{out}");
    }

    fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        self.rt.block_on(async {
            match self.writer.create(path, data, &persistent()).await {
                Ok(_) | Err(zkc::Error::NodeExists) => Ok(()),
                Err(e) => Err(e),
            }
        })?;
        Ok(())
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        self.rt.block_on(self.writer.mkdir(path, &persistent()))?;
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.rt.block_on(async {
            match self.writer.delete(path, None).await {
                Ok(()) | Err(zkc::Error::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })?;
        Ok(())
    }

    /// Creates `n` children `<path>/n<i>` pointing at ports `first..first+n`, pipelined.
    fn populate(&self, path: &str, first: u16, n: usize) -> Result<()> {
        self.mkdir(path)?;
        self.rt.block_on(async {
            let opts = persistent();
            let futures: Vec<_> = (0..n)
                .map(|i| {
                    let port = first + i as u16;
                    let data = payload(port);
                    let child = format!("{path}/n{i}");
                    let w = &self.writer;
                    let opts = &opts;
                    async move {
                        match w.create(&child, &data, opts).await {
                            Ok(_) | Err(zkc::Error::NodeExists) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                })
                .collect();
            for r in futures::future::join_all(futures).await {
                r?;
            }
            Ok::<_, zkc::Error>(())
        })?;
        Ok(())
    }

    /// Waits until synapse (admin port `admin`) routes `service` to `n` backends.
    fn wait_backends(&self, admin: u16, service: &str, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = procs::http_get(admin, "/services")
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                .and_then(|v| v[service]["backends"].as_array().map(Vec::len));
            if got == Some(n) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("synapse does not route {service} to {n} backends (has {got:?})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Throughput and latency

    fn throughput(&mut self, keepalive: bool, close: bool, rate: bool, redis: bool) -> Result<()> {
        let dir = self.dir.path().join("throughput");
        std::fs::create_dir_all(&dir)?;
        let server = self.args.server_cpus.clone();
        let ports = free_ports(8);
        let (nginx_port, redis_port, ha_tcp, ha_http, ha_redis, syn_web, syn_redis, syn_http) = (
            ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7],
        );
        let _nginx = procs::nginx(&server, &dir, &[nginx_port])?;
        let _redis = if redis {
            Some(procs::redis(&server, &dir, redis_port)?)
        } else {
            None
        };
        let mut frontends = vec![
            Frontend {
                name: "web_tcp".into(),
                mode: "tcp",
                listen: ha_tcp,
                servers: vec![nginx_port],
            },
            Frontend {
                name: "web_http".into(),
                mode: "http",
                listen: ha_http,
                servers: vec![nginx_port],
            },
        ];
        if redis {
            frontends.push(Frontend {
                name: "redis".into(),
                mode: "tcp",
                listen: ha_redis,
                servers: vec![redis_port],
            });
        }
        let threads = cpu_count(&server);
        let mut haproxy = procs::haproxy(
            &server,
            &dir,
            "bench",
            &procs::haproxy_config(threads, &frontends),
            None,
        )?;
        haproxy.wait_listening(ha_tcp)?;
        self.populate("/bench/web", nginx_port, 1)?;
        self.populate("/bench/redis", redis_port, 1)?;
        let services = [
            SynapseService::tcp("web", syn_web, "/bench/web"),
            SynapseService::tcp("redis", syn_redis, "/bench/redis"),
            SynapseService::http("web_http", syn_http, "/bench/web"),
        ];
        let (mut synapse, admin) =
            procs::synapse(&server, &dir, &self.synapse_bin, &self.cs, &services, false)?;
        self.wait_backends(admin, "web", 1)?;
        self.wait_backends(admin, "redis", 1)?;
        self.wait_backends(admin, "web_http", 1)?;

        // The indices below (ratios) follow this order. The process whose CPU is counted:
        // 0 HAProxy, 1 synapse (one process each carries TCP and HTTP; one target runs at a time).
        let targets: [(&str, u16, Option<usize>); 5] = [
            ("direct", nginx_port, None),
            ("HAProxy TCP", ha_tcp, Some(0)),
            ("synapse TCP", syn_web, Some(1)),
            ("HAProxy HTTP", ha_http, Some(0)),
            ("synapse HTTP", syn_http, Some(1)),
        ];
        let mut keepalive_max = None;
        for (close_mode, on) in [(false, keepalive), (true, close)] {
            if !on {
                continue;
            }
            let section = if close_mode {
                "HTTP, a connection per request (wrk, Connection: close)"
            } else {
                "HTTP keep-alive (wrk)"
            };
            let key = if close_mode { "close" } else { "keepalive" };
            let mut runs: Vec<Vec<(WrkRun, CpuPerRequest)>> = vec![Vec::new(); targets.len()];
            for round in 0..self.args.rounds {
                for (i, (name, port, proxy)) in targets.iter().enumerate() {
                    let proxy = proxy.map(|p| [&haproxy, &synapse][p]);
                    let (r, cpu) = procs::cpu_per_request(
                        proxy,
                        || {
                            wrk(
                                &self.args,
                                *port,
                                close_mode,
                                self.args.connections,
                                self.args.duration,
                            )
                        },
                        |r| r.requests,
                    )?;
                    eprintln!(
                        "  {key} round {} {name}: {:.0} req/s p99 {} errors {}  CPU {:.1} µs/request (user {:.1})",
                        round + 1,
                        r.rps,
                        fmt_ms(r.p99),
                        r.errors,
                        cpu.total_us,
                        cpu.user_us
                    );
                    runs[i].push((r, cpu));
                }
                synapse.check_running()?;
                haproxy.check_running()?;
            }
            let mut out = serde_json::Map::new();
            for (i, (name, _, proxy)) in targets.iter().enumerate() {
                let r = &runs[i];
                let of = |f: fn(&(WrkRun, CpuPerRequest)) -> f64| {
                    let v: Vec<f64> = r.iter().map(f).collect();
                    (Spread::of(&v), v)
                };
                let (req, p50, p99, p999) = (
                    of(|x| x.0.rps),
                    of(|x| x.0.p50),
                    of(|x| x.0.p99),
                    of(|x| x.0.p999),
                );
                let errors: u64 = r.iter().map(|x| x.0.errors).sum();
                self.row(
                    section,
                    *name,
                    format!(
                        "{} req/s   p50 {}  p99 {}  p99.9 {}  errors {errors}",
                        req.0.fmt(0),
                        fmt_ms(p50.0.median),
                        fmt_ms_spread(&p99.0),
                        fmt_ms(p999.0.median)
                    ),
                );
                let mut entry = json!({
                    "rps": req.0.json(&req.1), "p50_ms": p50.0.json(&p50.1), "p99_ms": p99.0.json(&p99.1),
                    "p999_ms": p999.0.json(&p999.1), "errors": errors,
                    "requests": r.iter().map(|x| x.0.requests).collect::<Vec<_>>(),
                });
                if proxy.is_some() {
                    let (cpu, user) = (of(|x| x.1.total_us), of(|x| x.1.user_us));
                    self.cpu_row(section, name, &cpu, &user, &mut entry);
                }
                out.insert(name.to_string(), entry);
            }
            // Ratios per round (the targets of a round ran back to back), then their spread:
            // (row, JSON key, numerator, denominator, with CPU), indices into `targets`.
            let ratios = [
                (
                    "synapse TCP / HAProxy TCP",
                    "synapse_tcp_over_haproxy_tcp",
                    2,
                    1,
                    true,
                ),
                ("synapse TCP / direct", "synapse_tcp_over_direct", 2, 0, false),
                (
                    "synapse HTTP / HAProxy HTTP",
                    "synapse_http_over_haproxy_http",
                    4,
                    3,
                    true,
                ),
                ("synapse HTTP / direct", "synapse_http_over_direct", 4, 0, false),
            ];
            for (what, json_key, a, b, cpu) in ratios {
                let ratio = |f: fn(&(WrkRun, CpuPerRequest)) -> f64| {
                    let v: Vec<f64> = runs[a].iter().zip(&runs[b]).map(|(x, y)| f(x) / f(y)).collect();
                    (Spread::of(&v), v)
                };
                let (req, p99) = (ratio(|x| x.0.rps), ratio(|x| x.0.p99));
                let mut text = format!("req/s {}×   p99 {}×", req.0.fmt(2), p99.0.fmt(2));
                let mut entry = json!({"rps": req.0.json(&req.1), "p99": p99.0.json(&p99.1)});
                if cpu {
                    let (c, u) = (ratio(|x| x.1.total_us), ratio(|x| x.1.user_us));
                    let _ = write!(text, "   CPU per request {}×   user {}×", c.0.fmt(2), u.0.fmt(2));
                    entry["cpu_per_request"] = c.0.json(&c.1);
                    entry["user_per_request"] = u.0.json(&u.1);
                }
                self.row(section, what, text);
                out.insert(json_key.into(), entry);
            }
            self.row(
                section,
                "(how)",
                format!(
                    "wrk -t1 -c{} -d{}s on CPU {}, nginx and the proxies on CPU {}; {} round(s), targets \
                     interleaved; median (min–max) over rounds; ratios per round; CPU per request: the proxy \
                     process's utime + stime (/proc/<pid>/stat, all threads) over the run / requests completed",
                    self.args.connections,
                    self.args.duration,
                    self.args.client_cpus,
                    self.args.server_cpus,
                    self.args.rounds
                ),
            );
            if !close_mode {
                keepalive_max = Some((
                    median(runs[1].iter().map(|x| x.0.rps).collect()),
                    median(runs[3].iter().map(|x| x.0.rps).collect()),
                ));
            }
            self.json.insert(key.into(), Value::Object(out));
        }
        if rate {
            let max = match keepalive_max {
                Some(m) => m,
                None => {
                    eprintln!("  rate: calibrating on HAProxy's keep-alive maximum (one wrk run each)");
                    let run = |port| wrk(&self.args, port, false, self.args.connections, self.args.duration);
                    (run(ha_tcp)?.rps, run(ha_http)?.rps)
                }
            };
            let targets = [
                ("direct", nginx_port, None),
                ("HAProxy", ha_tcp, Some(&haproxy)),
                ("synapse", syn_web, Some(&synapse)),
            ];
            let http = [
                ("direct", nginx_port, None),
                ("HAProxy", ha_http, Some(&haproxy)),
                ("synapse", syn_http, Some(&synapse)),
            ];
            self.fixed_rate(&[("TCP", max.0, targets), ("HTTP", max.1, http)])?;
        }

        if redis {
            let section = "redis (redis-benchmark -c 50, GET and SET)";
            let targets: [(&str, u16, Option<&Proc>); 3] = [
                ("direct", redis_port, None),
                ("HAProxy TCP", ha_redis, Some(&haproxy)),
                ("synapse TCP", syn_redis, Some(&synapse)),
            ];
            // Each run is `redis_requests` SETs then as many GETs.
            let requests = 2 * self.args.redis_requests as u64;
            let mut runs: Vec<Vec<Vec<RedisRow>>> = vec![Vec::new(); targets.len()];
            let mut cpus: Vec<Vec<CpuPerRequest>> = vec![Vec::new(); targets.len()];
            for round in 0..self.args.rounds {
                for (i, (name, port, proxy)) in targets.iter().enumerate() {
                    let (r, cpu) =
                        procs::cpu_per_request(*proxy, || redis_benchmark(&self.args, *port), |_| requests)?;
                    eprintln!(
                        "  redis round {} {name}: {r:?}  CPU {:.1} µs/request (user {:.1})",
                        round + 1,
                        cpu.total_us,
                        cpu.user_us
                    );
                    runs[i].push(r);
                    cpus[i].push(cpu);
                }
            }
            let mut out = serde_json::Map::new();
            let mut get_rps = Vec::new();
            for (i, (name, _, proxy)) in targets.iter().enumerate() {
                let mut per_test = serde_json::Map::new();
                let mut cells = Vec::new();
                for test in ["SET", "GET"] {
                    let pick = |f: fn(&RedisRow) -> f64| {
                        median(runs[i].iter().flatten().filter(|r| r.0 == test).map(f).collect())
                    };
                    let (rps, p50, p99) = (pick(|r| r.1), pick(|r| r.2), pick(|r| r.3));
                    if test == "GET" {
                        get_rps.push(rps);
                    }
                    cells.push(format!(
                        "{test} {rps:>8.0} req/s p50 {} p99 {}",
                        fmt_ms(p50),
                        fmt_ms(p99)
                    ));
                    per_test.insert(test.into(), json!({"rps": rps, "p50_ms": p50, "p99_ms": p99}));
                }
                self.row(section, *name, cells.join("   "));
                if proxy.is_some() {
                    let cpu: Vec<f64> = cpus[i].iter().map(|c| c.total_us).collect();
                    let user: Vec<f64> = cpus[i].iter().map(|c| c.user_us).collect();
                    self.row(
                        section,
                        format!("{name}: CPU per request"),
                        format!(
                            "{} µs (user + system), user {} µs",
                            Spread::of(&cpu).fmt(1),
                            Spread::of(&user).fmt(1)
                        ),
                    );
                    per_test.insert("cpu_us_per_request".into(), Spread::of(&cpu).json(&cpu));
                    per_test.insert("user_us_per_request".into(), Spread::of(&user).json(&user));
                }
                out.insert(name.to_string(), Value::Object(per_test));
            }
            let ratio = |f: fn(&CpuPerRequest) -> f64| -> Vec<f64> {
                cpus[2].iter().zip(&cpus[1]).map(|(s, h)| f(s) / f(h)).collect()
            };
            let (cpu, user) = (ratio(|c| c.total_us), ratio(|c| c.user_us));
            self.row(
                section,
                "synapse / HAProxy, per round",
                format!(
                    "CPU per request {}×   user {}×",
                    Spread::of(&cpu).fmt(2),
                    Spread::of(&user).fmt(2)
                ),
            );
            out.insert("cpu_synapse_over_haproxy".into(), Spread::of(&cpu).json(&cpu));
            out.insert("user_synapse_over_haproxy".into(), Spread::of(&user).json(&user));
            self.row(
                section,
                "GET synapse / HAProxy",
                format!("{:.2}×", get_rps[2] / get_rps[1]),
            );
            self.row(
                section,
                "GET synapse / direct",
                format!("{:.2}×", get_rps[2] / get_rps[0]),
            );
            self.row(
                section,
                "GET HAProxy / direct",
                format!("{:.2}×", get_rps[1] / get_rps[0]),
            );
            self.json.insert("redis".into(), Value::Object(out));
        }
        synapse.check_running()?;
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Propagation

    /// Times `changes` creations and deletions under `path` (which already holds some
    /// backends): to the raw watch event of a second session, and to synapse's route table
    /// update (the timestamp of its "route table updated" log line, written just before the
    /// table is swapped in).
    fn time_changes(
        &self,
        watcher: &zkc::Client,
        synapse: &Proc,
        path: &str,
        first_port: u16,
    ) -> Result<Timings> {
        let (mut watch, mut reads, mut routed) = (Vec::new(), Vec::new(), Vec::new());
        let mut consumed = procs::table_changes(&synapse.log()).len();
        for i in 0..self.args.changes {
            let port = first_port + i as u16;
            let child = format!("{path}/c{i}");
            for create in [true, false] {
                // Isolated changes: past synapse's default debounce (10 ms of quiet), a
                // change is applied at once (leading edge); back to back, each would wait
                // for the trailing window instead (bursts are debounced by design).
                std::thread::sleep(CHANGE_SPACING);
                let (_, _, w) = self.rt.block_on(watcher.get_and_watch_children(path))?;
                let t0 = SystemTime::now();
                // The raw session then reads what any client must to know the new
                // membership: the children, and a new child's payload.
                let (reader, list_path, new_child) = (watcher.clone(), path.to_string(), child.clone());
                let fired = self.rt.spawn(async move {
                    w.changed().await;
                    let fired = SystemTime::now();
                    let read = async {
                        reader.get_children(&list_path).await?;
                        if create {
                            reader.get_data(&new_child).await?;
                        }
                        Ok::<_, zkc::Error>(())
                    };
                    let read = read.await.ok().map(|()| SystemTime::now());
                    (fired, read)
                });
                if create {
                    self.create(&child, &payload(port))?;
                } else {
                    self.delete(&child)?;
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                let applied = loop {
                    let changes = procs::table_changes(&synapse.log());
                    if let Some(k) = changes[consumed..].iter().position(|c| c.touches(port, create)) {
                        consumed += k + 1;
                        break changes[consumed - 1].at;
                    }
                    if Instant::now() > deadline {
                        bail!("synapse did not apply change {i} (create: {create}) within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let (fired, read) = self.rt.block_on(fired)?;
                let ms = |t: SystemTime| t.duration_since(t0).unwrap_or_default().as_secs_f64() * 1e3;
                watch.push(ms(fired));
                reads.push(ms(
                    read.ok_or_else(|| anyhow!("the raw session's re-read failed"))?
                ));
                routed.push(ms(applied));
            }
        }
        Ok(Timings { watch, reads, routed })
    }

    fn propagation(&mut self) -> Result<()> {
        let dir = self.dir.path().join("propagation");
        std::fs::create_dir_all(&dir)?;
        let server = self.args.server_cpus.clone();
        // Backends that never take a connection: only the routing table is looked at.
        self.populate("/bench/prop1", 30_000, 1)?;
        self.populate("/bench/prop1000", 31_000, 1000)?;
        let ports = free_ports(2);
        let services = [
            SynapseService::tcp("prop1", ports[0], "/bench/prop1"),
            SynapseService::tcp("prop1000", ports[1], "/bench/prop1000"),
        ];
        let (synapse, admin) = procs::synapse(&server, &dir, &self.synapse_bin, &self.cs, &services, true)?;
        self.wait_backends(admin, "prop1", 1)?;
        self.wait_backends(admin, "prop1000", 1000)?;
        let watcher = self.rt.block_on(zk_client(&self.cs))?;
        let section = "propagation (ZooKeeper change → synapse routes / stops routing)";
        let mut out = serde_json::Map::new();
        for (size, path, first_port) in [(1, "/bench/prop1", 33_000u16), (1000, "/bench/prop1000", 34_000)] {
            eprintln!(
                "  propagation: {} changes with {size} backend(s)",
                2 * self.args.changes
            );
            let cpu_before = synapse.cpu_time()?;
            let Timings {
                mut watch,
                mut reads,
                mut routed,
            } = self.time_changes(&watcher, &synapse, path, first_port)?;
            let n = routed.len();
            // synapse's own CPU per change (utime + stime over the run: steadier than the
            // latencies on a shared machine; the idle process adds little).
            let cpu_us = (synapse.cpu_time()? - cpu_before).as_secs_f64() * 1e6 / n as f64;
            let (w50, w99) = (percentile(&mut watch, 50.0), percentile(&mut watch, 99.0));
            let (l50, l99) = (percentile(&mut reads, 50.0), percentile(&mut reads, 99.0));
            let (r50, r99) = (percentile(&mut routed, 50.0), percentile(&mut routed, 99.0));
            self.row(
                section,
                format!("{size} backend(s), {n} changes: synapse"),
                format!(
                    "p50 {}  p99 {}   CPU {cpu_us:.0} µs per change",
                    fmt_ms(r50),
                    fmt_ms(r99)
                ),
            );
            self.row(
                section,
                format!("{size} backend(s): raw watch (another session)"),
                format!(
                    "p50 {}  p99 {}   synapse p99 / watch p99 = {:.2}×",
                    fmt_ms(w50),
                    fmt_ms(w99),
                    r99 / w99
                ),
            );
            self.row(
                section,
                format!("{size} backend(s): raw watch + re-read (children, new child's data)"),
                format!(
                    "p50 {}  p99 {}   synapse p99 / watch + re-read p99 = {:.2}×",
                    fmt_ms(l50),
                    fmt_ms(l99),
                    r99 / l99
                ),
            );
            out.insert(
                format!("backends_{size}"),
                json!({"changes": n, "synapse_p50_ms": r50, "synapse_p99_ms": r99, "watch_p50_ms": w50,
                       "watch_p99_ms": w99, "p99_ratio": r99 / w99, "reread_p50_ms": l50,
                       "reread_p99_ms": l99, "p99_ratio_reread": r99 / l99,
                       "synapse_cpu_us_per_change": cpu_us}),
            );
        }
        self.row(
            section,
            "(how)",
            "from before the write to the watch event / to synapse's table swap (its log timestamp); \
             changes 20 ms apart (isolated: a burst waits for the debounce window)",
        );
        self.json.insert("propagation".into(), Value::Object(out));
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Churn

    fn churn(&mut self) -> Result<()> {
        let dir = self.dir.path().join("churn");
        std::fs::create_dir_all(&dir)?;
        let server = self.args.server_cpus.clone();
        let pool = free_ports(20);
        let _nginx = procs::nginx(&server, &dir, &pool)?;
        let section = "churn (20 changes/s, wrk with a connection per request)";
        let mut out = serde_json::Map::new();

        // synapse: the changes are ZooKeeper nodes.
        let listen = free_port();
        self.mkdir("/bench/churn")?;
        for (i, p) in pool.iter().enumerate().take(10) {
            self.create(&format!("/bench/churn/b{i}"), &payload(*p))?;
        }
        let services = [SynapseService::tcp("churn", listen, "/bench/churn")];
        let (mut synapse, admin) =
            procs::synapse(&server, &dir, &self.synapse_bin, &self.cs, &services, true)?;
        self.wait_backends(admin, "churn", 10)?;
        eprintln!("  churn: synapse, {} s", self.args.churn_secs);
        let done = std::cell::RefCell::new(Vec::new());
        let (wrk_run, changes, _) = self.with_wrk(listen, |b, i| {
            let idx = i % pool.len();
            let child = format!("/bench/churn/b{idx}");
            let adding = !b.node_exists(&child)?;
            done.borrow_mut().push((pool[idx], adding, SystemTime::now()));
            if adding {
                b.create(&child, &payload(pool[idx]))?;
            } else {
                b.delete(&child)?;
            }
            Ok(None)
        })?;
        synapse.check_running()?;
        // Propagation under churn: each change to the first table update after it that has
        // it (one update may apply several queued changes). A port flips every second, so a
        // match later than that would be the next flip: such a change counts as not seen
        // (two flips merged in one batch, or slower than 1 s).
        let table = procs::table_changes(&synapse.log());
        let mut lat = Vec::new();
        for (port, added, t0) in done.into_inner() {
            let first = table.iter().find(|c| c.at >= t0 && c.touches(port, added));
            if let Some(d) = first.and_then(|c| c.at.duration_since(t0).ok()) {
                if d < Duration::from_secs(1) {
                    lat.push(d.as_secs_f64() * 1e3);
                }
            }
        }
        let seen = lat.len();
        let (p50, p99) = (percentile(&mut lat, 50.0), percentile(&mut lat, 99.0));
        self.churn_rows(section, "synapse TCP", &wrk_run, changes, &mut out);
        self.row(
            section,
            "synapse: propagation during churn",
            format!(
                "p50 {}  p99 {}  ({seen} of {changes} changes seen within 1 s)",
                fmt_ms(p50),
                fmt_ms(p99)
            ),
        );
        out.insert(
            "synapse_propagation".into(),
            json!({"p50_ms": p50, "p99_ms": p99, "seen_within_1s": seen, "changes": changes}),
        );
        drop(synapse);

        // synapse HTTP: the same changes, a `mode: http` service (requests balanced one by
        // one over pooled backend connections).
        let listen = free_port();
        let http_dir = dir.join("http");
        std::fs::create_dir_all(&http_dir)?;
        let services = [SynapseService::http("churn_http", listen, "/bench/churn")];
        let (mut synapse, admin) =
            procs::synapse(&server, &http_dir, &self.synapse_bin, &self.cs, &services, false)?;
        let live = self.rt.block_on(self.writer.list_children("/bench/churn"))?.len();
        self.wait_backends(admin, "churn_http", live)?;
        eprintln!("  churn: synapse HTTP, {} s", self.args.churn_secs);
        let (wrk_run, changes, _) = self.with_wrk(listen, |b, i| {
            let idx = i % pool.len();
            let child = format!("/bench/churn/b{idx}");
            if b.node_exists(&child)? {
                b.delete(&child)?;
            } else {
                b.create(&child, &payload(pool[idx]))?;
            }
            Ok(None)
        })?;
        synapse.check_running()?;
        self.churn_rows(section, "synapse HTTP", &wrk_run, changes, &mut out);
        drop(synapse);

        // HAProxy: every change is a new config and a new process replacing the old (-sf).
        let listen = free_port();
        let threads = cpu_count(&server);
        let config = |live: &BTreeSet<usize>| {
            procs::haproxy_config(
                threads,
                &[Frontend {
                    name: "churn".into(),
                    mode: "tcp",
                    listen,
                    servers: live.iter().map(|i| pool[*i]).collect(),
                }],
            )
        };
        let initial: BTreeSet<usize> = (0..10).collect();
        eprintln!("  churn: HAProxy reloaded with -sf, {} s", self.args.churn_secs);
        let mut first = procs::haproxy(&server, &dir, "churn-0", &config(&initial), None)?;
        first.wait_listening(listen)?;
        let procs_cell = std::cell::RefCell::new(vec![first]);
        let live_cell = std::cell::RefCell::new(initial);
        let (wrk_run, changes, _) = self.with_wrk(listen, |_, i| {
            let idx = i % pool.len();
            let mut live = live_cell.borrow_mut();
            if !live.remove(&idx) {
                live.insert(idx);
            }
            let mut ps = procs_cell.borrow_mut();
            ps.retain_mut(|p| !p.exited());
            let old = ps.last().map(Proc::pid);
            ps.push(procs::haproxy(
                &server,
                &dir,
                &format!("churn-{}", i + 1),
                &config(&live),
                old,
            )?);
            Ok(None)
        })?;
        self.churn_rows(section, "HAProxy reloaded (-sf)", &wrk_run, changes, &mut out);
        drop(procs_cell);
        self.json.insert("churn".into(), Value::Object(out));
        Ok(())
    }

    fn node_exists(&self, path: &str) -> Result<bool> {
        Ok(self.rt.block_on(self.writer.check_stat(path))?.is_some())
    }

    fn churn_rows(
        &mut self,
        section: &'static str,
        who: &str,
        r: &WrkRun,
        changes: usize,
        out: &mut serde_json::Map<String, Value>,
    ) {
        self.row(
            section,
            format!("{who}: {changes} changes"),
            format!(
                "{:>7.0} req/s  failed {} of {}  p50 {}  p99 {}  p99.9 {}",
                r.rps,
                r.errors,
                r.requests,
                fmt_ms(r.p50),
                fmt_ms(r.p99),
                fmt_ms(r.p999)
            ),
        );
        out.insert(
            who.into(),
            json!({"changes": changes, "rps": r.rps, "requests": r.requests, "failed": r.errors,
                   "p50_ms": r.p50, "p99_ms": r.p99, "p999_ms": r.p999}),
        );
    }

    /// Runs wrk (a connection per request) against `port` for `churn_secs` while calling
    /// `change(self, i)` 20 times a second; returns wrk's result, the number of changes
    /// and the latencies `change` reported.
    fn with_wrk(
        &self,
        port: u16,
        mut change: impl FnMut(&Bench, usize) -> Result<Option<f64>>,
    ) -> Result<(WrkRun, usize, Vec<f64>)> {
        let secs = self.args.churn_secs;
        let connections = 20;
        let (args_client, script) = (
            self.args.client_cpus.clone(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("wrk-report.lua"),
        );
        let handle = std::thread::spawn(move || {
            let out = Command::new("taskset")
                .args(["-c", &args_client, "wrk", "-t1"])
                .arg(format!("-c{connections}"))
                .arg(format!("-d{secs}s"))
                .arg("-s")
                .arg(&script)
                .args(["-H", "Connection: close"])
                .arg(format!("http://127.0.0.1:{port}/"))
                .output();
            out
        });
        let start = Instant::now();
        // Changes start a little after wrk, and end before it does.
        let end = start + Duration::from_secs(secs).saturating_sub(Duration::from_millis(500));
        let mut next = start + Duration::from_millis(200);
        let (mut i, mut lat) = (0, Vec::new());
        while next < end {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            if let Some(ms) = change(self, i)? {
                lat.push(ms);
            }
            i += 1;
            next += Duration::from_millis(50);
        }
        let out = handle.join().map_err(|_| anyhow!("wrk thread panicked"))??;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("WRK_JSON "))
            .with_context(|| format!("no result from wrk: {text}"))?;
        let v: Value = serde_json::from_str(line)?;
        let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let run = WrkRun {
            rps: n("requests") / (n("duration_us") / 1e6),
            p50: n("p50") / 1e3,
            p99: n("p99") / 1e3,
            p999: n("p999") / 1e3,
            requests: v["requests"].as_u64().unwrap_or(0),
            errors: ["connect", "read", "write", "timeout", "status"]
                .iter()
                .map(|k| v[*k].as_u64().unwrap_or(0))
                .sum(),
        };
        Ok((run, i, lat))
    }

    // ---------------------------------------------------------------------------------------
    // Cost

    /// Requests received so far from session `sid`, from `cons` (it includes pings).
    fn received_from(&self, sid: i64) -> Result<u64> {
        let cons = self.zk.four_letter(0, "cons")?;
        let needle = format!("sid=0x{:x}", sid as u64);
        let line = cons
            .lines()
            .find(|l| l.contains(&needle))
            .with_context(|| format!("session {needle} not in cons:\n{cons}"))?;
        let at = line.find("recved=").context("no recved in cons")? + "recved=".len();
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        Ok(digits.parse()?)
    }

    fn cost(&mut self) -> Result<()> {
        let dir = self.dir.path().join("cost");
        std::fs::create_dir_all(&dir)?;
        let server = self.args.server_cpus.clone();
        let section = "cost";
        let mut out = serde_json::Map::new();

        // ZooKeeper requests per membership change, for services of 10 and 1000 backends.
        self.populate("/bench/cost10", 36_000, 10)?;
        self.populate("/bench/cost1000", 37_000, 1000)?;
        let ports = free_ports(2);
        let services = [
            SynapseService::tcp("cost10", ports[0], "/bench/cost10"),
            SynapseService::tcp("cost1000", ports[1], "/bench/cost1000"),
        ];
        let mine = self.writer.session_id().0;
        let before: BTreeSet<i64> = self.zk.sessions().into_iter().map(|(_, s)| s).collect();
        let (synapse, admin) = procs::synapse(&server, &dir, &self.synapse_bin, &self.cs, &services, false)?;
        self.wait_backends(admin, "cost10", 10)?;
        self.wait_backends(admin, "cost1000", 1000)?;
        let sid = self
            .zk
            .sessions()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| *s != mine && !before.contains(s))
            .context("synapse's session not found in cons")?;
        let changes = 50;
        eprintln!("  cost: ZooKeeper requests per change");
        for (size, path, first) in [
            (10usize, "/bench/cost10", 38_000u16),
            (1000, "/bench/cost1000", 39_000),
        ] {
            let start = self.received_from(sid)?;
            let t0 = Instant::now();
            for i in 0..changes {
                let port = first + (i / 2) as u16;
                let child = format!("{path}/x{}", i / 2);
                let create = i % 2 == 0;
                if create {
                    self.create(&child, &payload(port))?;
                } else {
                    self.delete(&child)?;
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                while procs::http_get(admin, "/services").is_some_and(|s| procs::lists_port(&s, port))
                    != create
                {
                    if Instant::now() > deadline {
                        bail!("synapse did not see a change on {path}");
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let spent = t0.elapsed();
            let end = self.received_from(sid)?;
            // An idle window as long as the measured one: its pings are subtracted.
            std::thread::sleep(spent);
            let idle = self.received_from(sid)? - end;
            let per_change = (end - start).saturating_sub(idle) as f64 / changes as f64;
            self.row(
                section,
                format!("ZooKeeper requests per change, service of {size}"),
                format!(
                    "{per_change:.2}  ({} requests for {changes} changes, {idle} pings subtracted)",
                    end - start
                ),
            );
            out.insert(format!("zk_requests_per_change_{size}"), json!(per_change));
        }
        drop(synapse);

        // RSS: synapse with 100 services x 10 backends, nerve with 50 services; then idle CPU.
        let mut services = Vec::new();
        let listens = free_ports(100);
        for (s, listen) in listens.iter().enumerate() {
            let path = format!("/bench/rss/s{s}");
            self.populate(&path, 40_000 + (s * 10) as u16, 10)?;
            services.push(SynapseService::tcp(&format!("s{s}"), *listen, &path));
        }
        let (mut synapse, admin) =
            procs::synapse(&server, &dir, &self.synapse_bin, &self.cs, &services, false)?;
        for s in 0..100 {
            self.wait_backends(admin, &format!("s{s}"), 10)?;
        }
        let checked = free_ports(50);
        let _nginx = procs::nginx(&server, &dir, &checked)?;
        let nerve_services: Vec<(String, u16)> = checked
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("n{i}"), *p))
            .collect();
        let (mut nerve, _) = procs::nerve(&server, &dir, &self.nerve_bin, &self.cs, &nerve_services)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut registered = 0;
            for (name, _) in &nerve_services {
                let n = self
                    .rt
                    .block_on(self.writer.list_children(&format!("/nerve/{name}")))
                    .map(|c| c.len())
                    .unwrap_or(0);
                registered += n.min(1);
            }
            if registered == nerve_services.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!("nerve registered {registered} of 50 services");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Settle (allocations of the start-up), then measure.
        std::thread::sleep(Duration::from_secs(2));
        let (syn_rss, nerve_rss) = (synapse.rss_bytes()?, nerve.rss_bytes()?);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        self.row(
            section,
            "synapse RSS, 100 services × 10 backends",
            format!("{:.1} MiB", mib(syn_rss)),
        );
        self.row(
            section,
            "nerve RSS, 50 services (tcp checks every 1 s)",
            format!("{:.1} MiB", mib(nerve_rss)),
        );
        eprintln!("  cost: idle CPU over {} s", self.args.idle_secs);
        let (s0, n0, t0) = (synapse.cpu_time()?, nerve.cpu_time()?, Instant::now());
        // The measurement window itself.
        std::thread::sleep(Duration::from_secs(self.args.idle_secs));
        let wall = t0.elapsed().as_secs_f64();
        let (s1, n1) = (synapse.cpu_time()?, nerve.cpu_time()?);
        synapse.check_running()?;
        nerve.check_running()?;
        let pct = |a: Duration, b: Duration| (b - a).as_secs_f64() / wall * 100.0;
        let (syn_cpu, nerve_cpu) = (pct(s0, s1), pct(n0, n1));
        self.row(
            section,
            format!("idle CPU over {wall:.0} s"),
            format!("synapse {syn_cpu:.2} %   nerve {nerve_cpu:.2} % (of one CPU)"),
        );
        out.insert("synapse_rss_mib_100x10".into(), json!(mib(syn_rss)));
        out.insert("nerve_rss_mib_50".into(), json!(mib(nerve_rss)));
        out.insert("synapse_idle_cpu_pct".into(), json!(syn_cpu));
        out.insert("nerve_idle_cpu_pct".into(), json!(nerve_cpu));
        out.insert("idle_window_s".into(), json!(wall));
        self.json.insert("cost".into(), Value::Object(out));
        Ok(())
    }
}

/// Samples (ms from before the write) of one propagation run, per change.
struct Timings {
    /// The raw watch event of another session.
    watch: Vec<f64>,
    /// That session having re-read the membership (children, and a new child's payload).
    reads: Vec<f64>,
    /// synapse's route table swap.
    routed: Vec<f64>,
}
