//! Real gRPC peers the project did not write: Python `grpcio` (Google's C-core gRPC) servers
//! and clients, run as child processes from `tests/grpc/peer.py` (read its docstring for the
//! methods and the client modes).
//!
//! The Python that runs them: `$GRPC_TEST_PYTHON`, else `<target dir>/grpc-venv/bin/python3`
//! (what `deploy/test.sh` makes), else `python3`. Without `grpcio` and
//! `grpcio-health-checking` the tests fail, saying how to install them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The peer script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc/peer.py")
}

const INSTALL: &str = "the gRPC tests need Python with grpcio and grpcio-health-checking: run \
    `python3 -m venv target/grpc-venv && target/grpc-venv/bin/pip install grpcio grpcio-health-checking` \
    (deploy/test.sh does it), or point GRPC_TEST_PYTHON at a python that has them";

/// The Python interpreter with `grpcio`; panics with how to get it when there is none.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Some(p) = std::env::var_os("GRPC_TEST_PYTHON") {
            candidates.push(PathBuf::from(p));
        }
        // target/debug/deps/<test> → target/grpc-venv
        if let Some(target) = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        {
            candidates.push(target.join("grpc-venv/bin/python3"));
        }
        candidates.push(PathBuf::from("python3"));
        let mut tried = Vec::new();
        for c in candidates {
            let ok = Command::new(&c)
                .args(["-c", "import grpc, grpc_health.v1.health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return c;
            }
            tried.push(c.display().to_string());
        }
        panic!("{INSTALL} (tried: {})", tried.join(", "));
    })
}

/// A `grpcio` server (`peer.py server`) on a free port, answering with its id. Dropping it
/// kills it.
#[derive(Debug)]
pub struct GrpcServer {
    /// Its id, in every answer.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    /// Held open: the server also stops when it closes (the test process gone).
    _stdin: Option<ChildStdin>,
}

impl GrpcServer {
    /// Starts a server and waits until it serves.
    pub fn start(id: &str) -> GrpcServer {
        let mut child = Command::new(python())
            .arg(script())
            .args(["server", "--id", id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the gRPC server {id}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let line = read_line_within(stdout, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the gRPC server {id} did not report its port"));
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the gRPC server {id} said {line:?}, expected PORT <n>"));
        GrpcServer {
            id: id.to_string(),
            port,
            child,
            _stdin: stdin,
        }
    }

    /// Kills it (SIGKILL): its connections are reset, its calls lost.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it gracefully (SIGTERM: grpcio sends GOAWAY, lets calls finish for up to 5 s)
    /// and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let child = &mut self.child;
        crate::eventually("the gRPC server to exit", Duration::from_secs(20), || {
            child.try_wait().ok().flatten()
        });
    }

    /// Its own counters (`Stats`, asked directly, not through synapse).
    pub fn stats(&self) -> serde_json::Value {
        let out = client(self.port, &["stats"]);
        assert_eq!(out.ok, 1, "Stats of {}: {:?}", self.id, out.errors);
        out.raw["stats"].clone()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first line of `out`, if it comes within `timeout`.
fn read_line_within(out: ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut r = BufReader::new(out);
        let _ = r.read_line(&mut line);
        let _ = tx.send((line, r));
    });
    let (line, _reader) = rx.recv_timeout(timeout).ok()?;
    (!line.is_empty()).then_some(line)
}

/// What a client run reported.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Calls that succeeded (and, for streams, carried every byte intact).
    pub ok: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Failures by gRPC status name (`UNAVAILABLE`, ...).
    pub codes: BTreeMap<String, u64>,
    /// The first failures, with their messages.
    pub errors: Vec<String>,
    /// Successful calls by the id of the server that answered.
    pub by_backend: BTreeMap<String, u64>,
    /// `by_backend` per phase (a load's `mark`s start phases).
    pub phases: Vec<BTreeMap<String, u64>>,
    /// The whole report.
    pub raw: serde_json::Value,
}

impl Outcome {
    fn parse(line: &str) -> Outcome {
        let raw: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("client report {line:?}: {e}"));
        let counts = |v: &serde_json::Value| -> BTreeMap<String, u64> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Outcome {
            ok: raw["ok"].as_u64().unwrap_or(0),
            failures: raw["failures"].as_u64().unwrap_or(0),
            codes: counts(&raw["codes"]),
            errors: raw["errors"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            by_backend: counts(&raw["by_backend"]),
            phases: raw["phases"]
                .as_array()
                .map(|a| a.iter().map(counts).collect())
                .unwrap_or_default(),
            raw,
        }
    }
}

/// Longest a client run may take before it counts as hung.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// Runs `peer.py client --target 127.0.0.1:<port> <args>` (one channel) and returns its
/// report; panics if it hangs (more than two minutes) or reports nothing.
pub fn client(port: u16, args: &[&str]) -> Outcome {
    let mut child = Command::new(python())
        .arg(script())
        .args(["client", "--target", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the gRPC client: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let line = read_line_within(stdout, CLIENT_LIMIT);
    let Some(line) = line else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gRPC client {args:?} hung (no report within {CLIENT_LIMIT:?})");
    };
    let _ = child.wait();
    Outcome::parse(&line)
}

/// A client sending unary calls at a steady rate over one channel, in the background.
#[derive(Debug)]
pub struct GrpcLoad {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    started: Instant,
}

impl GrpcLoad {
    /// Starts `rate` calls per second to `127.0.0.1:<port>`, each with a deadline of
    /// `timeout`; returns once the first calls went out.
    pub fn start(port: u16, rate: u32, timeout: Duration) -> GrpcLoad {
        let mut child = Command::new(python())
            .arg(script())
            .args(["client", "--target", &format!("127.0.0.1:{port}"), "load"])
            .args(["--rate", &rate.to_string()])
            .args(["--timeout-ms", &timeout.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the gRPC load: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut load = GrpcLoad {
            child,
            stdin,
            lines,
            started: Instant::now(),
        };
        load.expect("STARTED");
        load.started = Instant::now();
        load
    }

    fn expect(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with(what) || what.is_empty() => line,
            Ok(line) => panic!("the gRPC load said {line:?}, expected {what}"),
            Err(_) => panic!("the gRPC load did not say {what:?} within 30 s"),
        }
    }

    /// Starts a new phase of the counts; returns once the client has.
    pub fn mark(&mut self) {
        let stdin = self.stdin.as_mut().expect("load still running");
        stdin.write_all(b"mark\n").expect("write to the gRPC load");
        stdin.flush().expect("flush");
        self.expect("MARKED");
    }

    /// How long it has been sending.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, waits for the calls in flight and returns the report.
    pub fn finish(mut self) -> Outcome {
        self.stdin.take();
        let line = match self.lines.recv_timeout(CLIENT_LIMIT) {
            Ok(line) => line,
            Err(_) => panic!("the gRPC load hung after it was told to stop"),
        };
        let _ = self.child.wait();
        Outcome::parse(&line)
    }
}

impl Drop for GrpcLoad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
