//! The real `nerve` and `synapse` binaries as child processes, real TCP backends, a blocking
//! ZooKeeper client for assertions, and a tiny HTTP/1.0 GET for admin APIs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use zookeeper_client as zkc;

/// Path of a workspace binary (`nerve` or `synapse`), next to the test executable's `deps/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `cargo build --bins` (deploy/test.sh does it)",
        path.display()
    );
    path
}

/// A running agent. Dropping it kills it (SIGKILL).
#[derive(Debug)]
pub struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    name: &'static str,
}

impl Agent {
    /// Writes `config` (YAML) to a temp file and starts `binary -c file`, logging to a file.
    pub fn start(name: &'static str, config: &str) -> Agent {
        Self::spawn(name, &format!("{name}.yaml"), config, None, &[], &[], None)
    }

    /// Writes `config` to a temp file named `file_name` (its extension tells the agent
    /// YAML from JSON) and starts `binary -c file`, with extra environment variables and
    /// optionally an open-file limit. The builders ([`crate::synapse`], [`crate::nerve`])
    /// start agents through this.
    pub fn start_file(
        name: &'static str,
        file_name: &str,
        config: &str,
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Agent {
        Self::spawn(name, file_name, config, nofile, env, &[], None)
    }

    /// Like [`start_file`](Self::start_file), socket-activated as systemd does it:
    /// `listener` is passed as descriptor 3 with `LISTEN_FDS=1` and `LISTEN_PID` (the caller
    /// keeps its own copy, like a `.socket` unit, so the socket outlives the agent).
    pub fn start_socket_activated(
        name: &'static str,
        file_name: &str,
        config: &str,
        listener: &std::net::TcpListener,
    ) -> Agent {
        // A duplicate without close-on-exec, for this child only; closed here right after.
        let passed = rustix::io::dup(listener).expect("dup the listening socket");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&passed);
        let agent = Self::spawn(name, file_name, config, None, &[], &[], Some(fd));
        drop(passed);
        agent
    }

    /// [`start_file`](Self::start_file) with extra command-line arguments (`--takeover`).
    pub fn start_file_with_args(
        name: &'static str,
        file_name: &str,
        config: &str,
        env: &[(&str, &str)],
        nofile: Option<u32>,
        args: &[&str],
    ) -> Agent {
        Self::spawn(name, file_name, config, nofile, env, args, None)
    }

    /// Like [`start`](Self::start), with the open-file limit (`ulimit -n`) set to `nofile`.
    pub fn start_with_fd_limit(name: &'static str, config: &str, nofile: u32) -> Agent {
        Self::spawn(
            name,
            &format!("{name}.yaml"),
            config,
            Some(nofile),
            &[],
            &[],
            None,
        )
    }

    /// Like [`start`](Self::start), with extra environment variables (they win over the
    /// harness's own, e.g. `RUST_LOG`).
    pub fn start_with_env(name: &'static str, config: &str, env: &[(&str, &str)]) -> Agent {
        Self::spawn(name, &format!("{name}.yaml"), config, None, env, &[], None)
    }

    fn spawn(
        name: &'static str,
        file_name: &str,
        config: &str,
        nofile: Option<u32>,
        env: &[(&str, &str)],
        args: &[&str],
        socket: Option<std::os::fd::RawFd>,
    ) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join(file_name);
        std::fs::write(&cfg, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let mut command = match (nofile, socket) {
            (None, None) => Command::new(binary(name)),
            (nofile, socket) => {
                // `exec` keeps the pid, so signals and kill-on-drop reach the agent itself
                // (and LISTEN_PID=$$ names it).
                let mut script = String::new();
                if let Some(n) = nofile {
                    script.push_str(&format!("ulimit -n {n} && "));
                }
                match socket {
                    Some(3) => script.push_str("export LISTEN_PID=$$ LISTEN_FDS=1 && "),
                    Some(fd) => script.push_str(&format!(
                        "exec 3<&{fd} {fd}<&- && export LISTEN_PID=$$ LISTEN_FDS=1 && "
                    )),
                    None => {}
                }
                script.push_str("exec \"$0\" \"$@\"");
                // bash: dash takes single-digit descriptors only in redirections.
                let mut c = Command::new(if socket.is_some() { "bash" } else { "sh" });
                c.arg("-c").arg(script).arg(binary(name));
                c
            }
        };
        let child = command
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .env("RUST_LOG", "info,common=debug,synapse=debug,nerve=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Agent {
            child,
            dir,
            config: cfg,
            name,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the agent's config file (e.g. before a SIGHUP).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config, config).expect("rewrite config");
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The config file it was started with (rewrite it, then send `HUP`, to reload).
    pub fn config_file(&self) -> PathBuf {
        self.config.clone()
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        crate::eventually(&format!("{} to exit", self.name), timeout, || {
            child.try_wait().ok().flatten()
        })
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
    }
}

/// A TCP backend: for each connection it reads until the client half-closes, then answers
/// `<name>:<bytes received>` and closes. Dropping it closes the listener.
#[derive(Debug)]
pub struct Backend {
    /// Its name, echoed in answers.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts on a free port.
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, 0)
    }

    /// Starts on `port` (0: any).
    pub fn start_on(name: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (name.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let n = n.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                            let mut buf = Vec::new();
                            let _ = conn.read_to_end(&mut buf);
                            let _ = conn.write_all(format!("{n}:{}", buf.len()).as_bytes());
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend {
            name: name.to_string(),
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP echo backend: every connection gets back what it sends, until it closes. Counts
/// the connections it saw end (EOF or error), so tests can tell that a proxy closed its
/// side. Dropping it closes the listener.
#[derive(Debug)]
pub struct EchoBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    closed: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoBackend {
    /// Starts on a free port.
    pub fn start() -> EchoBackend {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind echo backend");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, c) = (stop.clone(), closed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let c = c.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let mut buf = [0u8; 4096];
                            loop {
                                match conn.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            c.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        EchoBackend {
            port,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections that ended so far.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `payload` to 127.0.0.1:`port`, half-closes, and reads the answer.
pub fn exchange(port: u16, payload: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(payload)?;
    s.shutdown(Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The backend name answering through `port`, if the exchange worked.
pub fn who(port: u16) -> Option<String> {
    let answer = exchange(port, b"hello").ok()?;
    let (name, len) = answer.split_once(':')?;
    (len == "5").then(|| name.to_string())
}

/// `GET path` on 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `<method> path` on 127.0.0.1:`port` with `body`: (status, body).
pub fn http_request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The backends synapse's admin API lists for `service`, as `host:port` strings.
pub fn routed(admin_port: u16, service: &str) -> Option<Vec<String>> {
    let (status, body) = http_get(admin_port, "/services").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let list = v.get(service)?.get("backends")?.as_array()?;
    let mut out: Vec<String> = list
        .iter()
        .map(|b| format!("{}:{}", b["host"].as_str().unwrap_or("?"), b["port"]))
        .collect();
    out.sort();
    Some(out)
}

/// The value of a metric sample line starting with `prefix` (name and labels), if present.
pub fn metric(admin_port: u16, prefix: &str) -> Option<f64> {
    let (_, body) = http_get(admin_port, "/metrics").ok()?;
    body.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The value of the sample `name{labels}` on the admin API's `/metrics`, the labels exactly
/// these (in any order; none for an unlabelled series). `None` while the series is absent.
pub fn metric_sample(admin_port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (status, body) = http_get(admin_port, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    find_sample(&body, name, labels)
}

/// [`metric_sample`] on a Prometheus text exposition already read.
pub fn find_sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, inner) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let mut got = parse_labels(inner)?;
            got.sort();
            if got == want {
                value.parse().ok()
            } else {
                None
            }
        })
}

/// `k="v",k2="v2"` (values with Prometheus' escapes) into pairs.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim().to_string(), value));
        rest = after[end + 2..].trim_start_matches(',').trim();
    }
    Some(out)
}

/// A blocking ZooKeeper client for assertions (its own small runtime).
pub struct Zk {
    rt: tokio::runtime::Runtime,
    client: zkc::Client,
}

impl std::fmt::Debug for Zk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zk({:#x})", self.client.session_id().0)
    }
}

impl Zk {
    /// Connects to `connect`.
    pub fn connect(connect: &str) -> Zk {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let client = rt
            .block_on(
                zkc::Client::connector()
                    .with_session_timeout(Duration::from_secs(20))
                    .connect(connect),
            )
            .expect("test ZooKeeper client connects");
        Zk { rt, client }
    }

    /// This client's session id.
    pub fn session_id(&self) -> i64 {
        self.client.session_id().0
    }

    /// Children of `path` (sorted), empty if it does not exist.
    pub fn children(&self, path: &str) -> Result<Vec<String>, zkc::Error> {
        match self.rt.block_on(self.client.list_children(path)) {
            Ok(mut c) => {
                c.sort();
                Ok(c)
            }
            Err(zkc::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Data and ephemeral owner of `path`.
    pub fn get(&self, path: &str) -> Result<(Vec<u8>, i64), zkc::Error> {
        self.rt
            .block_on(self.client.get_data(path))
            .map(|(d, s)| (d, s.ephemeral_owner))
    }

    /// Writes `/services/<service>/<id>` with a payload for 127.0.0.1:`port` plus `extra`
    /// JSON members (e.g. `"\"weight\":10"`; empty for none).
    pub fn put_backend(&self, service: &str, id: &str, port: u16, extra: &str) {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        self.create(
            &format!("/services/{service}/{id}"),
            format!("{{\"host\":\"127.0.0.1\",\"port\":{port}{extra}}}").as_bytes(),
        );
    }

    /// Creates `path` (persistent) with `data`, creating parents. Retries through a
    /// reconnection (e.g. right after the server this client used was killed).
    pub fn create(&self, path: &str, data: &[u8]) {
        let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
        let parent = path.rsplit_once('/').map(|(p, _)| p).filter(|p| !p.is_empty());
        self.retry(&format!("create {path}"), || async {
            if let Some(parent) = parent {
                self.client.mkdir(parent, &opts).await?;
            }
            match self.client.create(path, data, &opts).await {
                Ok(_) | Err(zkc::Error::NodeExists) => Ok(()),
                Err(e) => Err(e),
            }
        });
    }

    /// Overwrites the data of `path` (retrying through a reconnection).
    pub fn set(&self, path: &str, data: &[u8]) {
        self.retry(&format!("set {path}"), || async {
            self.client.set_data(path, data, None).await.map(|_| ())
        });
    }

    /// Deletes `path` (retrying through a reconnection; a missing node counts as deleted).
    pub fn delete(&self, path: &str) {
        self.retry(&format!("delete {path}"), || async {
            match self.client.delete(path, None).await {
                Ok(()) | Err(zkc::Error::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        });
    }

    /// Changes the ensemble's membership (dynamic reconfiguration; the ensemble must allow
    /// it): `joining` as `server.N=...` lines, `leaving` as server ids. Retried through a
    /// reconnection.
    pub fn reconfig(&self, joining: &[&str], leaving: &[&str]) {
        self.retry("reconfig", || async {
            let update = zkc::EnsembleUpdate::Incremental {
                joinings: joining.iter().copied(),
                leavings: leaving.iter().copied(),
            };
            self.client.update_ensemble(update, None).await.map(|_| ())
        });
    }

    /// One delete attempt, its error returned (e.g. `NoAuth` on a protected node).
    pub fn try_delete(&self, path: &str) -> Result<(), zkc::Error> {
        self.rt.block_on(self.client.delete(path, None))
    }

    /// One set attempt, its error returned (e.g. `NoAuth` on a protected node).
    pub fn try_set(&self, path: &str, data: &[u8]) -> Result<(), zkc::Error> {
        self.rt
            .block_on(self.client.set_data(path, data, None))
            .map(|_| ())
    }

    fn retry<F, Fut>(&self, what: &str, mut op: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), zkc::Error>>,
    {
        crate::eventually_ok(what, Duration::from_secs(20), || {
            self.rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), op()).await })
                .map_err(|_| zkc::Error::Timeout)
                .and_then(|r| r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::find_sample;

    #[test]
    fn samples_are_found_by_name_and_exact_labels() {
        let text = "# HELP x_total X\n# TYPE x_total counter\nx_total 3\n\
                    x_total{service=\"web\"} 1\n\
                    x_total{backend=\"127.0.0.1:1\",service=\"web\"} 2\n\
                    y{reason=\"a,b \\\"q\\\"\"} 4.5\n";
        assert_eq!(find_sample(text, "x_total", &[]), Some(3.0));
        assert_eq!(find_sample(text, "x_total", &[("service", "web")]), Some(1.0));
        assert_eq!(
            find_sample(text, "x_total", &[("service", "web"), ("backend", "127.0.0.1:1")]),
            Some(2.0)
        );
        assert_eq!(find_sample(text, "x_total", &[("service", "db")]), None);
        assert_eq!(find_sample(text, "x", &[("service", "web")]), None);
        assert_eq!(find_sample(text, "y", &[("reason", "a,b \"q\"")]), Some(4.5));
    }
}
