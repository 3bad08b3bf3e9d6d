//! synapse's proxy under faults: connections before the first sync, idle and half-open
//! connections, file-descriptor exhaustion. Real ZooKeeper, real backends, the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::agents::{exchange, http_get, who};
use integration_tests::{
    consistently, eventually, free_port, Backend, EchoBackend, Synapse, SynapseBuilder, SynapseService, Zk,
    ZkCluster,
};

const WAIT: Duration = Duration::from_secs(20);
const PATH: &str = "/services/web";

/// synapse routing service `web` (from [`PATH`]).
fn synapse(zk: &str) -> SynapseBuilder {
    SynapseBuilder::new(zk).tcp("web")
}

/// synapse routing `web` with one more key of the service (by its name in the file).
fn synapse_with(zk: &str, key: &str, value: &str) -> SynapseBuilder {
    SynapseBuilder::new(zk).service(SynapseService::tcp("web").with(key, value))
}

/// `/ready`'s status, once the admin API answers.
fn ready(synapse: &Synapse) -> Option<u16> {
    http_get(synapse.admin(), "/ready").ok().map(|(status, _)| status)
}

/// Connects to the service port as soon as it is bound (retrying refused connects).
fn connect_when_bound(synapse: &Synapse) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(("127.0.0.1", synapse.listen())) {
            Ok(s) => return s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                // Polling for the bind: as tight as is reasonable, the race is the point.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("synapse's port {} never accepted: {e}", synapse.listen()),
        }
    }
}

fn put_node(zkc: &Zk, id: &str, port: u16) {
    zkc.create(
        &format!("{PATH}/{id}"),
        format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}").as_bytes(),
    );
}

/// One exchange on an open connection: send, half-close, read to EOF (up to `timeout`).
fn exchange_on(mut s: TcpStream, payload: &[u8], timeout: Duration) -> std::io::Result<String> {
    s.set_read_timeout(Some(timeout))?;
    s.write_all(payload)?;
    s.shutdown(Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `synapse_connections_rejected_total` of `web` for `reason`.
fn rejected(synapse: &Synapse, reason: &str) -> Option<f64> {
    synapse.metric(
        "synapse_connections_rejected_total",
        &[("reason", reason), ("service", "web")],
    )
}

/// Item: connections accepted in the first milliseconds after a restart were reset while
/// the route table was still empty.
#[test]
fn connections_from_the_moment_the_port_is_bound_are_routed() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    put_node(&Zk::connect(&cs), "a_0000000001", a.port);

    let synapse = synapse(&cs).start();
    // A burst of connections the instant the port accepts, then one request on each.
    let first = connect_when_bound(&synapse);
    let burst: Vec<TcpStream> = std::iter::once(first)
        .chain((0..9).map(|_| TcpStream::connect(("127.0.0.1", synapse.listen())).unwrap()))
        .collect();
    let mut answers: Vec<Result<String, String>> = burst
        .into_iter()
        .map(|s| exchange_on(s, b"hello", Duration::from_secs(10)).map_err(|e| e.to_string()))
        .collect();
    // Keep hammering through the first sync and a little after it.
    let mut after_ready = 0;
    while after_ready < 20 {
        if ready(&synapse) == Some(200) {
            after_ready += 1;
        }
        answers.push(exchange(synapse.listen(), b"hello").map_err(|e| e.to_string()));
        assert!(answers.len() < 10_000, "synapse never became ready");
    }
    let bad: Vec<_> = answers.iter().filter(|a| a.as_deref() != Ok("a:5")).collect();
    println!(
        "{} connections from bind to ready + 20, {} not served",
        answers.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "connections reset or unserved: {bad:?}");
    assert_eq!(rejected(&synapse, "not_synced"), Some(0.0));
}

/// A connection made while ZooKeeper is down waits for the first sync and is then routed.
#[test]
fn a_connection_made_while_zookeeper_is_down_waits_for_the_first_sync() {
    let mut zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    put_node(&Zk::connect(&cs), "a_0000000001", a.port);
    zk.kill(0);

    let synapse = synapse_with(&cs, "first_sync_timeout", "60s").start();
    let conn = connect_when_bound(&synapse);
    let client = std::thread::spawn(move || exchange_on(conn, b"hello", Duration::from_secs(90)));
    eventually("synapse accepted the connection", WAIT, || {
        (synapse.metric("synapse_connections_total", &[("service", "web")])? == 1.0).then_some(())
    });
    assert_eq!(ready(&synapse), Some(503), "not synced while ZooKeeper is down");
    assert!(
        !client.is_finished(),
        "the early connection was closed: {:?}",
        client.join()
    );

    let restarted = Instant::now();
    zk.restart(0);
    let answer = client.join().expect("client thread");
    println!(
        "ZooKeeper restarted -> waiting connection served in {:?}",
        restarted.elapsed()
    );
    assert_eq!(answer.expect("exchange"), "a:5");
    assert_eq!(ready(&synapse), Some(200));
    assert_eq!(rejected(&synapse, "not_synced"), Some(0.0));
}

/// Past `first_sync_timeout` without a sync, the waiting connection is closed and counted.
#[test]
fn without_a_first_sync_in_time_the_connection_is_closed_and_counted() {
    // Nothing listens there: the first sync never comes.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let synapse = synapse_with(&nowhere, "first_sync_timeout", "300ms").start();
    let conn = connect_when_bound(&synapse);
    let started = Instant::now();
    let answer = exchange_on(conn, b"hello", WAIT).unwrap_or_default();
    let waited = started.elapsed();
    assert_eq!(answer, "", "closed without an answer");
    assert!(
        waited >= Duration::from_millis(250),
        "closed before the bound: {waited:?}"
    );
    eventually("the rejection is counted", WAIT, || {
        (rejected(&synapse, "not_synced")? == 1.0).then_some(())
    });
    assert_eq!(ready(&synapse), Some(503));
}

/// Once synced, a service with no backend at all closes connections at once, counted as
/// `no_backend`.
#[test]
fn synced_without_backends_closes_at_once_as_no_backend() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    Zk::connect(&cs).create(PATH, b"");
    let synapse = synapse_with(&cs, "first_sync_timeout", "60s").start();
    eventually("ready", WAIT, || (ready(&synapse)? == 200).then_some(()));
    let started = Instant::now();
    assert_eq!(exchange(synapse.listen(), b"hello").unwrap_or_default(), "");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "did not wait for a sync it had"
    );
    eventually("counted", WAIT, || {
        (rejected(&synapse, "no_backend")? == 1.0).then_some(())
    });
    assert_eq!(
        synapse.metric("synapse_no_backend_total", &[("service", "web")]),
        Some(1.0)
    );
}

/// Item: proxied connections had no idle timeout, so half-open ones held descriptors.
#[test]
fn idle_connections_are_closed_both_sides_and_active_ones_are_not() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let echo = EchoBackend::start();
    put_node(&Zk::connect(&cs), "echo_0000000001", echo.port);
    let synapse = synapse_with(&cs, "idle_timeout", "600ms").start();
    eventually("ready", WAIT, || (ready(&synapse)? == 200).then_some(()));

    // Idle: one round trip, then silence.
    let mut idle = TcpStream::connect(("127.0.0.1", synapse.listen())).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    idle.write_all(b"x").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap(), 1);
    let quiet_since = Instant::now();
    let read = idle.read(&mut buf);
    let closed_after = quiet_since.elapsed();
    assert!(
        matches!(&read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "synapse closes the client side; got {read:?} after {closed_after:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(550),
        "closed too early: {closed_after:?}"
    );
    eventually("synapse closed the backend side too", WAIT, || {
        (echo.closed() == 1).then_some(())
    });
    println!("idle connection closed after {closed_after:?} (idle_timeout 600ms)");
    assert_eq!(
        synapse.metric("synapse_idle_timeouts_total", &[("service", "web")]),
        Some(1.0)
    );

    // Active: a byte every 150 ms for 3 s (five idle timeouts) keeps it open.
    let mut active = TcpStream::connect(("127.0.0.1", synapse.listen())).unwrap();
    active.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        active.write_all(b"y").expect("still open");
        let n = active.read(&mut buf).expect("echo");
        assert_eq!(n, 1, "echoed, not closed, after {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(150)); // the client's pace, not a wait
    }
    assert_eq!(
        echo.closed(),
        1,
        "the active connection's backend side is still open"
    );
    assert_eq!(
        synapse.metric("synapse_idle_timeouts_total", &[("service", "web")]),
        Some(1.0)
    );
}

/// `(state, timer kind, jiffies to timer)` of the IPv4 socket from local port `local` to
/// remote port `remote`, from /proc/net/tcp (timer kind 2 = keepalive).
fn tcp_timer(local: u16, remote: u16) -> Option<(u8, u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        if port(f[1])? != local || port(f[2])? != remote {
            return None;
        }
        let state = u8::from_str_radix(f[3], 16).ok()?;
        let (kind, when) = f[5].split_once(':')?;
        Some((
            state,
            u8::from_str_radix(kind, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

/// Both of synapse's sockets of a proxied connection have TCP keepalive with the
/// configured idle time.
#[test]
fn client_and_backend_sockets_have_tcp_keepalive() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let echo = EchoBackend::start();
    put_node(&Zk::connect(&cs), "echo_0000000001", echo.port);
    let synapse = synapse_with(&cs, "tcp_keepalive", "30s").start();
    eventually("ready", WAIT, || (ready(&synapse)? == 200).then_some(()));

    let mut conn = TcpStream::connect(("127.0.0.1", synapse.listen())).unwrap();
    conn.write_all(b"x").unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(conn.read(&mut buf).unwrap(), 1);
    let client_port = conn.local_addr().unwrap().port();
    // Established (1) with a keepalive timer (2) due within the configured 30 s (USER_HZ
    // is 100 on Linux: 3000 ticks).
    let client_side = eventually("synapse's client socket", WAIT, || {
        tcp_timer(synapse.listen(), client_port)
    });
    assert!(
        client_side.0 == 1 && client_side.1 == 2 && client_side.2 <= 3000,
        "{client_side:?}"
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let backend_side = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            let remote = u16::from_str_radix(f[2].rsplit(':').next()?, 16).ok()?;
            (remote == echo.port).then(|| tcp_timer(local, remote)).flatten()
        })
        .collect::<Vec<_>>();
    assert_eq!(
        backend_side.len(),
        1,
        "one connection to the backend: {backend_side:?}"
    );
    let b = backend_side[0];
    assert!(b.0 == 1 && b.1 == 2 && b.2 <= 3000, "{b:?}");
}

/// Item: under EMFILE the accept loop logged a warning every 5 ms.
#[test]
fn out_of_file_descriptors_backs_off_quietly_and_recovers() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    put_node(&Zk::connect(&cs), "a_0000000001", a.port);
    let mut synapse = synapse(&cs).fd_limit(48).start();
    eventually("routed", WAIT, || (who(synapse.listen())? == "a").then_some(()));

    // Clients that keep connecting: each proxied connection takes two of synapse's 48
    // descriptors, so accepts fail with EMFILE, and succeed again as others finish.
    let stop = Arc::new(AtomicBool::new(false));
    let port = synapse.listen();
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut served = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if exchange(port, b"hello").is_ok_and(|a| a == "a:5") {
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    eventually("synapse runs out of descriptors", WAIT, || {
        synapse.log().contains("Too many open files").then_some(())
    });
    // The load goes on for 3 s of descriptor exhaustion; synapse lives through it.
    consistently(
        "synapse runs through descriptor exhaustion",
        Duration::from_secs(3),
        || {
            if synapse.is_running() {
                Ok(())
            } else {
                Err("synapse exited")
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    let served: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();

    eventually("synapse serves again once descriptors are free", WAIT, || {
        (who(synapse.listen())? == "a").then_some(())
    });
    let log = synapse.log();
    let warnings = log.lines().filter(|l| l.contains("accept failed")).count();
    println!("EMFILE for 3 s under load: {warnings} accept warnings, {served} exchanges served");
    assert!(warnings >= 1, "the exhaustion was logged:\n{log}");
    assert!(warnings <= 5, "{warnings} accept warnings in ~3 s");
}
