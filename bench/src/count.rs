//! The `count` phase: the work synapse does per request, counted instead of timed, so the
//! figures hold on a noisy machine. For each of TCP and HTTP, keep-alive and a connection
//! per request:
//! - heap allocations (and bytes) per request: `GET /debug/alloc` of a synapse built with the
//!   `count-alloc` feature (bench/run.sh builds it as `target/release/synapse-count-alloc`),
//!   before and after a wrk run, divided by the requests wrk completed;
//! - system calls per request, synapse beside HAProxy: `strace -c -f -p <pid>` attached for
//!   a wrk run (tracing slows the proxy down; the counts per request stay true).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::procs::{self, Frontend, SynapseService};
use crate::{cpu_count, free_ports, wrk, Bench};

/// One allocation snapshot from `GET /debug/alloc`.
fn alloc_counts(admin: u16) -> Result<Value> {
    let body = procs::http_get(admin, "/debug/alloc").with_context(|| {
        format!(
            "GET /debug/alloc on 127.0.0.1:{admin} failed: is the binary built with --features count-alloc?"
        )
    })?;
    Ok(serde_json::from_str(&body)?)
}

/// `strace -c` summary → calls per system call (the `total` line left out).
fn parse_strace_summary(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if f.len() < 5 || f[0].parse::<f64>().is_err() || f[f.len() - 1] == "total" {
            continue;
        }
        if let Ok(n) = f[3].parse::<u64>() {
            *calls.entry(f[f.len() - 1].to_string()).or_default() += n;
        }
    }
    calls
}

/// Runs wrk against `port` while `strace -c -f` is attached to `pid`; returns the calls per
/// system call and the requests wrk completed.
fn strace_run(
    b: &Bench,
    pid: u32,
    port: u16,
    close: bool,
    secs: u64,
) -> Result<(BTreeMap<String, u64>, u64)> {
    let out = b.dir.path().join(format!("strace-{pid}-{port}-{close}.txt"));
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running strace (apt-get install strace)")?;
    // strace prints "Process N attached" once it is; give it a moment for every thread.
    std::thread::sleep(Duration::from_millis(300));
    let run = wrk(&b.args, port, close, b.args.connections, secs)?;
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while strace.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = strace.kill();
            bail!("strace did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&out).context("reading strace's summary")?;
    let calls = parse_strace_summary(&text);
    if calls.is_empty() {
        bail!("no strace summary for pid {pid}: {text}");
    }
    Ok((calls, run.requests))
}

/// `read 1.00  write 1.00  …` for the system calls of at least 0.05 per request.
fn per_request_text(calls: &BTreeMap<String, u64>, requests: u64) -> (f64, String) {
    let r = requests.max(1) as f64;
    let total = calls.values().sum::<u64>() as f64 / r;
    let mut top: Vec<(&String, f64)> = calls.iter().map(|(k, v)| (k, *v as f64 / r)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let text = top
        .iter()
        .filter(|(_, v)| *v >= 0.05)
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    (total, text)
}

impl Bench {
    pub(crate) fn count(&mut self) -> Result<()> {
        let bin = self.args.bin_dir.join("synapse-count-alloc");
        if !bin.is_file() {
            bail!(
                "{} missing: bench/run.sh builds it (cargo build --release -p synapse --features count-alloc, \
                 then copy target/release/synapse)",
                bin.display()
            );
        }
        let dir = self.dir.path().join("count");
        std::fs::create_dir_all(&dir)?;
        let server = self.args.server_cpus.clone();
        let ports = free_ports(5);
        let (nginx_port, ha_tcp, ha_http, syn_tcp, syn_http) =
            (ports[0], ports[1], ports[2], ports[3], ports[4]);
        let _nginx = procs::nginx(&server, &dir, &[nginx_port])?;
        let frontends = [
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
        let mut haproxy = procs::haproxy(
            &server,
            &dir,
            "count",
            &procs::haproxy_config(cpu_count(&server), &frontends),
            None,
        )?;
        haproxy.wait_listening(ha_tcp)?;
        self.populate("/bench/count", nginx_port, 1)?;
        let services = [
            SynapseService::tcp("web", syn_tcp, "/bench/count"),
            SynapseService::http("web_http", syn_http, "/bench/count"),
        ];
        let (mut synapse, admin) = procs::synapse(&server, &dir, &bin, &self.cs, &services, false)?;
        self.wait_backends(admin, "web", 1)?;
        self.wait_backends(admin, "web_http", 1)?;
        let secs = self.args.count_secs;
        let section = "work per request (counted: allocations, system calls)";
        let mut out = serde_json::Map::new();
        for (close, mode) in [(false, "keep-alive"), (true, "a connection per request")] {
            for (proto, syn_port, ha_port) in [("TCP", syn_tcp, ha_tcp), ("HTTP", syn_http, ha_http)] {
                // Warm up (pools, buffers), then count.
                wrk(&self.args, syn_port, close, self.args.connections, 1)?;
                let before = alloc_counts(admin)?;
                let run = wrk(&self.args, syn_port, close, self.args.connections, secs)?;
                let after = alloc_counts(admin)?;
                let d = |k: &str| {
                    after[k]
                        .as_u64()
                        .unwrap_or(0)
                        .saturating_sub(before[k].as_u64().unwrap_or(0)) as f64
                        / run.requests.max(1) as f64
                };
                let (allocs, reallocs, bytes) = (d("allocations"), d("reallocations"), d("bytes_allocated"));
                eprintln!("  count: synapse {proto} {mode}: {allocs:.2} allocations per request");
                let (syn_calls, syn_req) = strace_run(self, synapse.pid(), syn_port, close, secs)?;
                let (ha_calls, ha_req) = strace_run(self, haproxy.pid(), ha_port, close, secs)?;
                synapse.check_running()?;
                let (syn_total, syn_text) = per_request_text(&syn_calls, syn_req);
                let (ha_total, ha_text) = per_request_text(&ha_calls, ha_req);
                self.row(
                    section,
                    format!("synapse {proto}, {mode}: heap"),
                    format!(
                        "{allocs:.2} allocations + {reallocs:.2} reallocations, {bytes:.0} bytes per request ({} requests)",
                        run.requests
                    ),
                );
                self.row(
                    section,
                    format!("synapse {proto}, {mode}: system calls"),
                    format!("{syn_total:.2} per request: {syn_text}"),
                );
                self.row(
                    section,
                    format!("HAProxy {proto}, {mode}: system calls"),
                    format!("{ha_total:.2} per request: {ha_text}"),
                );
                let key = format!(
                    "{}_{}",
                    proto.to_lowercase(),
                    if close { "close" } else { "keepalive" }
                );
                let per = |calls: &BTreeMap<String, u64>, req: u64| {
                    calls
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(*v as f64 / req.max(1) as f64)))
                        .collect::<serde_json::Map<_, _>>()
                };
                out.insert(
                    key,
                    json!({
                        "synapse_allocations_per_request": allocs,
                        "synapse_reallocations_per_request": reallocs,
                        "synapse_bytes_allocated_per_request": bytes,
                        "alloc_requests": run.requests,
                        "synapse_syscalls_per_request": syn_total,
                        "synapse_syscalls": per(&syn_calls, syn_req),
                        "haproxy_syscalls_per_request": ha_total,
                        "haproxy_syscalls": per(&ha_calls, ha_req),
                    }),
                );
            }
        }
        self.row(
            section,
            "(how)",
            format!(
                "allocations: GET /debug/alloc of synapse built with --features count-alloc, over a {secs} s wrk run; \
                 system calls: strace -c -f -p <pid> over another {secs} s run (slowed by tracing; counts per \
                 request hold)"
            ),
        );
        self.json.insert("count".into(), Value::Object(out));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_summary_is_parsed_without_the_total() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    \x20 60.00    0.000600           6       100           recvfrom\n\
                    \x20 40.00    0.000400           4       100        12 sendto\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.001000           5       200        12 total\n";
        let calls = parse_strace_summary(text);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls["recvfrom"], 100);
        assert_eq!(calls["sendto"], 100);
        assert_eq!(per_request_text(&calls, 100).0, 2.0);
    }
}
