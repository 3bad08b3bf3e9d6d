//! Test harness for the end-to-end tests: a real ZooKeeper ([`zk`]), real check targets
//! ([`targets`]: HTTP/HTTPS, gRPC health, redis-server), deadline-bounded waiting
//! ([`wait`]), and the agents themselves: [`SynapseBuilder`] and [`NerveBuilder`] write a
//! real config (as data, read by the agent's own loader) and start the binary, returning a
//! handle ([`Synapse`], [`Nerve`]) with its ports, metrics, reload, log and stop.
//!
//! House rules: real parts (the Debian `zookeeper` package, run as child JVMs), no fixed ports
//! ([`free_port`]), and no sleeping as synchronisation ([`eventually`] and friends; for "this
//! does not change for a while", [`consistently`]).
//!
//! [`ZkCluster`] and the sync waits block the calling thread: from async tests use
//! `#[tokio::test(flavor = "multi_thread")]` (or `spawn_blocking`) so that clients' background
//! tasks keep running while the harness waits.

// Test-support code: a failed expectation should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod wait;
pub mod zk;

pub use wait::{
    consistently, consistently_async, eventually, eventually_async, eventually_ok, eventually_ok_async,
};
pub use zk::{free_port, free_ports, ZkCluster, ZkServer};
pub mod agents;
pub mod http;
pub use agents::{Agent, Backend, EchoBackend, Zk};
pub mod targets;
pub use targets::{GrpcHealth, HttpTarget, Redis, TestCert};
pub mod load;
pub use load::{Failure, LineBackend, Load, Tally};
pub mod grpc;
pub mod observe;
pub use grpc::{GrpcLoad, GrpcServer};
pub use observe::NodeCounter;
pub mod nerve;
pub mod synapse;
pub use nerve::{Nerve, NerveBuilder, NerveService};
pub use synapse::{Synapse, SynapseBuilder, SynapseService};
