//! synapse's config reload (SIGHUP) end to end: a listener added while another carries
//! traffic (zero failed requests, the untouched listener keeps its socket and connections),
//! a service changed in place, a listener removed (its connections drained), an invalid file
//! refused while the running config goes on. Real ZooKeeper, real backends, the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::agents::who;
use integration_tests::{
    eventually, free_port, Backend, EchoBackend, Synapse, SynapseBuilder, SynapseService, Zk, ZkCluster,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn reloads(synapse: &Synapse, result: &str) -> f64 {
    synapse
        .metric("synapse_config_reloads_total", &[("result", result)])
        .unwrap_or(0.0)
}

/// Reloads `synapse` with `change` applied to its config; waits until the reload is counted
/// as `result`.
fn reload(synapse: &mut Synapse, result: &str, change: impl FnOnce(SynapseBuilder) -> SynapseBuilder) {
    let before = reloads(synapse, result);
    synapse.reload(change);
    eventually(&format!("a reload counted as {result}"), WAIT, || {
        (reloads(synapse, result) > before).then_some(())
    });
}

/// An open connection through synapse to an echo backend: one round trip.
fn echo_round(s: &mut TcpStream, tag: &[u8]) -> std::io::Result<()> {
    s.write_all(tag)?;
    let mut buf = vec![0; tag.len()];
    s.read_exact(&mut buf)?;
    assert_eq!(buf, tag);
    Ok(())
}

/// Bounded load on one listener: `who` in a loop (a new connection each time) from two
/// threads until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match who(port) {
                            Some(_) => ok.fetch_add(1, Ordering::Relaxed),
                            None => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops; (successes, failures).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Adding a listener, then changing the loaded service in place, while a steady load runs
/// on it: zero failed requests, and a connection opened before the reloads is still served
/// (same socket, same connections).
#[test]
fn reload_adds_a_listener_and_changes_a_service_without_a_failed_request() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let (w1, w2, api) = (Backend::start("w1"), Backend::start("w2"), Backend::start("api"));
    let echo = EchoBackend::start();
    zkc.put_backend("web", "w1_0000000001", w1.port, r#""labels":{"tier":"a"}"#);
    zkc.put_backend("web", "w2_0000000002", w2.port, r#""labels":{"tier":"b"}"#);
    zkc.put_backend("api", "api_0000000001", api.port, "");
    zkc.put_backend("echo", "echo_0000000001", echo.port, "");
    let dir = tempfile::tempdir().unwrap();
    let mut synapse = SynapseBuilder::new(&cs)
        .top("file_output", json!({"dir": dir.path().display().to_string()}))
        .tcp("web")
        .tcp("echo")
        .start();
    let (web, echoport) = (synapse.port("web"), synapse.port("echo"));
    synapse.wait_routes("web", 2);
    synapse.wait_routes("echo", 1);
    let mut held = TcpStream::connect(("127.0.0.1", echoport)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo_round(&mut held, b"before").unwrap();

    let load = Load::start(web);
    eventually("load flowing", WAIT, || (load.ok() >= 20).then_some(()));

    // Add a listener.
    reload(&mut synapse, "ok", |c| c.tcp("api"));
    let apiport = synapse.port("api");
    let answer = eventually("the new listener serves", WAIT, || who(apiport));
    assert_eq!(answer, "api");
    eventually("api.json written", WAIT, || {
        dir.path().join("api.json").exists().then_some(())
    });
    let served = load.ok();
    eventually("load goes on after the reload", WAIT, || {
        (load.ok() >= served + 20).then_some(())
    });

    // Change the loaded service in place: a label filter keeps only w1.
    reload(&mut synapse, "ok", |c| {
        c.edit("web", |s| {
            s.with(
                "label_filters",
                json!([{"label": "tier", "condition": "equals", "value": "a"}]),
            )
        })
    });
    synapse.wait_routed_to("web", &[w1.port]);
    let served = load.ok();
    eventually("load goes on after the change", WAIT, || {
        (load.ok() >= served + 20).then_some(())
    });
    let (ok, failed) = load.finish();
    println!("load on the untouched/changed listener across two reloads: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "requests failed during the reloads");
    for _ in 0..5 {
        assert_eq!(who(web).as_deref(), Some("w1"));
    }
    // The connection opened before both reloads is still served.
    echo_round(&mut held, b"after").unwrap();
    assert_eq!(reloads(&synapse, "failed"), 0.0);
    assert!(synapse.log().contains("config reloaded"), "{}", synapse.log());
}

/// Removing a listener: it stops accepting, its open connection gets `drain_timeout` and is
/// then closed, its file_output file goes; the other service is untouched.
#[test]
fn reload_removes_a_listener_and_drains_its_connections() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let web = Backend::start("web");
    let echo = EchoBackend::start();
    zkc.put_backend("web", "web_0000000001", web.port, "");
    zkc.put_backend("echo", "echo_0000000001", echo.port, "");
    let dir = tempfile::tempdir().unwrap();
    let mut synapse = SynapseBuilder::new(&cs)
        .drain_timeout(Duration::from_secs(1))
        .top("file_output", json!({"dir": dir.path().display().to_string()}))
        .tcp("web")
        .tcp("echo")
        .start();
    let (webport, echoport) = (synapse.port("web"), synapse.port("echo"));
    synapse.wait_routes("web", 1);
    synapse.wait_routes("echo", 1);
    eventually("echo.json written", WAIT, || {
        dir.path().join("echo.json").exists().then_some(())
    });
    let mut held = TcpStream::connect(("127.0.0.1", echoport)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo_round(&mut held, b"x").unwrap();

    reload(&mut synapse, "ok", |c| c.without("echo"));
    eventually("the removed listener refuses", WAIT, || {
        TcpStream::connect(("127.0.0.1", echoport)).is_err().then_some(())
    });
    assert_eq!(who(webport).as_deref(), Some("web"));
    let services = synapse.services();
    assert!(services.get("echo").is_none(), "{services}");
    eventually("echo.json removed", WAIT, || {
        (!dir.path().join("echo.json").exists()).then_some(())
    });
    // Within the drain time the open connection still works (or the drain already ended
    // it on a slow machine: then it reads EOF, as below).
    if echo_round(&mut held, b"y").is_ok() {
        // After drain_timeout (1 s) it is closed: EOF.
        let mut buf = [0u8; 1];
        let n = held.read(&mut buf).expect("closed, not reset");
        assert_eq!(n, 0, "closed by synapse at the end of the drain");
    }
    eventually("the echo backend saw the close", WAIT, || {
        (echo.closed() >= 1).then_some(())
    });
}

/// An invalid file is refused, every problem logged, and the running config goes on.
#[test]
fn reload_refuses_an_invalid_file_and_keeps_serving() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let web = Backend::start("web");
    zkc.put_backend("web", "web_0000000001", web.port, "");
    let good = SynapseBuilder::new(&cs).tcp("web");
    let mut synapse = good.clone().start();
    let webport = synapse.port("web");
    eventually("web routed", WAIT, || {
        (who(webport).as_deref() == Some("web")).then_some(())
    });

    // Written as text: the builder cannot write these mistakes.
    let mut bad = serde_json::to_value(good.file()).unwrap();
    bad["services"].as_array_mut().unwrap().push(json!({
        "name": "api", "zk_hosts": cs, "zk_path": "/services/api", "listen": "nope",
        "balance": "fastest"
    }));
    bad["surprise"] = json!(1);
    let before = reloads(&synapse, "failed");
    synapse.reload_raw(&bad.to_string());
    eventually("a reload counted as failed", WAIT, || {
        (reloads(&synapse, "failed") > before).then_some(())
    });
    let log = synapse.log();
    for problem in ["services[1].listen", "services[1].balance", "surprise"] {
        assert!(log.contains(problem), "{problem} not logged:\n{log}");
    }
    assert_eq!(who(webport).as_deref(), Some("web"));
    assert_eq!(reloads(&synapse, "ok"), 0.0);

    // A listen address already taken: refused as a whole, nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    reload(&mut synapse, "failed", |c| {
        c.edit("web", |s| s.with("balance", "least_conn"))
            .service(SynapseService::tcp("api").listen_on(taken_port))
    });
    assert!(synapse
        .log()
        .contains(&format!("cannot listen on 127.0.0.1:{taken_port}")));
    let services = synapse.services();
    assert_eq!(
        services["web"]["balance"], "round_robin",
        "web unchanged: {services}"
    );
    assert!(services.get("api").is_none(), "{services}");
    assert_eq!(who(webport).as_deref(), Some("web"));

    // SIGHUP with the file unchanged: a no-op reload, counted ok.
    reload(&mut synapse, "ok", |_| good);
    assert_eq!(who(webport).as_deref(), Some("web"));
}

/// `mode: http` and shared HTTP listeners across reloads, under a keep-alive load: a changed
/// service is followed by connections opened before the reload (their next request uses the
/// new settings: a label filter here), a shared listener is added with a route to a service
/// that has no listener of its own, then removed; zero failed requests on the untouched
/// listener throughout.
#[test]
fn reload_http_services_and_shared_listeners_without_a_failed_request() {
    use integration_tests::http::{HttpBackend, HttpConn};
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let zkc = Zk::connect(&cs);
    let (h1, h2, api) = (
        HttpBackend::start("h1"),
        HttpBackend::start("h2"),
        HttpBackend::start("api"),
    );
    zkc.put_backend("web", "h1_0000000001", h1.port, r#""labels":{"tier":"a"}"#);
    zkc.put_backend("web", "h2_0000000002", h2.port, r#""labels":{"tier":"b"}"#);
    zkc.put_backend("api", "api_0000000001", api.port, "");
    let shared = free_port();
    let mut synapse = SynapseBuilder::new(&cs).http("web").start();
    let web = synapse.port("web");
    synapse.wait_routes("web", 2);

    // A keep-alive connection opened before the reloads, and a keep-alive load beside it.
    let mut kept = HttpConn::open(web).unwrap();
    let seen: std::collections::BTreeSet<String> = (0..6)
        .map(|_| kept.get("web.local", "/").unwrap().backend().unwrap())
        .collect();
    assert_eq!(seen.len(), 2, "round robin over both: {seen:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut conn = HttpConn::open(web).unwrap();
            while !stop.load(Ordering::Relaxed) {
                match conn.get("web.local", "/") {
                    Ok(a) if a.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("load: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = HttpConn::open(web).unwrap();
                    }
                }
            }
        })
    };

    // 1. The service changes (a label filter keeps h2 only): the old connection follows.
    reload(&mut synapse, "ok", |c| {
        c.edit("web", |s| {
            s.with(
                "label_filters",
                json!([{"label": "tier", "condition": "equals", "value": "b"}]),
            )
        })
    });
    eventually(
        "the connection opened before the reload routes to h2 only",
        WAIT,
        || {
            let picks: Vec<String> = (0..4)
                .map(|_| kept.get("web.local", "/").unwrap().backend().unwrap())
                .collect();
            picks.iter().all(|b| b == "h2").then_some(())
        },
    );

    // 2. A shared listener appears, routing api.local to a service with no listener.
    reload(&mut synapse, "ok", |c| {
        c.top(
            "http_listeners",
            json!([{"listen": shared, "routes": [
                {"host": "api.local", "service": "api"},
                {"path_prefix": "/web/", "service": "web"},
            ]}]),
        )
        .service(SynapseService::http("api").no_listen().connect_timeout(None))
    });
    let mut via_shared = eventually("the shared listener answers", WAIT, || {
        HttpConn::open(shared).ok()
    });
    eventually("api routed through the shared listener", WAIT, || {
        let a = via_shared.get("api.local", "/").ok()?;
        (a.status == 200 && a.backend().as_deref() == Some("api")).then_some(())
    });
    let a = via_shared.get("other.local", "/web/x").unwrap();
    assert_eq!((a.status, a.backend().as_deref()), (200, Some("h2")));
    let a = via_shared.get("other.local", "/nothing").unwrap();
    assert_eq!(a.status, 404, "no route: {}", a.text());

    // 3. The shared listener goes away; the service's own listener is untouched.
    reload(&mut synapse, "ok", |c| {
        c.without("api").without_top("http_listeners")
    });
    eventually("the shared listener is closed", WAIT, || {
        TcpStream::connect(("127.0.0.1", shared)).is_err().then_some(())
    });

    let before = ok.load(Ordering::Relaxed);
    eventually("the load goes on after the reloads", WAIT, || {
        let now = ok.load(Ordering::Relaxed);
        (now > before + 20 && now >= 200).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "failed requests during the reloads ({ok} ok)");
    assert_eq!(
        kept.get("web.local", "/").unwrap().backend().as_deref(),
        Some("h2")
    );
}
