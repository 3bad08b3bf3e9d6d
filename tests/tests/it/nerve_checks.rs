//! nerve's checks against real targets started here: HTTP and HTTPS (a self-signed
//! certificate made at test time), a TCP line server, a real redis-server and a gRPC health
//! server. Checks are built from YAML through nerve's real config loader and run in process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::Duration;

use integration_tests::targets::serving::{NOT_SERVING, SERVING};
use integration_tests::{free_port, GrpcHealth, HttpTarget, Redis, TestCert};
use nerve::check::{Check, CheckError};
use nerve::config::Config;

/// The checks of one service on 127.0.0.1:`port`, `checks` a YAML flow list.
fn checks(port: u16, checks: &str) -> Vec<Check> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nerve.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - {{name: web, host: 127.0.0.1, port: {port}, zk_hosts: 'a:1', zk_path: /s/web, checks: {checks}}}\n"
        ),
    )
    .unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    config.services[0]
        .checks
        .iter()
        .cloned()
        .map(Check::new)
        .collect()
}

/// One check.
fn check(port: u16, yaml: &str) -> Check {
    checks(port, &format!("[{yaml}]")).remove(0)
}

async fn result(port: u16, yaml: &str) -> Result<(), CheckError> {
    check(port, yaml).run().await.result
}

#[tokio::test]
async fn http_statuses_body_method_and_host_header() {
    let web = HttpTarget::start();
    let p = web.port;
    web.route("/health", 200, "status: ok");
    web.route("/created", 201, "");
    web.route("/moved", 302, "");
    web.route("/down", 503, "status: down");
    let mut big = "x".repeat(100 * 1024);
    big.push_str("MARK");
    web.route("/big", 200, big);

    assert_eq!(result(p, "{type: http}").await, Ok(()), "GET /health, 200-399");
    assert_eq!(
        result(p, "{type: http, uri: /down}").await,
        Err(CheckError::Status {
            status: 503,
            expected: "200-399".into()
        })
    );
    // A list of codes and ranges.
    let list = r#"expect_status: [200, "300-302"]"#;
    assert_eq!(
        result(p, &format!("{{type: http, uri: /moved, {list}}}")).await,
        Ok(())
    );
    assert_eq!(
        result(p, &format!("{{type: http, uri: /created, {list}}}")).await,
        Err(CheckError::Status {
            status: 201,
            expected: "200, 300-302".into()
        })
    );
    assert_eq!(
        result(p, "{type: http, uri: /down, expect_status: 503}").await,
        Ok(()),
        "a 503 can be what is expected"
    );
    // The body substring.
    assert_eq!(result(p, "{type: http, expect_body: 'status: ok'}").await, Ok(()));
    assert_eq!(
        result(
            p,
            "{type: http, uri: /down, expect_status: 503, expect_body: 'status: ok'}"
        )
        .await,
        Err(CheckError::Body {
            expected: "status: ok".into(),
            read: 12
        })
    );
    // Only the first 64 KiB of a body are read.
    assert_eq!(
        result(p, "{type: http, uri: /big, expect_body: MARK}").await,
        Err(CheckError::Body {
            expected: "MARK".into(),
            read: 64 * 1024
        })
    );

    // HEAD, and the Host header the server sees: default, host_header, headers.
    assert_eq!(result(p, "{type: http, method: HEAD}").await, Ok(()));
    assert_eq!(
        result(
            p,
            "{type: http, host_header: web.example, uri: '/health?from=nerve'}"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        result(p, "{type: http, headers: {Host: api.example, X-Probe: nerve}}").await,
        Ok(())
    );
    let seen = web.requests();
    let head = seen.iter().find(|r| r.method == "HEAD").expect("a HEAD request");
    assert_eq!(head.uri, "/health");
    assert_eq!(seen[0].headers["host"], format!("127.0.0.1:{p}"));
    assert_eq!(seen[0].headers["user-agent"], "nerve");
    let with_query = seen.iter().find(|r| r.uri == "/health?from=nerve").unwrap();
    assert_eq!(with_query.headers["host"], "web.example");
    let probed = seen.iter().find(|r| r.headers.contains_key("x-probe")).unwrap();
    assert_eq!(probed.headers["host"], "api.example");
    assert_eq!(probed.headers["x-probe"], "nerve");
}

#[tokio::test]
async fn https_verifies_by_default_and_trusts_the_ca_file_or_the_opt_out() {
    let cert = TestCert::self_signed();
    let dir = tempfile::tempdir().unwrap();
    let ca = cert.write_pem(dir.path(), "ca.pem");
    let web = HttpTarget::start_tls(&cert);
    web.route("/health", 200, "ok");
    let p = web.port;

    // Verification is on: a self-signed certificate is not in the built-in roots.
    let err = result(p, "{type: https}").await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Tls { reason, .. } if reason.contains("UnknownIssuer")),
        "{err}"
    );
    // Trusted through tls_ca_file, by IP (the default server name) or by name.
    let ca = ca.display();
    assert_eq!(
        result(
            p,
            &format!("{{type: https, tls_ca_file: '{ca}', expect_body: ok}}")
        )
        .await,
        Ok(())
    );
    assert_eq!(
        result(
            p,
            &format!("{{type: https, tls_ca_file: '{ca}', tls_server_name: localhost}}")
        )
        .await,
        Ok(())
    );
    // A name the certificate does not carry is refused, CA file or not.
    let err = result(
        p,
        &format!("{{type: https, tls_ca_file: '{ca}', tls_server_name: other.example}}"),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, CheckError::Tls { .. }), "{err}");
    // The explicit opt-out.
    assert_eq!(result(p, "{type: https, tls_skip_verify: true}").await, Ok(()));
    // Plain HTTP to a TLS port fails; the statuses still apply over TLS.
    assert!(result(p, "{type: http}").await.is_err());
    assert!(matches!(
        result(p, "{type: https, tls_skip_verify: true, uri: /nope}").await,
        Err(CheckError::Status { status: 404, .. })
    ));
}

/// A line server: sends a banner, reads once, answers `+PONG\r\n` to `PING\r\n`, else
/// echoes what it read; then closes.
fn line_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.write_all(b"220 ready\r\n");
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 256];
                let n = conn.read(&mut buf).unwrap_or(0);
                let answer: &[u8] = if &buf[..n] == b"PING\r\n" {
                    b"+PONG\r\n"
                } else {
                    &buf[..n]
                };
                let _ = conn.write_all(answer);
            });
        }
    });
    port
}

#[tokio::test]
async fn tcp_connect_send_and_expect() {
    let p = line_server();
    assert_eq!(result(p, "{type: tcp}").await, Ok(()));
    assert_eq!(result(p, "{type: tcp, expect: '220 '}").await, Ok(()), "a banner");
    assert_eq!(
        result(p, r#"{type: tcp, send: "PING\r\n", expect: "+PONG\r\n"}"#).await,
        Ok(()),
        "a line protocol"
    );
    assert_eq!(
        result(
            p,
            "{type: tcp, send: {hex: '00ff7f'}, expect: {hex: '0d0a00ff7f'}}"
        )
        .await,
        Ok(()),
        "bytes"
    );
    assert_eq!(
        result(p, r#"{type: tcp, send: "QUIT\r\n", expect: "+PONG"}"#).await,
        Err(CheckError::Expect {
            expected: "+PONG".into(),
            received: "220 ready\r\nQUIT\r\n".into(),
            closed: true
        })
    );
    let closed = free_port();
    assert!(matches!(
        result(closed, "{type: tcp}").await,
        Err(CheckError::Connect { .. })
    ));
}

#[tokio::test]
async fn tcp_expect_waits_no_longer_than_the_timeout() {
    // A server that accepts and never sends anything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = listener.local_addr().unwrap().port();
    assert_eq!(
        result(p, "{type: tcp, expect: hello, timeout: 200ms}").await,
        Err(CheckError::Timeout(Duration::from_millis(200)))
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_ping_with_and_without_auth() {
    let open = tokio::task::spawn_blocking(|| Redis::start(None, &[]))
        .await
        .unwrap();
    assert_eq!(result(open.port, "{type: redis}").await, Ok(()));

    let locked = tokio::task::spawn_blocking(|| Redis::start(Some("s3cret"), &[("probe", "pr0be")]))
        .await
        .unwrap();
    let p = locked.port;
    let err = result(p, "{type: redis}").await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Redis { command: "PING", reply } if reply.starts_with("-NOAUTH")),
        "{err}"
    );
    let err = result(p, "{type: redis, password: wrong}").await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Redis { command: "AUTH", reply } if reply.starts_with("-WRONGPASS")),
        "{err}"
    );
    assert_eq!(result(p, "{type: redis, password: s3cret}").await, Ok(()));
    assert_eq!(
        result(p, "{type: redis, username: probe, password: pr0be}").await,
        Ok(()),
        "an ACL user"
    );
    assert!(result(p, "{type: redis, username: probe, password: s3cret}")
        .await
        .is_err());
    // The status never shows the password.
    let c = check(p, "{type: redis, password: s3cret}");
    assert_eq!(c.target(), format!("redis://127.0.0.1:{p}"));

    // A server that is not Redis.
    let web = HttpTarget::start();
    assert!(result(web.port, "{type: redis}").await.is_err());
}

#[tokio::test]
async fn grpc_health_serving_not_serving_and_unknown() {
    let grpc = GrpcHealth::start();
    let p = grpc.port;
    grpc.set("", Some(SERVING));
    grpc.set("web.v1.Web", Some(SERVING));
    grpc.set("db.v1.Db", Some(NOT_SERVING));

    assert_eq!(result(p, "{type: grpc}").await, Ok(()), "the whole server");
    assert_eq!(result(p, "{type: grpc, service: web.v1.Web}").await, Ok(()));
    assert_eq!(
        result(p, "{type: grpc, service: db.v1.Db}").await,
        Err(CheckError::NotServing {
            service: "db.v1.Db".into(),
            status: "NOT_SERVING".into()
        })
    );
    let err = result(p, "{type: grpc, service: nope}").await.unwrap_err();
    assert!(
        matches!(&err, CheckError::Grpc(m) if m.contains("grpc-status 5 (NOT_FOUND)") && m.contains("unknown service")),
        "{err}"
    );
    assert_eq!(grpc.asked(), ["", "web.v1.Web", "db.v1.Db", "nope"]);

    // Switched at run time.
    let web = check(p, "{type: grpc, service: web.v1.Web}");
    grpc.set("web.v1.Web", Some(NOT_SERVING));
    assert!(matches!(
        web.run().await.result,
        Err(CheckError::NotServing { .. })
    ));
    grpc.set("web.v1.Web", Some(SERVING));
    assert_eq!(web.run().await.result, Ok(()));

    // Not a gRPC server: an HTTP/1 server refuses the HTTP/2 preface.
    let http = HttpTarget::start();
    assert!(result(http.port, "{type: grpc}").await.is_err());
}

#[tokio::test]
async fn grpc_health_over_tls() {
    let cert = TestCert::self_signed();
    let dir = tempfile::tempdir().unwrap();
    let ca = cert.write_pem(dir.path(), "ca.pem");
    let grpc = GrpcHealth::start_tls(&cert);
    grpc.set("", Some(SERVING));
    let p = grpc.port;
    assert!(matches!(
        result(p, "{type: grpc, tls: true}").await,
        Err(CheckError::Tls { .. })
    ));
    assert_eq!(
        result(
            p,
            &format!("{{type: grpc, tls: true, tls_ca_file: '{}'}}", ca.display())
        )
        .await,
        Ok(())
    );
    assert_eq!(
        result(p, "{type: grpc, tls: true, tls_skip_verify: true}").await,
        Ok(())
    );
    assert!(result(p, "{type: grpc}").await.is_err(), "h2c to a TLS port");
}

/// End to end: the real nerve binary and a real ZooKeeper. One service with two checks of
/// different types; when one fails the node goes, and `/status` and the metrics name that
/// check only.
#[test]
fn one_failing_check_of_two_removes_the_node_and_is_the_only_one_shown() {
    use integration_tests::agents::http_get;
    use integration_tests::{eventually, NerveBuilder, NerveService, Zk, ZkCluster};
    use serde_json::json;

    const WAIT: Duration = Duration::from_secs(20);
    const PATH: &str = "/services/web";
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let web = HttpTarget::start();
    web.route("/health", 200, "ok");
    let grpc = GrpcHealth::start();
    grpc.set("web", Some(SERVING));
    let nerve = NerveBuilder::new(&cs)
        .instance_id("host-1")
        .service(
            NerveService::tcp("web", web.port)
                .zk_path(PATH)
                .fall(1)
                .checks(vec![
                    json!({"type": "http", "name": "health", "expect_body": "ok"}),
                    json!({"type": "grpc", "port": grpc.port, "service": "web"}),
                ]),
        )
        .start();
    let admin = nerve.admin();
    let zkc = Zk::connect(&cs);
    eventually("nerve registers the service", WAIT, || {
        (zkc.children(PATH).ok()?.len() == 1).then_some(())
    });

    web.route("/health", 503, "down");
    eventually("the node is removed when one check fails", WAIT, || {
        zkc.children(PATH).ok()?.is_empty().then_some(())
    });
    let (code, body) = http_get(admin, "/status").unwrap();
    assert_eq!(code, 503, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let svc = &status["services"][0];
    assert_eq!(svc["healthy"], false, "{body}");
    let checks = svc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{body}");
    let (health, grpc_check) = (&checks[0], &checks[1]);
    assert_eq!(health["name"], "health");
    assert_eq!(health["type"], "http");
    assert_eq!(health["target"], format!("http://127.0.0.1:{}/health", web.port));
    assert_eq!(health["up"], false);
    assert_eq!(health["last_result"], "fail");
    assert!(
        health["last_error"].as_str().unwrap().contains("http status 503"),
        "{body}"
    );
    assert!(health["consecutive_failures"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(health["consecutive_successes"], 0);
    assert_eq!(grpc_check["name"], "1_grpc");
    assert_eq!(grpc_check["type"], "grpc");
    assert_eq!(grpc_check["up"], true, "{body}");
    assert_eq!(grpc_check["last_result"], "ok");
    assert!(grpc_check["last_error"].is_null(), "{body}");
    let summary = svc["last_check_error"].as_str().unwrap();
    assert!(summary.starts_with("health: http status 503"), "{summary}");
    assert!(!summary.contains("1_grpc"), "{summary}");
    let up = |check: &str| nerve.metric("nerve_check_up", &[("check", check), ("service", "web")]);
    assert_eq!(up("health"), Some(0.0));
    assert_eq!(up("1_grpc"), Some(1.0));
    assert!(
        nerve
            .metric(
                "nerve_checks_total",
                &[("check", "health"), ("result", "fail"), ("service", "web")]
            )
            .unwrap()
            >= 1.0
    );

    web.route("/health", 200, "ok");
    eventually("the node is back once the check passes", WAIT, || {
        (zkc.children(PATH).ok()?.len() == 1).then_some(())
    });
}
