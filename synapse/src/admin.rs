//! synapse's admin routes: `GET /ready` (200 once every service had its first full sync),
//! `GET /services` (backends per service with their weights, live state and ejection, JSON)
//! and `GET /metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::admin::{is_get, Handler, Reply};
use hyper::StatusCode;
use serde_json::json;

use crate::balance::now_ns;
use crate::service::Service;
use crate::table::Backend;

/// Builds the admin handler.
pub fn handler(services: Arc<Vec<Arc<Service>>>, registry: prometheus::Registry) -> Handler {
    Arc::new(move |method, path| {
        if !is_get(method) {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match path {
            "/ready" => ready(&services),
            "/services" => list(&services),
            "/metrics" => {
                refresh_gauges(&services);
                Reply {
                    status: StatusCode::OK,
                    content_type: common::metrics::CONTENT_TYPE,
                    body: common::metrics::render(&registry),
                }
            }
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

/// Ejections and panic mode end with time, not with an event: their gauges are brought up
/// to date when they are read.
fn refresh_gauges(services: &[Arc<Service>]) {
    for s in services {
        let table = s.table.load();
        for b in table.backends() {
            b.state.metrics.ejected.set(i64::from(b.state.live.is_ejected()));
        }
        s.metrics.panic.set(i64::from(table.panic().active()));
    }
}

/// How long until the `now_ns`-clock deadline `until`, if it is in the future.
fn remaining(until_ns: u64) -> Option<Duration> {
    let now = now_ns();
    (until_ns > now).then(|| Duration::from_nanos(until_ns - now))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn backend_json(b: &Backend) -> serde_json::Value {
    let live = &b.state.live;
    let ejected_for = remaining(live.ejected_until());
    let ejected_until = ejected_for
        .and_then(|d| (SystemTime::now() + d).duration_since(UNIX_EPOCH).ok())
        .map(millis);
    json!({
        "id": b.id,
        "host": b.node.host,
        "port": b.node.port,
        "name": b.node.name,
        "weight": b.node.weight,
        "effective_weight": b.weight,
        "backup": b.backup,
        "haproxy_server_options": b.node.haproxy_server_options,
        "labels": b.node.labels,
        "active_connections": live.active(),
        "latency_ewma_ms": live.latency().as_secs_f64() * 1000.0,
        "ejected": ejected_for.is_some(),
        "ejected_remaining_ms": ejected_for.map(millis),
        "ejected_until_unix_ms": ejected_until,
        "ejections": b.state.metrics.ejections.get(),
        "consecutive_failures": b.state.outlier.consecutive_failures(),
    })
}

fn list(services: &[Arc<Service>]) -> Reply {
    let mut out = serde_json::Map::new();
    let now = Instant::now();
    for s in services {
        let table = s.table.load();
        let backends: Vec<_> = table.backends().iter().map(backend_json).collect();
        let draining: Vec<_> = s
            .draining()
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "backend": d.state.key,
                    "active_connections": d.state.live.active(),
                    "closes_in_ms": millis(d.closes_at.saturating_duration_since(now)),
                })
            })
            .collect();
        let c = &s.config;
        let o = &c.outlier;
        out.insert(
            c.name.clone(),
            json!({
                "listen": c.listen.map(|l| l.to_string()),
                "mode": match c.mode {
                    crate::config::Mode::Tcp => "tcp",
                    crate::config::Mode::Http => "http",
                },
                "zk_path": c.zk_path,
                "synced": s.synced.load(Ordering::Relaxed),
                "balance": c.balance.name().as_str(),
                "hash_on": c.balance.hash_on().map(|h| h.to_string()),
                "default_weight": c.default_weight,
                "outlier": {
                    "consecutive_failures": o.consecutive_failures,
                    "base_ejection_ms": millis(o.base_ejection),
                    "max_ejection_ms": millis(o.max_ejection),
                    "max_ejected_percent": o.max_ejected_percent,
                    "panic_threshold_percent": o.panic_threshold_percent,
                },
                "removal_grace_ms": millis(c.removal_grace),
                "panic": table.panic().active(),
                "backends": backends,
                "draining": draining,
            }),
        );
    }
    Reply::json(StatusCode::OK, &serde_json::Value::Object(out))
}
