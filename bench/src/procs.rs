//! The processes a benchmark runs: nginx (backend), redis-server, HAProxy (peer), synapse and
//! nerve (release builds), each pinned with `taskset`, killed and reaped on drop.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// A child process in its own temp dir (config, logs). Dropping it kills (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    pub dir: PathBuf,
}

impl Proc {
    /// Starts `program args` pinned to `cpus` (a `taskset -c` list), output to `<dir>/<name>.log`.
    pub fn spawn(name: &str, cpus: &str, dir: &Path, program: &Path, args: &[&str]) -> Result<Proc> {
        Self::spawn_logging(name, cpus, dir, program, args, "warn")
    }

    /// [`spawn`](Self::spawn) with `RUST_LOG` set to `rust_log`.
    pub fn spawn_logging(
        name: &str,
        cpus: &str,
        dir: &Path,
        program: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> Result<Proc> {
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpus)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_LOG", rust_log)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether the process has exited (it is reaped then).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log());
        }
        Ok(())
    }

    /// Waits until it listens on 127.0.0.1:`port`; fails with its log if it exits first.
    pub fn wait_listening(&mut self, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} does not listen on 127.0.0.1:{port}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Resident set size, from `/proc/<pid>/status` (bytes).
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS")?;
        Ok(kb * 1024)
    }

    /// CPU time the process (all its threads, dead ones included) has used so far, from
    /// `/proc/<pid>/stat`.
    pub fn cpu_times(&self) -> Result<CpuTimes> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (which may contain spaces) start after the last ')';
        // utime and stime are fields 14 and 15 of proc(5), 12th and 13th after the name.
        let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| -> Result<Duration> {
            let ticks: u64 = f.get(i).context("short /proc stat")?.parse()?;
            Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
        };
        Ok(CpuTimes {
            user: field(11)?,
            system: field(12)?,
        })
    }

    /// User + system CPU time consumed so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        Ok(self.cpu_times()?.total())
    }
}

/// CPU time of a process: user and system (kernel, on its behalf).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    /// User + system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

/// A proxy's CPU per request over one load run, in µs: user + system, and user alone.
#[derive(Debug, Clone, Copy)]
pub struct CpuPerRequest {
    pub total_us: f64,
    pub user_us: f64,
}

impl CpuPerRequest {
    /// No proxy measured (direct), or no request completed.
    pub const NONE: CpuPerRequest = CpuPerRequest {
        total_us: f64::NAN,
        user_us: f64::NAN,
    };
}

/// Runs `load` (a load generator run, to completion) and returns its result with `proxy`'s CPU
/// per request over exactly that run: the proxy's utime + stime read just before and just after,
/// divided by the requests the run completed (`requests` of its result). Without a proxy
/// (direct), or with no request completed, the CPU is [`CpuPerRequest::NONE`].
pub fn cpu_per_request<T>(
    proxy: Option<&Proc>,
    load: impl FnOnce() -> Result<T>,
    requests: impl FnOnce(&T) -> u64,
) -> Result<(T, CpuPerRequest)> {
    let Some(p) = proxy else {
        return Ok((load()?, CpuPerRequest::NONE));
    };
    let before = p.cpu_times()?;
    let out = load()?;
    let after = p.cpu_times()?;
    let n = requests(&out);
    if n == 0 {
        return Ok((out, CpuPerRequest::NONE));
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let cpu = CpuPerRequest {
        total_us: us(after.total().saturating_sub(before.total())),
        user_us: us(after.user.saturating_sub(before.user)),
    };
    Ok((out, cpu))
}

impl Drop for Proc {
    /// SIGTERM first, so that a master process (nginx) stops its workers instead of leaving
    /// them running; SIGKILL after 2 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second (the unit of `/proc/<pid>/stat` times), asked once.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Finds `name` on PATH (or in /usr/sbin, where Debian puts nginx and haproxy).
pub fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: bench/run.sh installs it"))
}

/// nginx, one worker, answering `200 ok` on every port of `ports` (access log off).
pub fn nginx(cpus: &str, dir: &Path, ports: &[u16]) -> Result<Proc> {
    let mut listens = String::new();
    for p in ports {
        let _ = writeln!(listens, "    listen 127.0.0.1:{p} backlog=4096 reuseport;");
    }
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n{listens}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let f = file.to_string_lossy().into_owned();
    let prefix = format!("{d}/");
    let mut p = Proc::spawn(
        "nginx",
        cpus,
        dir,
        &which("nginx")?,
        &["-p", &prefix, "-e", &format!("{d}/nginx-error.log"), "-c", &f],
    )?;
    for port in ports {
        p.wait_listening(*port)?;
    }
    Ok(p)
}

/// redis-server without persistence.
pub fn redis(cpus: &str, dir: &Path, port: u16) -> Result<Proc> {
    let d = dir.to_string_lossy().into_owned();
    let mut p = Proc::spawn(
        "redis",
        cpus,
        dir,
        &which("redis-server")?,
        &[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &d,
        ],
    )?;
    p.wait_listening(port)?;
    Ok(p)
}

/// One HAProxy frontend: `listen` → the `servers`, in `mode` (`tcp` or `http`).
#[derive(Debug, Clone)]
pub struct Frontend {
    pub name: String,
    pub mode: &'static str,
    pub listen: u16,
    pub servers: Vec<u16>,
}

/// HAProxy's config for `frontends`: one thread per server CPU, round robin, no health checks
/// (synapse has none either), keep-alive and connection reuse in HTTP mode.
pub fn haproxy_config(threads: usize, frontends: &[Frontend]) -> String {
    let mut c = format!(
        "global\n  maxconn 8000\n  nbthread {threads}\n\ndefaults\n  timeout connect 1s\n  timeout client 60s\n  \
         timeout server 60s\n  timeout http-keep-alive 60s\n  balance roundrobin\n\n"
    );
    for f in frontends {
        let _ = writeln!(
            c,
            "listen {}\n  bind 127.0.0.1:{}\n  mode {}",
            f.name, f.listen, f.mode
        );
        if f.mode == "http" {
            let _ = writeln!(c, "  option http-keep-alive\n  http-reuse always");
        }
        for (i, s) in f.servers.iter().enumerate() {
            let _ = writeln!(c, "  server s{i} 127.0.0.1:{s}");
        }
        c.push('\n');
    }
    c
}

/// Starts HAProxy with `config` (foreground, `-db`); `replace`: the pid of the process it
/// replaces (`-sf`, as config generators reload it). `tag` names config and log files.
pub fn haproxy(cpus: &str, dir: &Path, tag: &str, config: &str, replace: Option<u32>) -> Result<Proc> {
    let file = dir.join(format!("haproxy-{tag}.cfg"));
    std::fs::write(&file, config)?;
    let f = file.to_string_lossy().into_owned();
    let mut args = vec!["-db", "-f", &f];
    let pid;
    if let Some(old) = replace {
        pid = old.to_string();
        args.extend(["-sf", &pid]);
    }
    Proc::spawn(&format!("haproxy-{tag}"), cpus, dir, &which("haproxy")?, &args)
}

/// One synapse service: `name` on `listen`, watching `zk_path`, in `mode` (`tcp` or `http`).
#[derive(Debug, Clone)]
pub struct SynapseService {
    pub name: String,
    pub listen: u16,
    pub zk_path: String,
    pub mode: &'static str,
}

impl SynapseService {
    /// A `mode: tcp` service.
    pub fn tcp(name: &str, listen: u16, zk_path: &str) -> SynapseService {
        SynapseService {
            name: name.into(),
            listen,
            zk_path: zk_path.into(),
            mode: "tcp",
        }
    }

    /// A `mode: http` service (defaults: keep-alive pool of 64 idle connections per backend).
    pub fn http(name: &str, listen: u16, zk_path: &str) -> SynapseService {
        SynapseService {
            mode: "http",
            ..SynapseService::tcp(name, listen, zk_path)
        }
    }
}

/// Starts synapse (release build) with `services`; returns it and its admin port. With
/// `log_changes`, it logs each route table change as JSON, timestamped (see [`table_changes`]).
pub fn synapse(
    cpus: &str,
    dir: &Path,
    bin: &Path,
    zk: &str,
    services: &[SynapseService],
    log_changes: bool,
) -> Result<(Proc, u16)> {
    let admin = integration_tests::free_port();
    let mut c = format!(
        "admin: {{listen: \"127.0.0.1:{admin}\"}}\nlog: {{level: warn, format: json}}\n\
         zookeeper: {{session_timeout: 10s}}\nservices:\n"
    );
    for s in services {
        let _ = writeln!(
            c,
            "  - {{name: {}, mode: {}, zk_hosts: \"{zk}\", zk_path: {}, listen: \"127.0.0.1:{}\", \
             connect_timeout: 1s}}",
            s.name, s.mode, s.zk_path, s.listen
        );
    }
    let file = dir.join("synapse.yaml");
    std::fs::write(&file, c)?;
    let rust_log = if log_changes {
        "warn,synapse::service=info"
    } else {
        "warn"
    };
    let mut p = Proc::spawn_logging(
        "synapse",
        cpus,
        dir,
        bin,
        &["-c", &file.to_string_lossy()],
        rust_log,
    )?;
    p.wait_listening(admin)?;
    Ok((p, admin))
}

/// Starts nerve (release build) registering `services` (name, port) with tcp checks at the
/// default interval (1 s).
pub fn nerve(
    cpus: &str,
    dir: &Path,
    bin: &Path,
    zk: &str,
    services: &[(String, u16)],
) -> Result<(Proc, u16)> {
    let admin = integration_tests::free_port();
    let mut c = format!(
        "instance_id: bench\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nlog: {{level: warn}}\nservices:\n"
    );
    for (name, port) in services {
        let _ = writeln!(
            c,
            "  - {{name: {name}, host: 127.0.0.1, port: {port}, zk_hosts: \"{zk}\", zk_path: /nerve/{name}, \
             checks: [{{type: tcp, timeout: 1s}}]}}"
        );
    }
    let file = dir.join("nerve.yaml");
    std::fs::write(&file, c)?;
    let mut p = Proc::spawn("nerve", cpus, dir, bin, &["-c", &file.to_string_lossy()])?;
    p.wait_listening(admin)?;
    Ok((p, admin))
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0): the body, if the status is 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// Whether synapse's `/services` text (pretty-printed JSON) lists a backend with `port`.
pub fn lists_port(services_json: &str, port: u16) -> bool {
    let needle = format!("\"port\": {port}");
    services_json
        .match_indices(&needle)
        .any(|(i, _)| !services_json[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// One "route table updated" line of synapse's JSON log: when, and the backends
/// (`host:port`) added and removed.
#[derive(Debug, Clone)]
pub struct TableChange {
    pub at: SystemTime,
    pub added: String,
    pub removed: String,
}

impl TableChange {
    /// Whether this change added (`added`) or removed (`!added`) a backend with `port`.
    pub fn touches(&self, port: u16, added: bool) -> bool {
        let list = if added { &self.added } else { &self.removed };
        list.contains(&format!(":{port}\""))
    }
}

/// The route table changes logged so far in `log` (synapse's JSON log), in order.
pub fn table_changes(log: &str) -> Vec<TableChange> {
    log.lines()
        .filter(|l| l.contains("route table updated"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(TableChange {
                at: parse_rfc3339(v["timestamp"].as_str()?)?,
                added: v["added"].as_str().unwrap_or_default().to_string(),
                removed: v["removed"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// `2026-12-01T14:33:00.123456Z` (UTC, as tracing-subscriber writes it) → SystemTime.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}
