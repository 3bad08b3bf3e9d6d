//! synapse's admin routes: `GET /ready` (200 once every service had its first full sync),
//! `GET /services` (backends per service, JSON), `GET /stats` (the same as an HTML page)
//! and `GET /metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::admin::{is_get, Handler, Reply};
use hyper::StatusCode;
use serde_json::json;

use crate::service::Service;

/// Builds the admin handler.
pub fn handler(services: Arc<Vec<Arc<Service>>>, registry: prometheus::Registry) -> Handler {
    Arc::new(move |method, path, _body| {
        if !is_get(method) {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match path {
            "/ready" => ready(&services),
            "/services" => list(&services),
            "/stats" => crate::stats::page(&services),
            "/metrics" => Reply {
                status: StatusCode::OK,
                content_type: common::metrics::CONTENT_TYPE,
                body: common::metrics::render(&registry),
            },
            _ => Reply::not_found(),
        }
    })
}

fn ready(services: &[Arc<Service>]) -> Reply {
    let waiting: Vec<&str> = services
        .iter()
        .filter(|s| !s.synced.load(Ordering::Relaxed))
        .map(|s| s.config.name.as_str())
        .collect();
    if waiting.is_empty() {
        Reply::text(StatusCode::OK, "ready\n")
    } else {
        Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for first sync of: {}\n", waiting.join(", ")),
        )
    }
}

fn list(services: &[Arc<Service>]) -> Reply {
    let mut out = serde_json::Map::new();
    for s in services {
        let table = s.table.load();
        let backends: Vec<_> = table
            .backends()
            .iter()
            .map(|b| {
                json!({
                    "id": b.id,
                    "host": b.node.host,
                    "port": b.node.port,
                    "name": b.node.name,
                    "weight": b.node.weight,
                    "labels": b.node.labels,
                    "active_connections": b.state.metrics.active.get(),
                })
            })
            .collect();
        out.insert(
            s.config.name.clone(),
            json!({
                "listen": s.config.listen.to_string(),
                "zk_path": s.config.zk_path,
                "synced": s.synced.load(Ordering::Relaxed),
                "backends": backends,
            }),
        );
    }
    Reply::json(StatusCode::OK, &serde_json::Value::Object(out))
}
