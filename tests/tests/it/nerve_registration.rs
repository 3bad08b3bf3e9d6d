//! How nerve's nodes are created, read back with a plain ZooKeeper client: plain ephemeral
//! nodes, airbnb path encoding, digest auth with ACLs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::{
    consistently, eventually, Backend, Nerve, NerveBuilder, NerveService, Zk, ZkCluster,
};
use serde_json::json;
use zookeeper_client as zkc;

const WAIT: Duration = Duration::from_secs(30);
const PATH: &str = "/services/web";

/// nerve (instance `host-1`) with one service `web` whose health is the existence of `flag`
/// (checked every 100 ms, rise 1, fall 1); `web` adds keys to the service.
fn config(
    cs: &str,
    port: u16,
    flag: &std::path::Path,
    web: impl FnOnce(NerveService) -> NerveService,
) -> NerveBuilder {
    let service = NerveService::tcp("web", port)
        .zk_path(PATH)
        .fall(1)
        .checks(vec![flag_check(flag)]);
    NerveBuilder::new(cs).instance_id("host-1").service(web(service))
}

/// An exec check passing while `flag` exists.
fn flag_check(flag: &std::path::Path) -> serde_json::Value {
    json!({"type": "exec", "name": "flag", "command": ["test", "-f", flag.display().to_string()]})
}

fn flag() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").unwrap();
    (dir, flag)
}

fn only_child(zkc: &Zk) -> Option<String> {
    let c = zkc.children(PATH).ok()?;
    let [one] = c.as_slice() else { return None };
    Some(one.clone())
}

/// `node_type: ephemeral`: the node is `<instance_id>_<service>`, no sequence. After a
/// crash (SIGKILL) and restart, the name is held by the dead process's session until it
/// expires: the new nerve retries and takes the name over then, and there is one node.
#[test]
fn plain_ephemeral_node_has_a_fixed_name_and_survives_a_crash_restart() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag) = flag();
    let conf = config(&cs, b.port, &flag, |s| s.with("node_type", "ephemeral"))
        .session_timeout(Duration::from_secs(4));
    let nerve = conf.clone().start();
    let zkc = Zk::connect(&cs);
    let child = eventually("registered", WAIT, || only_child(&zkc));
    assert_eq!(child, "host-1_web");
    let (_, first_owner) = zkc.get(&format!("{PATH}/{child}")).unwrap();

    drop(nerve); // SIGKILL: the node stays until the session expires
    let _nerve = conf.start();
    eventually("the restarted nerve owns the node", WAIT, || {
        let child = only_child(&zkc)?;
        let (_, owner) = zkc.get(&format!("{PATH}/{child}")).ok()?;
        (child == "host-1_web" && owner != first_owner && owner != 0).then_some(())
    });
}

/// `use_path_encoding: true`: the node name carries the payload (airbnb nerve); a payload
/// change creates the new node before the old one goes, and exactly one is left.
#[test]
fn path_encoded_node_is_renamed_when_the_payload_changes() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag) = flag();
    let _nerve = config(&cs, b.port, &flag, |s| {
        s.with("use_path_encoding", true).with("expose_unavailable", true)
    })
    .start();
    let zkc = Zk::connect(&cs);
    // With expose_unavailable the node exists (unavailable) before the checks pass.
    let first = eventually("registered available", WAIT, || {
        only_child(&zkc).filter(|c| common::codec::decode(c, b"").is_ok_and(|n| n.available))
    });
    assert!(first.starts_with("base64_"), "{first}");
    let node = common::codec::decode(&first, b"").unwrap();
    assert!(
        node.available && node.port == b.port && node.weight == Some(255),
        "{node:?}"
    );
    // The data holds the same payload, for readers that do not decode names.
    let (data, _) = zkc.get(&format!("{PATH}/{first}")).unwrap();
    assert_eq!(common::codec::decode("x", &data).unwrap(), node);

    std::fs::remove_file(&flag).unwrap();
    let second = eventually("renamed", WAIT, || only_child(&zkc).filter(|c| *c != first));
    let node = common::codec::decode(&second, b"").unwrap();
    assert!(!node.available, "{node:?}");
    assert_eq!(node.unavailable_reason.as_deref(), Some("checks failing: flag"));
}

/// Digest auth: nodes (and the parents nerve creates) get creator-all + world-read, so a
/// session without the credentials can read but neither delete nor rewrite them.
#[test]
fn digest_auth_protects_nodes_from_other_sessions() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag) = flag();
    let _nerve = config(&cs, b.port, &flag, |s| s)
        .zk_auth("digest", "nerve:s3cret")
        .start();
    let zkc = Zk::connect(&cs);
    let child = eventually("registered", WAIT, || only_child(&zkc));
    let path = format!("{PATH}/{child}");
    let (data, _) = zkc.get(&path).expect("world-readable");
    assert!(!data.is_empty());
    assert!(
        matches!(zkc.try_delete(&path), Err(zkc::Error::NoAuth)),
        "another session cannot delete the node"
    );
    assert!(
        matches!(zkc.try_set(&path, b"{}"), Err(zkc::Error::NoAuth)),
        "nor rewrite it"
    );
    assert_eq!(only_child(&zkc), Some(child));
}

fn zk_writes(nerve: &Nerve) -> f64 {
    ["create", "set", "delete"]
        .iter()
        .map(|op| {
            nerve
                .metric("nerve_zk_writes_total", &[("op", op), ("service", "web")])
                .unwrap_or(0.0)
        })
        .sum()
}

/// Several reporters: two ZooKeeper ensembles (a migration) both get the node, a file
/// reporter holds the payload (replaced atomically), a console reporter logs.
#[test]
fn every_reporter_gets_the_state() {
    let (zk1, zk2) = (ZkCluster::standalone(), ZkCluster::standalone());
    let (cs1, cs2) = (zk1.connect_string(), zk2.connect_string());
    let b = Backend::start("a");
    let (dir, flag) = flag();
    let file = dir.path().join("web.json");
    let nerve = config(&cs1, b.port, &flag, |s| {
        s.with(
            "reporters",
            json!([
                {"type": "zookeeper", "zk_hosts": cs2, "zk_path": PATH},
                {"type": "file", "path": file.display().to_string()},
                {"type": "console"},
            ]),
        )
    })
    .start();
    let (z1, z2) = (Zk::connect(&cs1), Zk::connect(&cs2));
    let c1 = eventually("registered in the first ensemble", WAIT, || only_child(&z1));
    let c2 = eventually("registered in the second ensemble", WAIT, || only_child(&z2));
    let (d1, _) = z1.get(&format!("{PATH}/{c1}")).unwrap();
    let (d2, _) = z2.get(&format!("{PATH}/{c2}")).unwrap();
    assert_eq!(d1, d2);
    let v = eventually("file written", WAIT, || {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        (v["state"] == "available").then_some(v)
    });
    assert_eq!(v["service"], "web");
    assert_eq!(
        v["node"],
        serde_json::from_slice::<serde_json::Value>(&d1).unwrap()
    );

    std::fs::remove_file(&flag).unwrap();
    eventually("gone from both ensembles and the file", WAIT, || {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        (z1.children(PATH).ok()?.is_empty()
            && z2.children(PATH).ok()?.is_empty()
            && v["state"] == "absent"
            && v["node"].is_null())
        .then_some(())
    });
    assert!(
        nerve.log().contains("reporter=\"console\"") || nerve.log().contains("reporter=console"),
        "{}",
        nerve.log()
    );
}

/// A check flapping far faster than `max_writes_per_second` costs at most the burst plus
/// the rate in ZooKeeper writes, the status says writes were deferred, and the final state
/// is the one written.
#[test]
fn flapping_check_is_rate_limited_and_the_last_state_wins() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag) = flag();
    let mut check = flag_check(&flag);
    check["interval"] = json!("20ms");
    check["rise"] = json!(1);
    check["fall"] = json!(1);
    let nerve = config(&cs, b.port, &flag, |s| {
        s.with("max_writes_per_second", 2)
            .with("write_burst", 2)
            .checks(vec![check])
    })
    .start();
    let admin = nerve.admin();
    let zkc = Zk::connect(&cs);
    eventually("registered", WAIT, || only_child(&zkc));
    let before = zk_writes(&nerve);
    let started = std::time::Instant::now();
    let mut flips = 0;
    while started.elapsed() < Duration::from_secs(3) {
        if flips % 2 == 0 {
            std::fs::remove_file(&flag).unwrap();
        } else {
            std::fs::write(&flag, "").unwrap();
        }
        flips += 1;
        // Pacing the flapping itself (the input of the test), not waiting for a result.
        std::thread::sleep(Duration::from_millis(60));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // End healthy.
    std::fs::write(&flag, "").unwrap();
    let writes = zk_writes(&nerve) - before;
    let allowed = 2.0 + 2.0 * elapsed + 1.0;
    println!("{flips} flips in {elapsed:.1}s -> {writes} ZooKeeper writes (allowed {allowed:.1})");
    assert!(writes <= allowed, "{writes} writes > {allowed}");
    let (_, body) = integration_tests::agents::http_get(admin, "/status").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["services"][0]["writes_deferred_total"].as_u64().unwrap() > 0,
        "{v}"
    );
    eventually("the final state (healthy) is in ZooKeeper", WAIT, || {
        only_child(&zkc)?;
        let (_, body) = integration_tests::agents::http_get(admin, "/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["services"][0]["write_deferred"] == false && v["services"][0]["registered"] == true).then_some(())
    });
}

/// Warm-up: once healthy, the weight a ZooKeeper reader sees goes up in steps from 1 to the
/// configured weight, never down, with at most `steps + 1` distinct values.
#[test]
fn warmup_ramps_the_weight_in_steps() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (_dir, flag) = flag();
    let _nerve = config(&cs, b.port, &flag, |s| {
        s.with("weight", 200)
            .with("warmup", json!({"duration": "2s", "steps": 4}))
    })
    .start();
    let zkc = Zk::connect(&cs);
    let mut seen: Vec<u64> = Vec::new();
    eventually("full weight reached", WAIT, || {
        let child = only_child(&zkc)?;
        let (data, _) = zkc.get(&format!("{PATH}/{child}")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        let w = v["weight"].as_u64()?;
        if seen.last() != Some(&w) {
            seen.push(w);
        }
        (w == 200).then_some(())
    });
    println!("weights seen: {seen:?}");
    assert_eq!(seen.first(), Some(&1), "{seen:?}");
    assert!(seen.windows(2).all(|p| p[0] < p[1]), "only up: {seen:?}");
    assert!(seen.len() >= 3 && seen.len() <= 5, "{seen:?}");
    assert!(
        seen.iter().all(|w| [1, 50, 100, 150, 200].contains(w)),
        "{seen:?}"
    );
}

/// A failing stability command keeps restarting the warm-up: the weight stays at 1 well past
/// the ramp's duration; once it passes, the ramp completes.
#[test]
fn failing_stability_command_restarts_the_warmup() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let b = Backend::start("a");
    let (dir, flag) = flag();
    let stable = dir.path().join("stable");
    let _nerve = config(&cs, b.port, &flag, |s| {
        s.with("weight", 100).with(
            "warmup",
            json!({
                "duration": "1s", "steps": 2,
                "stability_command": ["test", "-f", stable.display().to_string()]
            }),
        )
    })
    .start();
    let zkc = Zk::connect(&cs);
    let weight = |zkc: &Zk| -> Option<u64> {
        let child = only_child(zkc)?;
        let (data, _) = zkc.get(&format!("{PATH}/{child}")).ok()?;
        serde_json::from_slice::<serde_json::Value>(&data).ok()?["weight"].as_u64()
    };
    eventually("registered at weight 1", WAIT, || {
        (weight(&zkc)? == 1).then_some(())
    });
    // The timing is the product here: three times the ramp's duration, still at 1.
    consistently(
        "the weight stays at 1 (the ramp restarts while unstable)",
        Duration::from_secs(3),
        || match weight(&zkc) {
            Some(1) => Ok(()),
            other => Err(other),
        },
    );
    std::fs::write(&stable, "").unwrap();
    eventually("full weight once stable", WAIT, || {
        (weight(&zkc)? == 100).then_some(())
    });
}
