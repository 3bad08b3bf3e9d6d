//! SIGHUP reload of the real nerve binary against a real ZooKeeper: unchanged services are
//! not written, a changed one is updated in place (its node never goes away), removed ones
//! deregister, added ones register, an invalid file is refused, the operator's state stays.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::agents::http_get;
use integration_tests::{eventually, Backend, Nerve, NerveBuilder, NerveService, Zk, ZkCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";

/// Service `name` of instance `host-<name>` on `port`, under [`PATH`].
fn service(name: &str, port: u16) -> NerveService {
    NerveService::tcp(name, port)
        .instance_id(&format!("host-{name}"))
        .zk_path(PATH)
        .rise(2)
        .checks(vec![json!({"type": "tcp"})])
}

/// Node name → payload, of every node under [`PATH`].
fn nodes(zkc: &Zk) -> BTreeMap<String, serde_json::Value> {
    zkc.children(PATH)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let (d, _) = zkc.get(&format!("{PATH}/{c}")).ok()?;
            Some((c, serde_json::from_slice(&d).ok()?))
        })
        .collect()
}

fn node_of<'a>(
    n: &'a BTreeMap<String, serde_json::Value>,
    name: &str,
) -> Option<(&'a String, &'a serde_json::Value)> {
    n.iter().find(|(_, v)| v["name"] == format!("host-{name}"))
}

fn writes(nerve: &Nerve, service: &str) -> f64 {
    ["create", "set", "delete"]
        .iter()
        .filter_map(|op| nerve.metric("nerve_zk_writes_total", &[("op", op), ("service", service)]))
        .sum()
}

#[test]
fn sighup_reload_diffs_services() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let (a, b, c, d) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
        Backend::start("d"),
    );
    let mut nerve = NerveBuilder::new(&cs)
        .instance_id("host-1")
        .service(service("keep", a.port))
        .service(service("change", b.port).with("weight", 10))
        .service(service("gone", c.port))
        .start();
    let admin = nerve.admin();
    let zkc = Zk::connect(&cs);
    let before = eventually("three registered", WAIT, || {
        let n = nodes(&zkc);
        (n.len() == 3).then_some(n)
    });
    let (keep_node, _) = node_of(&before, "keep").unwrap();
    let (change_node, v) = node_of(&before, "change").unwrap();
    assert_eq!(v["weight"], 10);
    let keep_writes = writes(&nerve, "keep");
    assert!(keep_writes >= 1.0);

    // The operator's state survives the reload: `keep` gets weight 3.
    let (code, _) = http_put(admin, "/services/keep/weight/3");
    assert_eq!(code, 200);
    eventually("operator weight written", WAIT, || {
        (node_of(&nodes(&zkc), "keep")?.1["weight"] == 3).then_some(())
    });
    let keep_writes = writes(&nerve, "keep");

    // An invalid file is refused; everything keeps going.
    let mut broken = serde_json::to_value(nerve.config().file()).unwrap();
    broken["services"] = json!([{"name": "broken", "port": 0}]);
    nerve.reload_raw(&broken.to_string());
    eventually("refusal logged", WAIT, || {
        nerve.log().contains("reload refused").then_some(())
    });
    assert_eq!(nodes(&zkc).len(), 3);

    nerve.reload(|c| {
        c.edit("change", |s| s.with("weight", 20))
            .without("gone")
            .service(service("added", d.port))
    });
    let after = eventually("reloaded", WAIT, || {
        let n = nodes(&zkc);
        let ok = n.len() == 3
            && node_of(&n, "gone").is_none()
            && node_of(&n, "added").is_some()
            && node_of(&n, "change")?.1["weight"] == 20;
        ok.then_some(n)
    });
    assert_eq!(node_of(&after, "keep").unwrap().0, keep_node, "untouched");
    assert_eq!(
        node_of(&after, "keep").unwrap().1["weight"],
        3,
        "operator weight kept"
    );
    assert_eq!(
        writes(&nerve, "keep"),
        keep_writes,
        "no ZooKeeper write for an unchanged service"
    );
    assert_eq!(
        node_of(&after, "change").unwrap().0,
        change_node,
        "the changed service's node was updated in place, never absent"
    );
    let (_, status) = http_get(admin, "/status").unwrap();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let names: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keep", "change", "added"]);
    assert!(nerve.log().contains("config reloaded"));
}

/// A service moved to another path: its new node exists before the old one goes.
#[test]
fn moved_service_registers_before_the_old_node_goes() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let a = Backend::start("a");
    let mut nerve = NerveBuilder::new(&cs)
        .instance_id("host-1")
        .service(service("web", a.port))
        .start();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (nodes(&zkc).len() == 1).then_some(()));
    // Watch both paths closely while the reload runs: at every sample at least one exists.
    nerve.reload(|c| c.edit("web", |s| s.zk_path("/services/web2")));
    let started = std::time::Instant::now();
    loop {
        let old = zkc.children(PATH).unwrap_or_default().len();
        let new = zkc.children("/services/web2").unwrap_or_default().len();
        assert!(
            old + new >= 1,
            "neither node exists {:?} after SIGHUP",
            started.elapsed()
        );
        if old == 0 && new == 1 {
            break;
        }
        assert!(started.elapsed() < WAIT, "not moved: old {old}, new {new}");
    }
}

fn http_put(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "PUT {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}
