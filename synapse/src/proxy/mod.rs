//! The data path: per-service listeners and shared HTTP listeners. The top of synapse's
//! model → data path direction: it reads services and route tables, nothing below imports it.
//!
//! - [`accept`]: the one accept loop of every listener (backoff, `max_connections`, backlog
//!   drain).
//! - [`connect`]: waiting for a first sync, connecting to a backend, TCP keepalive.
//! - [`tcp`]: `mode: tcp`, one backend connection per client connection, bytes copied both
//!   ways.
//! - [`http`]: `mode: http` services and shared HTTP listeners (`http_listeners`): hyper
//!   server to clients, pooled keep-alive connections to backends, balanced per request.
//! - [`grpc`]: the gRPC protocol as the HTTP proxy reads and writes it.
//! - [`replay`]: a streamed request body kept (up to a limit) for another try.

pub(crate) mod accept;
pub(crate) mod connect;
pub mod grpc;
pub mod http;
pub mod replay;
pub mod tcp;
