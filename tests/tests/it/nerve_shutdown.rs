//! nerve's SIGTERM path against a real ZooKeeper: deregistration first, then the drain, then
//! exit, whatever the checks are doing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{eventually, NerveBuilder, NerveService, Zk, ZkCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const PATH: &str = "/services/hang";

/// An HTTP server that answers `200 OK` until told to hang; then it accepts connections
/// and never answers (holding them), like a wedged application.
struct HangingHttp {
    port: u16,
    hang: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    // Held connections stay open until the test ends.
    _conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl HangingHttp {
    fn start() -> HangingHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hang = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (h, n, c) = (hang.clone(), held.clone(), conns.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if h.load(Ordering::SeqCst) {
                    c.lock().unwrap().push(conn);
                    n.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = conn.read(&mut buf);
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                });
            }
        });
        HangingHttp {
            port,
            hang,
            held,
            _conns: conns,
        }
    }
}

/// A check that hangs (timeout 30 s) does not hold SIGTERM: the node is deleted first, the
/// drain time is honoured, and the process exits right after it.
#[test]
fn sigterm_exits_promptly_while_a_check_hangs() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let app = HangingHttp::start();
    let drain = Duration::from_secs(2);
    let mut nerve = NerveBuilder::new(&cs)
        .instance_id("hang-host")
        .drain_time(drain)
        .service(
            NerveService::tcp("app", app.port)
                .zk_path(PATH)
                .fall(3)
                .checks(vec![json!({"type": "http", "uri": "/health", "timeout": "30s"})]),
        )
        .start();
    let zkc = Zk::connect(&cs);
    eventually("nerve registers the service", WAIT, || {
        (zkc.children(PATH).ok()?.len() == 1).then_some(())
    });

    // The application wedges: the next check connects and waits for an answer that never
    // comes (its timeout is 30 s, so the service stays registered meanwhile).
    app.hang.store(true, Ordering::SeqCst);
    eventually("a check is stuck on the wedged server", WAIT, || {
        (app.held.load(Ordering::SeqCst) >= 1).then_some(())
    });

    let signalled = Instant::now();
    nerve.signal("TERM");
    eventually("the node is deleted on SIGTERM", WAIT, || {
        zkc.children(PATH).ok()?.is_empty().then_some(())
    });
    let deregistered = signalled.elapsed();
    assert!(
        nerve.is_running(),
        "nerve deregisters before its drain time ends, not by exiting"
    );
    let status = nerve.wait_exit(WAIT);
    let exited = signalled.elapsed();
    eprintln!("SIGTERM → node deleted {deregistered:?}, → exit {exited:?} (drain {drain:?})");
    assert!(status.success(), "clean exit: {status:?}\n{}", nerve.log());
    assert!(exited >= drain, "the drain time is honoured: {exited:?}");
    // Deregistration (5 s budget, here milliseconds) plus the drain, not the 30 s check.
    assert!(
        exited < drain + Duration::from_secs(3),
        "exit within drain + deregistration, not after the hanging check: {exited:?}\n{}",
        nerve.log()
    );
}
