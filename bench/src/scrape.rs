//! The `scrape` phase: does a `/metrics` scrape stall the connections? synapse with many
//! services (default 200 × 10 backends from ZooKeeper, so `/metrics` is big) serves HTTP
//! keep-alive requests at a fixed rate (open loop, [`crate::rate`]) while `/metrics` is
//! scraped every 100 ms, and while it is not; p50/p99/p99.9/max of each. With
//! `--baseline-synapse PATH`, another synapse binary (e.g. one built from an older commit)
//! runs the same, rounds interleaved: before/after on the same machine load.
//!
//! The scraper runs on the driver (client CPUs), as the load generator; synapse and nginx on
//! the server CPUs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use integration_tests::free_ports;
use serde_json::{json, Value};

use crate::procs::{self, Proc, SynapseService};
use crate::rate::{self, RateRun};
use crate::{fmt_ms, fmt_ms_spread, median, Bench, Spread};

const SECTION: &str = "scrape stall (HTTP keep-alive at a fixed rate, open loop)";

/// What the scraper saw over one run.
#[derive(Debug, Clone, Default)]
struct Scrapes {
    count: usize,
    failed: usize,
    /// Milliseconds per scrape (request sent to last byte read).
    ms: Vec<f64>,
    bytes: usize,
}

/// Scrapes `GET /metrics` on `admin` every `interval` until `stop`.
fn scraper(admin: u16, interval: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Scrapes> {
    std::thread::spawn(move || {
        let mut out = Scrapes::default();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match procs::http_get(admin, "/metrics") {
                Some(body) => {
                    out.ms.push(started.elapsed().as_secs_f64() * 1e3);
                    out.bytes = body.len();
                    out.count += 1;
                }
                None => out.failed += 1,
            }
            next += interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        out
    })
}

/// One synapse under test: its process, admin port and the measured service's port.
struct Target {
    label: String,
    proc: Proc,
    admin: u16,
    port: u16,
}

impl Bench {
    /// The scrape phase (see the module doc).
    pub(crate) fn scrape(&mut self) -> Result<()> {
        let (services, per, rate) = (
            self.args.scrape_services.max(1),
            self.args.scrape_backends.max(1),
            self.args.scrape_rate,
        );
        let interval = Duration::from_millis(self.args.scrape_interval_ms.max(1));
        let server = self.args.server_cpus.clone();
        let root = self.dir.path().join("scrape");
        std::fs::create_dir_all(&root)?;
        let nginx_port = free_ports(1)[0];
        let _nginx = procs::nginx(&server, &root, &[nginx_port])?;
        // The measured service: one backend, nginx. The others: `per` backends each that no
        // request reaches (nothing listens there): they only fill the tables and /metrics.
        self.populate("/bench/scrape/web", nginx_port, 1)?;
        for i in 1..services {
            self.populate(&format!("/bench/scrape/s{i}"), 30_000, per)?;
        }
        let mut binaries = vec![("this".to_string(), self.synapse_bin.clone())];
        if let Some(b) = &self.args.baseline_synapse {
            binaries.insert(0, ("baseline".to_string(), b.clone()));
        }
        let mut targets = Vec::new();
        for (label, bin) in binaries {
            let dir = root.join(&label);
            std::fs::create_dir_all(&dir)?;
            let ports = free_ports(services);
            let mut list = vec![SynapseService::http("web", ports[0], "/bench/scrape/web")];
            for (i, port) in ports.iter().enumerate().skip(1) {
                list.push(SynapseService::tcp(
                    &format!("s{i}"),
                    *port,
                    &format!("/bench/scrape/s{i}"),
                ));
            }
            let (proc, admin) = procs::synapse(&server, &dir, &bin, &self.cs, &list, false)?;
            self.wait_all(admin, 1 + (services - 1) * per)?;
            targets.push(Target {
                label,
                proc,
                admin,
                port: ports[0],
            });
        }
        let (secs, connections) = (self.args.duration, self.args.connections);
        // runs[target][scraped][round]
        let mut runs: Vec<[Vec<(RateRun, Scrapes)>; 2]> =
            targets.iter().map(|_| [Vec::new(), Vec::new()]).collect();
        for round in 0..self.args.rounds {
            for (ti, t) in targets.iter_mut().enumerate() {
                for (si, scraped) in [false, true].into_iter().enumerate() {
                    t.proc.check_running()?;
                    let stop = Arc::new(AtomicBool::new(false));
                    let scrapes = scraped.then(|| scraper(t.admin, interval, stop.clone()));
                    let r = rate::run(t.port, rate, connections, Duration::from_secs(secs));
                    stop.store(true, Ordering::Relaxed);
                    let s = match scrapes {
                        Some(h) => h.join().map_err(|_| anyhow::anyhow!("scraper panicked"))?,
                        None => Scrapes::default(),
                    };
                    let r = r?;
                    eprintln!(
                        "  scrape round {} {} {}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {:.1} ms \
                         errors {}; scrapes {} (failed {}) median {:.1} ms, {} bytes",
                        round + 1,
                        t.label,
                        if scraped { "scraped" } else { "quiet" },
                        r.rps,
                        r.p50,
                        r.p99,
                        r.p999,
                        r.max,
                        r.errors,
                        s.count,
                        s.failed,
                        median(s.ms.clone()),
                        s.bytes
                    );
                    runs[ti][si].push((r, s));
                }
            }
        }
        self.row(
            SECTION,
            "setup",
            format!(
                "{services} services ({} backends in all), one HTTP service measured at {rate:.0} req/s over \
                 {connections} keep-alive connections, {secs} s × {} round(s); /metrics every {} ms (or not), \
                 rounds interleaved",
                1 + (services - 1) * per,
                self.args.rounds,
                interval.as_millis()
            ),
        );
        let mut out = serde_json::Map::new();
        for (ti, t) in targets.iter().enumerate() {
            let mut entry = serde_json::Map::new();
            for (si, mode) in ["quiet", "scraped"].into_iter().enumerate() {
                let r = &runs[ti][si];
                let of = |f: fn(&RateRun) -> f64| {
                    let v: Vec<f64> = r.iter().map(|x| f(&x.0)).collect();
                    (Spread::of(&v), v)
                };
                let (p50, p99, p999, max) = (of(|x| x.p50), of(|x| x.p99), of(|x| x.p999), of(|x| x.max));
                let errors: u64 = r.iter().map(|x| x.0.errors).sum();
                let mut line = format!(
                    "p50 {}  p99 {}  p99.9 {}  max {}  errors {errors}",
                    fmt_ms(p50.0.median),
                    fmt_ms_spread(&p99.0),
                    fmt_ms_spread(&p999.0),
                    fmt_ms_spread(&max.0),
                );
                let mut m = json!({
                    "p50_ms": p50.0.json(&p50.1), "p99_ms": p99.0.json(&p99.1),
                    "p999_ms": p999.0.json(&p999.1), "max_ms": max.0.json(&max.1), "errors": errors,
                });
                if si == 1 {
                    let ms: Vec<f64> = r.iter().flat_map(|x| x.1.ms.iter().copied()).collect();
                    let count: usize = r.iter().map(|x| x.1.count).sum();
                    let failed: usize = r.iter().map(|x| x.1.failed).sum();
                    let bytes = r.iter().map(|x| x.1.bytes).max().unwrap_or(0);
                    let took = median(ms.clone());
                    line.push_str(&format!(
                        "; {count} scrapes (failed {failed}) of {:.1} MB, {} each (median)",
                        bytes as f64 / 1e6,
                        fmt_ms(took)
                    ));
                    m["scrapes"] =
                        json!({"count": count, "failed": failed, "bytes": bytes, "median_ms": took});
                }
                self.row(SECTION, format!("{} {mode}", t.label), line);
                entry.insert(mode.to_string(), m);
            }
            out.insert(t.label.clone(), Value::Object(entry));
        }
        self.row(
            SECTION,
            "(how)",
            format!(
                "load generator and scraper on CPU {}, synapse and nginx on CPU {}; latency from the intended \
                 send time; median (min–max) over rounds",
                self.args.client_cpus, self.args.server_cpus
            ),
        );
        self.json.insert("scrape".into(), Value::Object(out));
        Ok(())
    }

    /// Waits until synapse (admin port `admin`) routes `total` backends over all its services.
    fn wait_all(&self, admin: u16, total: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = procs::http_get(admin, "/services")
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                .and_then(|v| {
                    v.as_object().map(|m| {
                        m.values()
                            .map(|s| s["backends"].as_array().map_or(0, Vec::len))
                            .sum::<usize>()
                    })
                });
            if got == Some(total) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("synapse does not route {total} backends (has {got:?})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
