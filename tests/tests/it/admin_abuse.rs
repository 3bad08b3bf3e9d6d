//! The admin APIs of the real binaries under local abuse: 200 connections that send nothing,
//! never finish their request headers, never finish a request body, or stay idle after a
//! keep-alive request, reopened as soon as they are closed, must not keep a probe (synapse's
//! `GET /ready`, nerve's `GET /status`) from its answer within a second. Before, the 32
//! connection places were held until the 10 s header timeout and a probe waited in the
//! listen backlog behind them (or was closed to make room before it was read).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use integration_tests::agents::http_get;
use integration_tests::{
    eventually, Backend, NerveBuilder, NerveService, SynapseBuilder, SynapseService, Zk, ZkCluster,
};

const WAIT: Duration = Duration::from_secs(20);
/// What a Kubernetes probe would allow (its default `timeoutSeconds` is 1).
const PROBE_WITHIN: Duration = Duration::from_secs(1);
const SLOW: usize = 200;

/// Keeps `SLOW` connections to `port` open, reopening every one the server closes, until
/// dropped. In turn they send: nothing; half a request header; a whole head announcing a
/// body of which only a few bytes come; a whole keep-alive request, after which they read
/// the answer and stay idle.
struct Abuse {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    reopened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Abuse {
    fn start(port: u16) -> Abuse {
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let reopened = Arc::new(AtomicUsize::new(0));
        let (s, o, r) = (stop.clone(), open.clone(), reopened.clone());
        let thread = std::thread::spawn(move || {
            let connect = |i: usize| -> Option<TcpStream> {
                let addr = ([127, 0, 0, 1], port).into();
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
                let send: &[u8] = match i % 4 {
                    0 => b"",
                    1 => b"GET /ready HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
                    2 => b"PUT /log-level HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\ninf",
                    _ => b"GET /no-such-page HTTP/1.1\r\nHost: localhost\r\n\r\n",
                };
                c.write_all(send).ok()?;
                c.set_nonblocking(true).ok()?;
                Some(c)
            };
            let mut conns: Vec<Option<TcpStream>> = (0..SLOW).map(connect).collect();
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                for (i, slot) in conns.iter_mut().enumerate() {
                    let closed = match slot {
                        None => true,
                        Some(c) => match c.read(&mut buf) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != ErrorKind::WouldBlock,
                        },
                    };
                    if closed {
                        *slot = connect(i);
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
                o.store(conns.iter().flatten().count(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Abuse {
            stop,
            open,
            reopened,
            thread: Some(thread),
        }
    }
}

impl Drop for Abuse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET path` as a probe does it: a new connection, the answer within [`PROBE_WITHIN`].
fn probe(port: u16, path: &str) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PROBE_WITHIN)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("no answer within {PROBE_WITHIN:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    Ok((status, started.elapsed()))
}

/// Holds the abuse on `admin`, then probes `path` ten times: each answer 200 within a
/// second.
fn probes_answer_under_abuse(agent: &str, admin: u16, path: &str) {
    eventually(&format!("{agent} {path}"), WAIT, || {
        (http_get(admin, path).ok()?.0 == 200).then_some(())
    });
    let abuse = Abuse::start(admin);
    eventually("the slow connections open", WAIT, || {
        (abuse.open.load(Ordering::Relaxed) == SLOW).then_some(())
    });
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        match probe(admin, path) {
            Ok((200, took)) => {
                assert!(took <= PROBE_WITHIN, "{agent}: probe {i} took {took:?}");
                slowest = slowest.max(took);
            }
            Ok((status, _)) => panic!("{agent}: probe {i} answered {status}"),
            Err(e) => panic!(
                "{agent}: probe {i} under {SLOW} slow connections ({} reopened so far): {e}",
                abuse.reopened.load(Ordering::Relaxed)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{agent}: 10 probes answered under {SLOW} slow connections, the slowest in {slowest:?} ({} reopened)",
        abuse.reopened.load(Ordering::Relaxed)
    );
}

#[test]
fn synapse_ready_answers_while_slow_clients_hold_the_admin_port() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let backend = Backend::start("b");
    zkc.put_backend("web", "b_0000000001", backend.port, "");
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .service(SynapseService::tcp("web"))
        .start();
    probes_answer_under_abuse("synapse", synapse.admin(), "/ready");
}

#[test]
fn nerve_ready_answers_while_slow_clients_hold_the_admin_port() {
    let zk = ZkCluster::standalone();
    let app = Backend::start("app");
    let nerve = NerveBuilder::new(&zk.connect_string())
        .instance_id("h")
        .service(NerveService::tcp("app", app.port))
        .start();
    probes_answer_under_abuse("nerve", nerve.admin(), "/status");
}
