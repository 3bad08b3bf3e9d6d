#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn backend(addr: &str, failures: u64) -> BackendView {
    BackendView {
        addr: addr.to_string(),
        id: format!("host_web_{addr}"),
        name: Some("host".to_string()),
        weight: Some(10),
        active: 2,
        connections: 40,
        failures,
        labels: "zone=a".to_string(),
    }
}

fn web(backends: Vec<BackendView>) -> ServiceView {
    ServiceView {
        name: "web".to_string(),
        listen: "127.0.0.1:8080".to_string(),
        zk_path: "/services/web".to_string(),
        synced: true,
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
        stale: true,
        ..web(vec![backend("10.0.0.1:80", 0)])
    };
    let html = render(&[waiting, empty, stale], "h", 0);
    assert!(html.contains("WAITING FOR FIRST SYNC"));
    assert!(html.contains(r#"<span class="badge down">NO BACKEND</span>"#));
    assert!(html.contains(r#"<span class="badge warn">STALE: PREVIOUS BACKENDS</span>"#));
    assert!(html.contains("<td>UP (stale)</td>"));
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
