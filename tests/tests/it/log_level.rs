//! `PUT /log-level` on the admin APIs of the real binaries: the filter changes at run time,
//! a bad one is refused and changes nothing, `DELETE` restores the one the agent started with.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::Duration;

use integration_tests::agents::{http_get, http_request, routed};
use integration_tests::{
    eventually, Backend, NerveBuilder, NerveService, SynapseBuilder, SynapseService, Zk, ZkCluster,
};

const WAIT: Duration = Duration::from_secs(20);

fn put_node(zk: &Zk, id: &str, b: &Backend) {
    zk.create(
        &format!("/services/web/{id}"),
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", b.port).as_bytes(),
    );
}

#[test]
fn synapse_log_level_changes_at_run_time() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let mut synapse = SynapseBuilder::new(&zk.connect_string())
        .service(SynapseService::tcp("web").connect_timeout(None))
        .env("RUST_LOG", "warn")
        .start();
    let admin = synapse.admin();
    eventually("synapse admin", WAIT, || {
        (http_get(admin, "/log-level").ok()? == (200, "warn\n".to_string())).then_some(())
    });

    // At `warn`, a route change (an info event) is not logged.
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    put_node(&zkc, "a_0000000001", &a);
    let want_a = vec![format!("127.0.0.1:{}", a.port)];
    eventually("a routed", WAIT, || {
        (routed(admin, "web")? == want_a).then_some(())
    });
    assert!(
        !synapse.log().contains("route table updated"),
        "{}",
        synapse.log()
    );

    // A bad filter is refused and changes nothing.
    let (status, body) = http_request(admin, "PUT", "/log-level", "info,synapse=nonsense").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid log level"), "{body}");
    assert_eq!(http_get(admin, "/log-level").unwrap().1, "warn\n");
    // Input that panicked tracing-subscriber's parser (found by a property test of the
    // config), and a typo that it would take as a target name: refused, the agent lives on.
    for bad in ["\u{2000}\u{1e800}=", "verbose"] {
        let (status, body) = http_request(admin, "PUT", "/log-level", bad).unwrap();
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body.contains("invalid log level"), "{body}");
    }
    assert!(synapse.is_running(), "{}", synapse.log());
    assert_eq!(http_get(admin, "/log-level").unwrap().1, "warn\n");

    let (status, body) = http_request(admin, "PUT", "/log-level", "info\n").unwrap();
    assert_eq!((status, body.as_str()), (200, "info\n"));
    put_node(&zkc, "b_0000000002", &b);
    eventually("the next route change logged at info", WAIT, || {
        synapse.log().contains("route table updated").then_some(())
    });
    assert!(synapse.log().contains("log filter changed through the admin API"));

    // Back to what it started with.
    let (status, body) = http_request(admin, "DELETE", "/log-level", "").unwrap();
    assert_eq!((status, body.as_str()), (200, "warn\n"));
    // Only GET, PUT and DELETE.
    assert_eq!(http_request(admin, "POST", "/log-level", "debug").unwrap().0, 405);
}

#[test]
fn nerve_log_level_changes_at_run_time() {
    let zk = ZkCluster::standalone();
    let app = Backend::start("app");
    let config = NerveBuilder::new(&zk.connect_string())
        .instance_id("h")
        .service(NerveService::tcp("app", app.port).fall(1));
    // Watchdog pings every 50 ms, each one a debug line of `common::notify`.
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while systemd.recv(&mut buf).is_ok() {}
    });
    let nerve = config
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .env("WATCHDOG_USEC", "100000")
        .start();
    let admin = nerve.admin();
    eventually("nerve admin", WAIT, || {
        (http_get(admin, "/log-level").ok()? == (200, "info\n".to_string())).then_some(())
    });
    eventually("nerve registered", WAIT, || {
        nerve.log().contains("registered").then_some(())
    });
    assert!(!nerve.log().contains("notified the service manager"));
    let (status, body) = http_request(admin, "PUT", "/log-level", "info,common::notify=debug").unwrap();
    assert_eq!((status, body.as_str()), (200, "info,common::notify=debug\n"));
    eventually("debug lines from common::notify", WAIT, || {
        nerve.log().contains("notified the service manager").then_some(())
    });
}
