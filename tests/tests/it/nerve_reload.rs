//! SIGHUP reload of the real nerve binary against a real ZooKeeper: unchanged services are
//! not written, a changed one is updated in place (its node never goes away), removed ones
//! deregister, added ones register, an invalid file is refused, the operator's state stays.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::agents::{http_get, metric};
use integration_tests::{eventually, free_port, Agent, Backend, Zk, ZkCluster};

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";

fn service(cs: &str, name: &str, port: u16, extra: &str) -> String {
    format!(
        "  - {{name: {name}, instance_id: host-{name}, host: 127.0.0.1, port: {port}, zk_hosts: \"{cs}\", \
         zk_path: {PATH}, check_interval: 100ms, rise: 2, fall: 2, {extra}checks: [{{type: tcp}}]}}\n"
    )
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

fn writes(admin: u16, service: &str) -> f64 {
    ["create", "set", "delete"]
        .iter()
        .filter_map(|op| {
            metric(
                admin,
                &format!("nerve_zk_writes_total{{op=\"{op}\",service=\"{service}\"}}"),
            )
        })
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
    let admin = free_port();
    let head = format!("instance_id: host-1\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nservices:\n");
    let first = format!(
        "{head}{}{}{}",
        service(&cs, "keep", a.port, ""),
        service(&cs, "change", b.port, "weight: 10, "),
        service(&cs, "gone", c.port, "")
    );
    let nerve = Agent::start("nerve", &first);
    let zkc = Zk::connect(&cs);
    let before = eventually("three registered", WAIT, || {
        let n = nodes(&zkc);
        (n.len() == 3).then_some(n)
    });
    let (keep_node, _) = node_of(&before, "keep").unwrap();
    let (change_node, v) = node_of(&before, "change").unwrap();
    assert_eq!(v["weight"], 10);
    let keep_writes = writes(admin, "keep");
    assert!(keep_writes >= 1.0);

    // The operator's state survives the reload: `keep` gets weight 3.
    let (code, _) = http_put(admin, "/services/keep/weight/3");
    assert_eq!(code, 200);
    eventually("operator weight written", WAIT, || {
        (node_of(&nodes(&zkc), "keep")?.1["weight"] == 3).then_some(())
    });
    let keep_writes = writes(admin, "keep");

    // An invalid file is refused; everything keeps going.
    nerve.rewrite_config(&format!("{head}  - {{name: broken, port: 0}}\n"));
    nerve.signal("HUP");
    eventually("refusal logged", WAIT, || {
        nerve.log().contains("reload refused").then_some(())
    });
    assert_eq!(nodes(&zkc).len(), 3);

    let second = format!(
        "{head}{}{}{}",
        service(&cs, "keep", a.port, ""),
        service(&cs, "change", b.port, "weight: 20, "),
        service(&cs, "added", d.port, "")
    );
    nerve.rewrite_config(&second);
    nerve.signal("HUP");
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
        writes(admin, "keep"),
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
    let admin = free_port();
    let head = format!("instance_id: host-1\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nservices:\n");
    let nerve = Agent::start("nerve", &format!("{head}{}", service(&cs, "web", a.port, "")));
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || (nodes(&zkc).len() == 1).then_some(()));
    let moved =
        service(&cs, "web", a.port, "").replace(&format!("zk_path: {PATH}"), "zk_path: /services/web2");
    nerve.rewrite_config(&format!("{head}{moved}"));
    // Watch both paths closely while the reload runs: at every sample at least one exists.
    nerve.signal("HUP");
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
