//! The `h2` phase: HTTP/2 end to end. h2load (nghttp2, prior knowledge) through HAProxy
//! (`proto h2` on the bind and the server) and through synapse (`mode: http`,
//! `backend_protocol: h2c`), to nginx serving h2c, beside h2load straight to nginx. Rounds
//! interleave the targets; each run reports req/s and the proxy's CPU per request (its
//! utime + stime over the run, divided by the requests done), the number to steer by on a
//! shared machine.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use integration_tests::{free_ports, Zk};
use serde_json::{json, Value};

use crate::procs::{self, CpuPerRequest, Proc};
use crate::Spread;

/// What the phase needs from the driver.
#[derive(Debug)]
pub struct Settings<'a> {
    /// CPUs of h2load (taskset list).
    pub client_cpus: &'a str,
    /// CPUs of nginx, HAProxy and synapse.
    pub server_cpus: &'a str,
    /// Rounds (targets interleaved within a round).
    pub rounds: usize,
    /// Seconds per h2load run.
    pub secs: u64,
    /// The release synapse binary.
    pub synapse_bin: &'a Path,
    /// ZooKeeper connect string.
    pub zk: &'a str,
    /// Scratch directory.
    pub dir: &'a Path,
}

/// h2load's client connections and streams per connection.
const CONNECTIONS: usize = 10;
const STREAMS: usize = 10;

/// One h2load run.
#[derive(Debug, Clone)]
struct Run {
    rps: f64,
    done: u64,
    failed: u64,
    /// Proxy CPU per request (NaN for direct).
    cpu: CpuPerRequest,
}

/// Runs the phase; returns the table rows (what, value) and the JSON section.
pub fn run(s: &Settings<'_>) -> Result<(Vec<(String, String)>, Value)> {
    let dir = s.dir.join("h2");
    std::fs::create_dir_all(&dir)?;
    let ports = free_ports(4);
    let (nginx_port, ha_port, syn_port) = (ports[0], ports[1], ports[2]);
    let _nginx = nginx_h2c(s.server_cpus, &dir, nginx_port)?;

    let threads = s.server_cpus.split(',').count().max(1);
    let ha_conf = format!(
        "global\n  maxconn 8000\n  nbthread {threads}\n\ndefaults\n  mode http\n  timeout connect 1s\n  \
         timeout client 60s\n  timeout server 60s\n  timeout http-keep-alive 60s\n\n\
         listen h2\n  bind 127.0.0.1:{ha_port} proto h2\n  http-reuse always\n  \
         server s0 127.0.0.1:{nginx_port} proto h2\n"
    );
    let mut haproxy = procs::haproxy(s.server_cpus, &dir, "h2", &ha_conf, None)?;
    haproxy.wait_listening(ha_port)?;

    let zk = Zk::connect(s.zk);
    zk.put_backend("bench_h2", "nginx_0000000001", nginx_port, "");
    let admin = ports[3];
    let conf = format!(
        "admin: {{listen: \"127.0.0.1:{admin}\"}}\nlog: {{level: warn}}\nservices:\n  - {{name: h2, mode: http, \
         backend_protocol: h2c, zk_hosts: \"{}\", zk_path: /services/bench_h2, listen: \"127.0.0.1:{syn_port}\"}}\n",
        s.zk
    );
    let file = dir.join("synapse-h2.yaml");
    std::fs::write(&file, conf)?;
    let mut synapse = Proc::spawn(
        "synapse-h2",
        s.server_cpus,
        &dir,
        s.synapse_bin,
        &["-c", &file.to_string_lossy()],
    )?;
    synapse.wait_listening(syn_port)?;
    wait_routed(admin)?;

    // Index into `proxies` of the process whose CPU is counted.
    let mut proxies = [haproxy, synapse];
    let targets: [(&str, u16, Option<usize>); 3] = [
        ("direct (nginx h2c)", nginx_port, None),
        ("HAProxy (proto h2)", ha_port, Some(0)),
        ("synapse (backend_protocol: h2c)", syn_port, Some(1)),
    ];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    for round in 0..s.rounds {
        for (i, (name, port, proc_)) in targets.iter().enumerate() {
            let proxy = proc_.map(|i| &proxies[i]);
            let (mut r, cpu) =
                procs::cpu_per_request(proxy, || h2load(s.client_cpus, *port, s.secs), |r| r.done)?;
            r.cpu = cpu;
            eprintln!(
                "  h2 round {} {name}: {:.0} req/s, {:.1} µs CPU/request ({:.1} user), {} failed",
                round + 1,
                r.rps,
                cpu.total_us,
                cpu.user_us,
                r.failed
            );
            runs[i].push(r);
        }
        for p in &mut proxies {
            p.check_running()?;
        }
    }

    let mut rows = Vec::new();
    let mut out = serde_json::Map::new();
    for ((name, _, proc_), r) in targets.iter().zip(&runs) {
        let rps: Vec<f64> = r.iter().map(|x| x.rps).collect();
        let cpu: Vec<f64> = r.iter().map(|x| x.cpu.total_us).collect();
        let user: Vec<f64> = r.iter().map(|x| x.cpu.user_us).collect();
        let failed: u64 = r.iter().map(|x| x.failed).sum();
        let mut value = format!("{} req/s", Spread::of(&rps).fmt(0));
        if proc_.is_some() {
            let _ = write!(
                value,
                ", CPU {} µs/request, user {}",
                Spread::of(&cpu).fmt(1),
                Spread::of(&user).fmt(1)
            );
        }
        if failed > 0 {
            let _ = write!(value, ", {failed} failed");
        }
        rows.push((name.to_string(), value));
        out.insert(
            name.to_string(),
            json!({"rps": rps, "cpu_us_per_request": cpu, "user_us_per_request": user, "failed": failed}),
        );
    }
    // Per round (the two proxies ran back to back), then the spread over rounds.
    let per_round = |f: fn(&Run) -> f64| -> Vec<f64> {
        runs[2]
            .iter()
            .zip(&runs[1])
            .map(|(syn, ha)| f(syn) / f(ha))
            .collect()
    };
    let (cpu_ratio, user_ratio) = (per_round(|r| r.cpu.total_us), per_round(|r| r.cpu.user_us));
    rows.push((
        "synapse / HAProxy, per round".into(),
        format!(
            "CPU per request {}× (target ≤ 1), user {}×",
            Spread::of(&cpu_ratio).fmt(2),
            Spread::of(&user_ratio).fmt(2)
        ),
    ));
    out.insert(
        "cpu_ratio_synapse_haproxy".into(),
        Spread::of(&cpu_ratio).json(&cpu_ratio),
    );
    out.insert(
        "user_ratio_synapse_haproxy".into(),
        Spread::of(&user_ratio).json(&user_ratio),
    );
    out.insert(
        "load".into(),
        json!(format!(
            "h2load -c {CONNECTIONS} -m {STREAMS} -t 1, {} s per run, {} rounds",
            s.secs, s.rounds
        )),
    );
    Ok((rows, Value::Object(out)))
}

/// nginx serving h2c (prior knowledge) on `port`, `200 ok` to everything.
fn nginx_h2c(cpus: &str, dir: &Path, port: u16) -> Result<Proc> {
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx-h2.pid;\nerror_log {d}/nginx-h2-error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
         http2_max_requests 10000000;\n  http2_max_concurrent_streams 1024;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port} http2 backlog=4096;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    let file = dir.join("nginx-h2.conf");
    std::fs::write(&file, conf)?;
    let prefix = format!("{d}/");
    let mut p = Proc::spawn(
        "nginx-h2",
        cpus,
        dir,
        &procs::which("nginx")?,
        &[
            "-p",
            &prefix,
            "-e",
            &format!("{d}/nginx-h2-error.log"),
            "-c",
            &file.to_string_lossy(),
        ],
    )?;
    p.wait_listening(port)?;
    Ok(p)
}

/// Waits until synapse routes the `h2` service to its backend.
fn wait_routed(admin: u16) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = procs::http_get(admin, "/services")
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["h2"]["backends"].as_array().map(Vec::len));
        if n == Some(1) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("synapse does not route the h2 service (backends: {n:?})");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// One h2load run against 127.0.0.1:`port`.
fn h2load(cpus: &str, port: u16, secs: u64) -> Result<Run> {
    let out = Command::new("taskset")
        .args(["-c", cpus, "h2load", "-t", "1"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-m{STREAMS}"))
        .arg(format!("-D{secs}"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running h2load (Debian nghttp2-client; bench/run.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).with_context(|| {
        format!(
            "no result from h2load: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Reads `finished in 5.00s, 12345.67 req/s, ...` and `requests: N total, N started, N done,
/// N succeeded, N failed, N errored, N timeout`.
fn parse(text: &str) -> Option<Run> {
    let finished = text.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let rps = finished
        .split(", ")
        .nth(1)?
        .strip_suffix(" req/s")?
        .parse()
        .ok()?;
    let requests = text.lines().find_map(|l| l.strip_prefix("requests: "))?;
    let field = |name: &str| -> Option<u64> {
        requests
            .split(", ")
            .find_map(|p| p.strip_suffix(name))
            .and_then(|n| n.trim().parse().ok())
    };
    Some(Run {
        rps,
        done: field(" succeeded")?,
        failed: field(" failed")? + field(" errored")? + field(" timeout")?,
        cpu: CpuPerRequest::NONE,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn h2load_output_is_read() {
        let text = "starting benchmark...\nfinished in 5.00s, 41234.50 req/s, 1.2MB/s\n\
                    requests: 206172 total, 206272 started, 206172 done, 206170 succeeded, 2 failed, 0 errored, 1 timeout\n";
        let r = super::parse(text).unwrap();
        assert_eq!(r.rps, 41234.5);
        assert_eq!(r.done, 206_170);
        assert_eq!(r.failed, 3);
    }
}
