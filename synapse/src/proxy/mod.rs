//! The data path: per-service listeners and shared HTTP listeners.
//!
//! - [`tcp`]: `mode: tcp`, one backend connection per client connection, bytes copied both
//!   ways.
//! - [`http`]: `mode: http` services and shared HTTP listeners (`http_listeners`): hyper
//!   server to clients, pooled keep-alive connections to backends, balanced per request.

pub mod http;
pub mod tcp;
