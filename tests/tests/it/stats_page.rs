//! synapse's `/stats` page in a real browser (Debian's headless Chromium): two real backends,
//! registered by the real nerve, routed by the real synapse, shown on the page.
//!
//! Set `STATS_SCREENSHOT=/some/file.png` to keep a screenshot of the page.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::agents::{http_get, routed, who};
use integration_tests::{
    eventually, Backend, NerveBuilder, NerveService, SynapseBuilder, SynapseService, ZkCluster,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Debian's Chromium; the test fails (it does not skip) when it is missing.
fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        Path::new(path).exists(),
        "{path} not found: install Debian's chromium (apt-get install chromium; deploy/test.sh does it)"
    );
    path
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile, killed after 60 s.
fn browse(url: &str, args: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "chromium did not finish within 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_page_shows_the_real_backends_in_a_browser() {
    let zk = ZkCluster::standalone();
    let (a, b) = (Backend::start("alpha"), Backend::start("beta"));
    let nerve = [(&a, "east"), (&b, "west")].iter().fold(
        NerveBuilder::new(&zk.connect_string()).instance_id("stats-host"),
        |n, (backend, zone)| {
            n.service(
                NerveService::tcp(&backend.name, backend.port)
                    .instance_id(&format!("stats-host-{}", backend.name))
                    .zk_path("/services/web")
                    .fall(1)
                    .with("weight", 10)
                    .with("labels", json!({"zone": zone})),
            )
        },
    );
    let _nerve = nerve.start();
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .service(SynapseService::tcp("web").connect_timeout(None))
        .start();
    let (admin, listen) = (synapse.admin(), synapse.port("web"));
    let addrs = [format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port)];
    let mut want = addrs.to_vec();
    want.sort();
    eventually("synapse routes to both", WAIT, || {
        (routed(admin, "web")? == want).then_some(())
    });
    // Some traffic, so the counters have something to show.
    for _ in 0..6 {
        assert!(who(listen).is_some());
    }
    let (status, _) = http_get(admin, "/stats").unwrap();
    assert_eq!(status, 200);

    let url = format!("http://127.0.0.1:{admin}/stats");
    let out = browse(&url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for addr in &addrs {
        assert!(
            dom.contains(&format!("<td>{addr}</td>")),
            "{addr} not on the page:\n{dom}"
        );
    }
    assert!(dom.contains("<title>synapse stats"), "{dom}");
    assert!(dom.contains(r#"<span class="badge up">UP</span>"#), "{dom}");
    assert!(dom.contains("zone=east") && dom.contains("zone=west"), "{dom}");
    assert!(
        dom.contains("stats-host-alpha") && dom.contains("stats-host-beta"),
        "{dom}"
    );

    if let Ok(png) = std::env::var("STATS_SCREENSHOT") {
        let out = browse(
            &url,
            &[
                &format!("--screenshot={png}"),
                "--window-size=1280,560",
                "--hide-scrollbars",
            ],
        );
        assert!(out.status.success() && Path::new(&png).exists(), "{out:?}");
    }
}
