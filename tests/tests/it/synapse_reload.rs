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

use integration_tests::agents::{http_get, metric, routed, who};
use integration_tests::{eventually, free_port, Agent, Backend, EchoBackend, Zk, ZkCluster};

const WAIT: Duration = Duration::from_secs(20);

/// A service line of the config.
fn service(name: &str, zk: &str, listen: u16, extra: &str) -> String {
    format!(
        "  - {{name: {name}, zk_hosts: \"{zk}\", zk_path: /services/{name}, listen: {listen}, \
         connect_timeout: 500ms{extra}}}\n"
    )
}

fn config(admin: u16, head: &str, services: &[String]) -> String {
    format!(
        "admin: {{listen: \"127.0.0.1:{admin}\"}}\n{head}services:\n{}",
        services.concat()
    )
}

fn reloads(admin: u16, result: &str) -> f64 {
    metric(
        admin,
        &format!("synapse_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Rewrites the agent's config and sends SIGHUP; waits until the reload is counted.
fn reload(agent: &Agent, admin: u16, text: &str, result: &str) {
    let before = reloads(admin, result);
    std::fs::write(agent.config_file(), text).unwrap();
    agent.signal("HUP");
    eventually(&format!("a reload counted as {result}"), WAIT, || {
        (reloads(admin, result) > before).then_some(())
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
    let (admin, web, apiport, echoport) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let head = format!("file_output: {{dir: {}}}\n", dir.path().display());
    let web_line = service("web", &cs, web, "");
    let echo_line = service("echo", &cs, echoport, "");
    let agent = Agent::start(
        "synapse",
        &config(admin, &head, &[web_line.clone(), echo_line.clone()]),
    );
    eventually("web routed", WAIT, || {
        (routed(admin, "web")?.len() == 2 && routed(admin, "echo")?.len() == 1).then_some(())
    });
    let mut held = TcpStream::connect(("127.0.0.1", echoport)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo_round(&mut held, b"before").unwrap();

    let load = Load::start(web);
    eventually("load flowing", WAIT, || (load.ok() >= 20).then_some(()));

    // Add a listener.
    let api_line = service("api", &cs, apiport, "");
    let two = config(
        admin,
        &head,
        &[web_line.clone(), echo_line.clone(), api_line.clone()],
    );
    reload(&agent, admin, &two, "ok");
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
    let filtered = service(
        "web",
        &cs,
        web,
        ", label_filters: [{label: tier, condition: equals, value: a}]",
    );
    reload(
        &agent,
        admin,
        &config(admin, &head, &[filtered, echo_line.clone(), api_line]),
        "ok",
    );
    eventually("web filtered", WAIT, || {
        (routed(admin, "web")? == [format!("127.0.0.1:{}", w1.port)]).then_some(())
    });
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
    assert_eq!(reloads(admin, "failed"), 0.0);
    assert!(agent.log().contains("config reloaded"), "{}", agent.log());
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
    let (admin, webport, echoport) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "drain_timeout: 1s\nfile_output: {{dir: {}}}\n",
        dir.path().display()
    );
    let web_line = service("web", &cs, webport, "");
    let agent = Agent::start(
        "synapse",
        &config(
            admin,
            &head,
            &[web_line.clone(), service("echo", &cs, echoport, "")],
        ),
    );
    eventually("both routed", WAIT, || {
        (routed(admin, "web")?.len() == 1 && routed(admin, "echo")?.len() == 1).then_some(())
    });
    eventually("echo.json written", WAIT, || {
        dir.path().join("echo.json").exists().then_some(())
    });
    let mut held = TcpStream::connect(("127.0.0.1", echoport)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo_round(&mut held, b"x").unwrap();

    reload(&agent, admin, &config(admin, &head, &[web_line]), "ok");
    eventually("the removed listener refuses", WAIT, || {
        TcpStream::connect(("127.0.0.1", echoport)).is_err().then_some(())
    });
    assert_eq!(who(webport).as_deref(), Some("web"));
    let (_, services) = http_get(admin, "/services").unwrap();
    assert!(!services.contains("\"echo\""), "{services}");
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
    let (admin, webport) = (free_port(), free_port());
    let good = config(admin, "", &[service("web", &cs, webport, "")]);
    let agent = Agent::start("synapse", &good);
    eventually("web routed", WAIT, || {
        (who(webport).as_deref() == Some("web")).then_some(())
    });

    let bad = format!(
        "{good}  - {{name: api, zk_hosts: \"{cs}\", zk_path: /services/api, listen: nope, \
         balance: fastest}}\nsurprise: 1\n"
    );
    reload(&agent, admin, &bad, "failed");
    let log = agent.log();
    for problem in ["services[1].listen", "services[1].balance", "surprise"] {
        assert!(log.contains(problem), "{problem} not logged:\n{log}");
    }
    assert_eq!(who(webport).as_deref(), Some("web"));
    assert_eq!(reloads(admin, "ok"), 0.0);

    // A listen address already taken: refused as a whole, nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let busy = config(
        admin,
        "",
        &[
            service("web", &cs, webport, ", balance: least_conn"),
            service("api", &cs, taken_port, ""),
        ],
    );
    reload(&agent, admin, &busy, "failed");
    assert!(agent
        .log()
        .contains(&format!("cannot listen on 127.0.0.1:{taken_port}")));
    let (_, services) = http_get(admin, "/services").unwrap();
    assert!(services.contains("\"round_robin\""), "web unchanged: {services}");
    assert!(!services.contains("\"api\""), "{services}");
    assert_eq!(who(webport).as_deref(), Some("web"));

    // SIGHUP with the file unchanged: a no-op reload, counted ok.
    reload(&agent, admin, &good, "ok");
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
    let (admin, web, shared) = (free_port(), free_port(), free_port());
    let web_svc = |extra: &str| service("web", &cs, web, &format!(", mode: http{extra}"));
    let api_svc = format!("  - {{name: api, mode: http, zk_hosts: \"{cs}\", zk_path: /services/api}}\n");
    let first = config(admin, "", &[web_svc("")]);
    let agent = Agent::start("synapse", &first);
    eventually("web routes both backends", WAIT, || {
        (routed(admin, "web")?.len() == 2).then_some(())
    });

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
    let filtered = web_svc(", label_filters: [{label: tier, condition: equals, value: b}]");
    reload(
        &agent,
        admin,
        &config(admin, "", std::slice::from_ref(&filtered)),
        "ok",
    );
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
    let head = format!(
        "http_listeners:\n  - listen: {shared}\n    routes:\n      - {{host: api.local, service: api}}\n      - {{path_prefix: /web/, service: web}}\n"
    );
    reload(
        &agent,
        admin,
        &config(admin, &head, &[filtered.clone(), api_svc.clone()]),
        "ok",
    );
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
    reload(
        &agent,
        admin,
        &config(admin, "", std::slice::from_ref(&filtered)),
        "ok",
    );
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
