//! Prometheus helpers shared by both agents. Each binary defines its own metrics in its
//! `metrics.rs`, registered in a `Registry` it is handed (never the global default one).

use prometheus::{Encoder, Registry, TextEncoder};

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families; if one ever is
    // not, the scrape shows what was written so far rather than crashing the agent.
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %err, "metrics encoding failed");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
