//! nerve's admin routes: `GET /status` (JSON per service; 503 when any is down) and
//! `GET /metrics`.

use std::sync::Arc;

use common::admin::{is_get, Handler, Reply};
use hyper::StatusCode;
use serde_json::json;

use crate::service::{CheckState, ServiceHandle};

/// Builds the admin handler.
pub fn handler(
    instance_id: String,
    services: Arc<Vec<ServiceHandle>>,
    registry: prometheus::Registry,
) -> Handler {
    Arc::new(move |method, path, _body| {
        if !is_get(method) {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match path {
            "/status" => status(&instance_id, &services),
            "/metrics" => Reply {
                status: StatusCode::OK,
                content_type: common::metrics::CONTENT_TYPE,
                body: common::metrics::render(&registry),
            },
            _ => Reply::not_found(),
        }
    })
}

fn status(instance_id: &str, services: &[ServiceHandle]) -> Reply {
    let mut all_up = true;
    let list: Vec<_> = services
        .iter()
        .map(|s| {
            let check = s.check.borrow().clone();
            let report = s.report.borrow().clone();
            all_up &= check.healthy;
            json!({
                "name": s.config.name,
                "host": s.config.host,
                "port": s.config.port,
                "zk_path": s.config.zk_path,
                "healthy": check.healthy,
                "last_check_error": check.failures(),
                "checks": check.checks.iter().map(check_json).collect::<Vec<_>>(),
                "registered": report.node.is_some(),
                "zk_node": report.node,
                "last_zk_error": report.last_error,
            })
        })
        .collect();
    let code = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reply::json(code, &json!({ "instance_id": instance_id, "services": list }))
}

fn check_json(c: &CheckState) -> serde_json::Value {
    json!({
        "name": c.name,
        "type": c.kind,
        "target": c.target,
        "up": c.up,
        "runs": c.runs,
        "last_result": c.last_ok.map(|ok| if ok { "ok" } else { "fail" }),
        "last_error": c.last_error,
        "last_output": c.last_output,
        "last_duration_seconds": c.last_duration.map(|d| d.as_secs_f64()),
        "consecutive_successes": c.consecutive_successes,
        "consecutive_failures": c.consecutive_failures,
    })
}
