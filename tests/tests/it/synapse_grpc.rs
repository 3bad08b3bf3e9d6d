//! synapse with real gRPC peers (Python grpcio servers and clients, `tests/grpc/peer.py`):
//! what an L4 proxy does to gRPC (every call of a channel pinned to one backend), and what
//! synapse's HTTP mode does with `backend_protocol: h2c` (every call balanced). Real
//! ZooKeeper, the real binary, backends registered in ZooKeeper.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::Duration;

use integration_tests::agents::http_get;
use integration_tests::grpc::client;
use integration_tests::{eventually, free_port, Agent, GrpcServer, Zk, ZkCluster};

const WAIT: Duration = Duration::from_secs(20);

/// A running synapse with one service `g` at `/services/g`.
struct Synapse {
    agent: Agent,
    admin: u16,
    port: u16,
}

/// Starts synapse with the service `g`; `extra`: YAML flow-map entries of the service.
fn start(zk: &str, extra: &str) -> Synapse {
    let (admin, port) = (free_port(), free_port());
    let config = format!(
        "admin: {{listen: \"127.0.0.1:{admin}\"}}\nservices:\n  - {{name: g, zk_hosts: \"{zk}\", \
         zk_path: /services/g, listen: {port}, connect_timeout: 500ms{extra}}}\n"
    );
    Synapse {
        agent: Agent::start("synapse", &config),
        admin,
        port,
    }
}

impl Synapse {
    /// Waits until `g` routes to `n` backends.
    fn wait_backends(&self, n: usize) {
        eventually(&format!("g routes to {n} backends"), WAIT, || {
            let (status, body) = http_get(self.admin, "/services").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let synced = v["g"]["synced"].as_bool()?;
            (status == 200 && synced && v["g"]["backends"].as_array()?.len() == n).then_some(())
        });
    }
}

/// Three grpcio servers registered under `/services/g`.
fn three_backends(zkc: &Zk) -> Vec<GrpcServer> {
    let servers: Vec<GrpcServer> = ["a", "b", "c"].iter().map(|id| GrpcServer::start(id)).collect();
    for (i, s) in servers.iter().enumerate() {
        zkc.put_backend("g", &format!("{}_000000000{i}", s.id), s.port, "");
    }
    servers
}

/// The problem the issue starts from: through a TCP-mode service, a gRPC client's one
/// connection goes to one backend, and every call of the channel with it.
#[test]
fn tcp_mode_pins_every_call_of_a_channel_to_one_backend() {
    let zk = ZkCluster::standalone();
    let zkc = Zk::connect(&zk.connect_string());
    let _servers = three_backends(&zkc);
    let synapse = start(&zk.connect_string(), "");
    synapse.wait_backends(3);
    let out = client(synapse.port, &["unary", "--calls", "300", "--concurrency", "8"]);
    assert_eq!(out.failures, 0, "{:?}", out.errors);
    assert_eq!(out.ok, 300);
    assert_eq!(
        out.by_backend.len(),
        1,
        "one connection, one backend: {:?}",
        out.by_backend
    );
    drop(synapse.agent);
}
