//! Observability against the real thing: a real Prometheus (Debian's `prometheus`) runs
//! deploy/prometheus/prometheus.yml (targets pointed at this test's agents) with the alert
//! rules of deploy/prometheus/alerts.yml, scrapes the real nerve and synapse, and the test
//! queries their metrics back. Also: every metric named by the alert rules and the Grafana
//! dashboard is one the agents export.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration_tests::agents::http_get;
use integration_tests::{
    eventually, free_port, Backend, NerveBuilder, NerveService, SynapseBuilder, SynapseService, ZkCluster,
};

const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Runs the repository's config with the targets moved to `nerve` / `synapse` (admin
    /// ports) and 1 s scrape and evaluation intervals.
    fn start(nerve: u16, synapse: u16) -> Prometheus {
        let bin = Path::new("/usr/bin/prometheus");
        assert!(
            bin.exists(),
            "{} not found: install Debian's prometheus (apt-get install prometheus; deploy/test.sh does it)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let deploy = repo().join("deploy/prometheus");
        let config = std::fs::read_to_string(deploy.join("prometheus.yml")).unwrap();
        for needle in [
            "127.0.0.1:3421",
            "127.0.0.1:3422",
            "scrape_interval: 15s",
            "evaluation_interval: 15s",
            "  - alerts.yml",
        ] {
            assert!(config.contains(needle), "prometheus.yml no longer has {needle:?}");
        }
        let config = config
            .replace("127.0.0.1:3421", &format!("127.0.0.1:{nerve}"))
            .replace("127.0.0.1:3422", &format!("127.0.0.1:{synapse}"))
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
            .replace(
                "  - alerts.yml",
                &format!("  - {}", deploy.join("alerts.yml").display()),
            );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, port, dir };
        eventually("prometheus ready", WAIT, || {
            (http_get(p.port, "/-/ready").ok()?.0 == 200).then_some(())
        });
        p
    }

    /// The values of an instant query, as (labels, value).
    fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", encode(promql))).unwrap();
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"].clone(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Waits until `promql` returns exactly one sample equal to `want`.
    fn wait_value(&self, promql: &str, want: f64) {
        eventually(&format!("{promql} == {want} in Prometheus"), WAIT, || {
            let r = self.query(promql);
            (r.len() == 1 && r[0].1 == want).then_some(())
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- prometheus log -----\n{}", self.log());
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Metric family names in a Prometheus text exposition.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// `nerve_*` / `synapse_*` names in a text, histogram series folded into their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let at_word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word_start && (rest.starts_with("nerve_") || rest.starts_with("synapse_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..len];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn prometheus_scrapes_both_agents_and_the_rules_load() {
    let mut zk = ZkCluster::standalone();
    let app = Backend::start("app");
    let nerve = NerveBuilder::new(&zk.connect_string())
        .instance_id("prom-host")
        .service(NerveService::tcp("app", app.port).fall(1))
        .start();
    let synapse = SynapseBuilder::new(&zk.connect_string())
        .service(SynapseService::tcp("app").connect_timeout(None))
        .start();
    let (nerve_admin, synapse_admin) = (nerve.admin(), synapse.admin());
    eventually("synapse routes to the app", WAIT, || {
        (synapse.metric("synapse_backends", &[("service", "app")])? == 1.0).then_some(())
    });

    // What the alert rules and the dashboard name exists.
    let mut exported = families(&http_get(nerve_admin, "/metrics").unwrap().1);
    exported.extend(families(&http_get(synapse_admin, "/metrics").unwrap().1));
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/nerve-synapse.json",
    ] {
        let named = metric_names(&std::fs::read_to_string(repo().join(file)).unwrap());
        assert!(named.len() > 5, "{file}: {named:?}");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the agents do not export: {unknown:?}"
        );
    }

    let prom = Prometheus::start(nerve_admin, synapse_admin);
    prom.wait_value("up{job=\"nerve\"}", 1.0);
    prom.wait_value("up{job=\"synapse\"}", 1.0);
    prom.wait_value("nerve_service_registered{service=\"app\"}", 1.0);
    prom.wait_value("synapse_backends{service=\"app\"}", 1.0);
    prom.wait_value("synapse_zk_connected", 1.0);
    prom.wait_value("nerve_zk_connected", 1.0);

    // Every rule of alerts.yml loaded and evaluates.
    eventually("all rules evaluated", WAIT, || {
        let (_, body) = http_get(prom.port, "/api/v1/rules").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<&serde_json::Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let evaluated = rules.iter().all(|r| r["health"] == "ok");
        (rules.len() >= 10 && evaluated).then_some(())
    });

    // ZooKeeper gone: both agents say so, and Prometheus sees it.
    zk.kill(0);
    prom.wait_value("synapse_zk_connected", 0.0);
    prom.wait_value("nerve_zk_connected", 0.0);
    zk.restart(0);
    prom.wait_value("synapse_zk_connected", 1.0);
}
