//! Continuous, bounded client load for fault-injection tests, and a line-echo backend that
//! serves it both ways: a new connection per request, and keep-alive connections carrying
//! one request after another.
//!
//! Protocol: the client sends a line `<id>\n`; the backend answers `<backend name>:<id>\n`.
//! A per-request client then half-closes and reads to EOF; a keep-alive client sends its next
//! line on the same connection (and, like an HTTP client with a per-connection request cap,
//! closes it cleanly and opens a new one every [`KEEPALIVE_REQUESTS`] requests).
//!
//! [`Load::start_http`] does the same over HTTP/1.1 (`GET /load/<id>`, to an HTTP backend
//! that echoes the path, e.g. [`crate::http::HttpBackend`]): a new connection per request
//! (`Connection: close`), and keep-alive connections that follow the server's
//! `Connection: close` by opening a new one, as HTTP clients do.
//!
//! Every request that does not get its answer is a failure, recorded with its kind and time.
//! A refused connect is counted apart ([`Tally::refused`]): tests decide whether it is allowed
//! (it is while a restarted proxy's port is not bound yet); the client retries it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests a keep-alive client sends on one connection before it closes it and opens another.
pub const KEEPALIVE_REQUESTS: u64 = 25;
/// How long a client waits for a connect or an answer before it counts a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures kept with their details (the count goes on past it).
const KEPT_FAILURES: usize = 20;

/// A TCP backend answering each line `<id>` with `<name>:<id>`, on as many connections as
/// clients open, until they close. [`stop_accepting`](Self::stop_accepting) closes the
/// listener (new connections are refused) and lets established connections finish, like a
/// server draining; dropping it does the same.
#[derive(Debug)]
pub struct LineBackend {
    /// Its name, in every answer.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LineBackend {
    /// Starts on a free port.
    pub fn start(name: &str) -> LineBackend {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind line backend");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (name.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let n = n.clone();
                        std::thread::spawn(move || serve_lines(&n, conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        LineBackend {
            name: name.to_string(),
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listener; established connections are served until their clients close.
    pub fn stop_accepting(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LineBackend {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

fn serve_lines(name: &str, conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else { return };
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if out
                    .write_all(format!("{name}:{}\n", line.trim_end()).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Since the load started.
    pub at: Duration,
    /// `per-request` or `keep-alive`.
    pub client: &'static str,
    /// What happened: `reset`, `closed without answer`, `timeout`, `bad answer ...`, ...
    pub what: String,
}

/// Counts since the last [`Load::take`].
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Requests answered.
    pub ok: u64,
    /// Connects refused (retried; not a failed request).
    pub refused: u64,
    /// Requests that got no answer.
    pub failed: u64,
    /// The first failures, with details.
    pub failures: Vec<Failure>,
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<Failure>>,
}

/// Clients sending requests through `port` until stopped (or dropped): `per_request` clients
/// each opening a connection per request, `keep_alive` clients each keeping one open, every
/// client pausing `pause` between requests (so the rate is bounded: about
/// `(per_request + keep_alive) / pause`).
#[derive(Debug)]
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the clients (line protocol, see [`LineBackend`]).
    pub fn start(port: u16, per_request: usize, keep_alive: usize, pause: Duration) -> Load {
        Self::start_with(port, per_request, keep_alive, pause, false)
    }

    /// Starts HTTP/1.1 clients (see the module docs).
    pub fn start_http(port: u16, per_request: usize, keep_alive: usize, pause: Duration) -> Load {
        Self::start_with(port, per_request, keep_alive, pause, true)
    }

    fn start_with(port: u16, per_request: usize, keep_alive: usize, pause: Duration, http: bool) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut threads = Vec::new();
        for i in 0..per_request + keep_alive {
            let (stop, counters) = (stop.clone(), counters.clone());
            let keep = i >= per_request;
            threads.push(std::thread::spawn(move || {
                let client = Client {
                    addr,
                    started,
                    counters,
                    pause,
                    stop,
                    id: i,
                };
                if http {
                    client.http(keep);
                } else if keep {
                    client.keep_alive();
                } else {
                    client.per_request();
                }
            }));
        }
        Load {
            started,
            stop,
            counters,
            threads,
        }
    }

    /// The counts since the last call (or the start), and resets them.
    pub fn take(&self) -> Tally {
        let c = &self.counters;
        let failures = std::mem::take(&mut *c.failures.lock().unwrap_or_else(PoisonError::into_inner));
        Tally {
            ok: c.ok.swap(0, Ordering::Relaxed),
            refused: c.refused.swap(0, Ordering::Relaxed),
            failed: c.failed.swap(0, Ordering::Relaxed),
            failures,
        }
    }

    /// Requests answered since the last [`take`](Self::take), without resetting.
    pub fn answered(&self) -> u64 {
        self.counters.ok.load(Ordering::Relaxed)
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the clients and waits for them (each finishes its current request).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Client {
    addr: SocketAddr,
    started: Instant,
    counters: Arc<Counters>,
    pause: Duration,
    stop: Arc<AtomicBool>,
    id: usize,
}

/// Why a request failed, or `Refused` (the connect was refused: retried, not a failure).
enum Outcome {
    Ok,
    Refused,
    Failed(String),
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::ConnectionAborted => "aborted".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout".into(),
        _ => format!("{e}"),
    }
}

impl Client {
    fn record(&self, kind: &'static str, outcome: Outcome) {
        let c = &self.counters;
        match outcome {
            Outcome::Ok => {
                c.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused => {
                c.refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(what) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                let mut kept = c.failures.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() < KEPT_FAILURES {
                    kept.push(Failure {
                        at: self.started.elapsed(),
                        client: kind,
                        what,
                    });
                }
            }
        }
    }

    fn connect(&self) -> Result<TcpStream, Outcome> {
        match TcpStream::connect_timeout(&self.addr, CLIENT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(CLIENT_TIMEOUT));
                let _ = s.set_write_timeout(Some(CLIENT_TIMEOUT));
                Ok(s)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(Outcome::Refused),
            Err(e) => Err(Outcome::Failed(format!("connect: {}", describe(&e)))),
        }
    }

    /// The pause before the next request: a refused connect is retried soon, as a client
    /// waiting for a port would.
    fn pause_after(&self, outcome: &Outcome) -> Duration {
        match outcome {
            Outcome::Refused => Duration::from_millis(2),
            _ => self.pause,
        }
    }

    /// A new connection per request: send, half-close, read the answer to EOF.
    fn per_request(&self) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let id = format!("r{}-{n}", self.id);
            let outcome = match self.connect() {
                Err(o) => o,
                Ok(mut s) => {
                    let sent = s
                        .write_all(format!("{id}\n").as_bytes())
                        .and_then(|()| s.shutdown(Shutdown::Write));
                    let mut answer = String::new();
                    match sent.and_then(|()| s.read_to_string(&mut answer)) {
                        Err(e) => Outcome::Failed(describe(&e)),
                        Ok(_) => check(&answer, &id),
                    }
                }
            };
            let pause = self.pause_after(&outcome);
            self.record("per-request", outcome);
            std::thread::sleep(pause);
        }
    }

    /// Requests one after another on one connection, renewed every `KEEPALIVE_REQUESTS`.
    fn keep_alive(&self) {
        let mut n = 0u64;
        let mut conn: Option<(BufReader<TcpStream>, TcpStream, u64)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if conn.is_none() {
                match self.connect() {
                    Ok(s) => match s.try_clone() {
                        Ok(w) => conn = Some((BufReader::new(s), w, 0)),
                        Err(e) => {
                            self.record("keep-alive", Outcome::Failed(describe(&e)));
                            continue;
                        }
                    },
                    Err(o) => {
                        let pause = self.pause_after(&o);
                        self.record("keep-alive", o);
                        std::thread::sleep(pause);
                        continue;
                    }
                }
            }
            let Some((reader, writer, used)) = conn.as_mut() else {
                continue;
            };
            n += 1;
            let id = format!("k{}-{n}", self.id);
            let mut answer = String::new();
            let outcome = match writer
                .write_all(format!("{id}\n").as_bytes())
                .and_then(|()| reader.read_line(&mut answer))
            {
                Err(e) => Outcome::Failed(describe(&e)),
                Ok(_) => check(&answer, &id),
            };
            *used += 1;
            let broken = !matches!(outcome, Outcome::Ok);
            if broken || *used >= KEEPALIVE_REQUESTS {
                if let Some((mut reader, writer, _)) = conn.take() {
                    if !broken {
                        // Clean close: half-close, then the peer's EOF.
                        let _ = writer.shutdown(Shutdown::Write);
                        let mut rest = Vec::new();
                        let _ = reader.read_to_end(&mut rest);
                    }
                }
            }
            let pause = self.pause_after(&outcome);
            self.record("keep-alive", outcome);
            std::thread::sleep(pause);
        }
        if let Some((_, writer, _)) = conn {
            let _ = writer.shutdown(Shutdown::Both);
        }
    }
}

impl Client {
    /// HTTP/1.1 requests: a new connection each (`keep == false`), or kept alive until the
    /// server says `Connection: close` (or every `KEEPALIVE_REQUESTS` requests).
    fn http(&self, keep: bool) {
        let kind = if keep {
            "http keep-alive"
        } else {
            "http per-request"
        };
        let mut n = 0u64;
        let mut conn: Option<(BufReader<TcpStream>, TcpStream, u64)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if conn.is_none() {
                match self.connect() {
                    Ok(s) => match s.try_clone() {
                        Ok(w) => conn = Some((BufReader::new(s), w, 0)),
                        Err(e) => {
                            self.record(kind, Outcome::Failed(describe(&e)));
                            continue;
                        }
                    },
                    Err(o) => {
                        let pause = self.pause_after(&o);
                        self.record(kind, o);
                        std::thread::sleep(pause);
                        continue;
                    }
                }
            }
            let Some((reader, writer, used)) = conn.as_mut() else {
                continue;
            };
            n += 1;
            *used += 1;
            let id = format!("h{}-{n}", self.id);
            let last = !keep || *used >= KEEPALIVE_REQUESTS;
            let close = if last { "Connection: close\r\n" } else { "" };
            let request = format!("GET /load/{id} HTTP/1.1\r\nHost: web\r\n{close}\r\n");
            let outcome = match writer
                .write_all(request.as_bytes())
                .map_err(|e| describe(&e))
                .and_then(|()| read_response(reader))
            {
                Err(what) => Outcome::Failed(what),
                Ok((status, _, body)) if status != 200 => {
                    Outcome::Failed(format!("status {status}: {}", String::from_utf8_lossy(&body)))
                }
                Ok((_, server_closes, body)) => {
                    if server_closes {
                        *used = KEEPALIVE_REQUESTS;
                    }
                    if String::from_utf8_lossy(&body).contains(&format!("/load/{id}")) {
                        Outcome::Ok
                    } else {
                        Outcome::Failed(format!("bad answer to {id}: {}", String::from_utf8_lossy(&body)))
                    }
                }
            };
            let broken = !matches!(outcome, Outcome::Ok);
            if broken || last || *used >= KEEPALIVE_REQUESTS {
                conn = None;
            }
            let pause = self.pause_after(&outcome);
            self.record(kind, outcome);
            std::thread::sleep(pause);
        }
    }
}

/// Reads one HTTP/1.1 response: (status, whether the server closes the connection, body).
/// The body is delimited by `Content-Length`, chunked encoding, or the end of the stream.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool, Vec<u8>), String> {
    let mut line = String::new();
    let read_line = |reader: &mut BufReader<TcpStream>, line: &mut String| -> Result<(), String> {
        line.clear();
        match reader.read_line(line) {
            Ok(0) => Err("closed without answer".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(describe(&e)),
        }
    };
    read_line(reader, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut chunked, mut closes) = (None, false, false);
    loop {
        read_line(reader, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (
                name.trim().to_ascii_lowercase(),
                value.trim().to_ascii_lowercase(),
            );
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => closes = value.contains("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(reader, &mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).map_err(|e| describe(&e))?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body).map_err(|e| describe(&e))?;
    } else {
        reader.read_to_end(&mut body).map_err(|e| describe(&e))?;
        closes = true;
    }
    Ok((status, closes, body))
}

fn check(answer: &str, id: &str) -> Outcome {
    let answer = answer.trim_end();
    if answer.is_empty() {
        return Outcome::Failed("closed without answer".into());
    }
    match answer.split_once(':') {
        Some((_, got)) if got == id => Outcome::Ok,
        _ => Outcome::Failed(format!("bad answer {answer:?} to {id:?}")),
    }
}
