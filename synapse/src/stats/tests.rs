#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn backend(addr: &str, failures: u64) -> BackendView {
    BackendView {
        addr: addr.to_string(),
        id: format!("host_web_{addr}"),
        name: Some("host".to_string()),
        weight: Some(10),
        effective_weight: 10,
        active: 2,
        connections: 40,
        failures,
        labels: "zone=a".to_string(),
        ..Default::default()
    }
}

fn web(backends: Vec<BackendView>) -> ServiceView {
    ServiceView {
        name: "web".to_string(),
        listen: "127.0.0.1:8080".to_string(),
        zk_path: "/services/web".to_string(),
        synced: true,
        source: "zookeeper".to_string(),
        balance: "round_robin".to_string(),
        last_change_ms: 1_700_000_000_000,
        backends,
        ..Default::default()
    }
}

#[test]
fn shows_every_backend_with_its_counters() {
    let html = render(
        &[web(vec![backend("10.0.0.1:80", 0), backend("10.0.0.2:80", 3)])],
        "h1",
        1_700_000_065_000,
    );
    assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
    assert!(html.contains("<td>10.0.0.1:80</td>") && html.contains("<td>10.0.0.2:80</td>"));
    assert!(html.contains(r#"<span class="badge up">UP</span>"#));
    // Failures are highlighted only where there are some.
    assert_eq!(html.matches(r#"<td class="n err">3</td>"#).count(), 1);
    assert!(html.contains("1m 5s ago (2023-11-14 22:13:20 UTC)"), "{html}");
    // Self-contained: nothing fetched from elsewhere.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
}

#[test]
fn states_of_a_service() {
    let waiting = ServiceView {
        synced: false,
        ..web(vec![])
    };
    let empty = web(vec![]);
    let stale = ServiceView {
        fallback: Some("previous_backends".to_string()),
        ..web(vec![backend("10.0.0.1:80", 0)])
    };
    let defaults = ServiceView {
        fallback: Some("default_servers".to_string()),
        ..web(vec![backend("10.0.0.9:80", 0)])
    };
    let html = render(&[waiting, empty, stale, defaults], "h", 0);
    assert!(html.contains("WAITING FOR FIRST SYNC"));
    assert!(html.contains(r#"<span class="badge down">NO BACKEND</span>"#));
    assert!(html.contains(r#"<span class="badge warn">STALE: PREVIOUS BACKENDS</span>"#));
    assert!(html.contains(r#"<span class="badge warn">DEFAULT SERVERS</span>"#));
    assert_eq!(html.matches("<td>UP (stand-in)</td>").count(), 2);
}

#[test]
fn states_of_a_backend() {
    let mut ejected = backend("10.0.0.1:80", 5);
    ejected.ejected = true;
    let mut drain = backend("10.0.0.2:80", 0);
    drain.effective_weight = 0;
    let mut backup = backend("10.0.0.3:80", 0);
    backup.backup = true;
    let mut svc = web(vec![ejected, drain, backup, backend("10.0.0.4:80", 0)]);
    svc.draining = vec![("10.0.0.5:80".to_string(), 3, 12)];
    let html = render(&[svc], "h", 0);
    assert!(
        html.contains(r#"<tr class="row-down"><td>10.0.0.1:80</td><td>EJECTED</td>"#),
        "{html}"
    );
    assert!(html.contains("<td>10.0.0.2:80</td><td>DRAIN (weight 0)</td>"));
    assert!(html.contains(r#"<td class="n">0 (node 10)</td>"#));
    assert!(html.contains("<td>10.0.0.3:80</td><td>BACKUP</td>"));
    assert!(html.contains(r#"<tr class="row-up"><td>10.0.0.4:80</td><td>UP</td>"#));
    assert!(html.contains("<td>10.0.0.5:80</td><td>DRAINING (removed)</td>"));
    assert!(html.contains("closes in 12s"));
}

#[test]
fn what_comes_from_zookeeper_is_escaped() {
    let mut b = backend("evil:1", 0);
    b.name = Some("<script>alert(1)</script>".to_string());
    b.labels = "a=\"><img src=x>".to_string();
    b.id = "x&y".to_string();
    let html = render(&[web(vec![b])], "<host>", 0);
    assert!(!html.contains("<script>") && !html.contains("<img"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("a=&quot;&gt;&lt;img src=x&gt;"));
    assert!(html.contains("<td>x&amp;y</td>") && html.contains("&lt;host&gt;"));
}

#[test]
fn formats() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
    assert_eq!(ago(59_999), "59s");
    assert_eq!(ago(3_600_000 * 2 + 300_000), "2h 5m");
    assert_eq!(ago(86_400_000 * 3 + 3_600_000), "3d 1h");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1536), "1.5 KiB");
}
