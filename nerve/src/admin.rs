//! nerve's admin routes: `GET /status` (JSON per service; 503 when any is down),
//! `GET /metrics`, and the maintenance API (`PUT`/`POST` only):
//! `/services/<name>/disable[?wait=<duration>]`, `/services/<name>/enable[?force=true]`,
//! `/services/<name>/weight/<0..=255>`, `/services/<name>/weight/reset`, and the global
//! `/disable[?wait=]`, `/enable`; `POST /park` (exit without deregistering, the sessions
//! left for a nerve started with `--takeover`: see [`crate::upgrade`]).

use std::sync::Arc;

use common::admin::{is_get, AdminRequest, Handler, Reply};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::maintenance::{parse_wait, query_param, Maintenance, MaintenanceError};
use crate::service::{CheckState, ServiceHandle};
use crate::upgrade::ParkRequest;

/// Builds the admin handler.
pub fn handler(
    instance_id: String,
    maintenance: Arc<Maintenance>,
    registry: prometheus::Registry,
    park: tokio::sync::mpsc::Sender<ParkRequest>,
) -> Handler {
    Arc::new(move |req: AdminRequest| {
        let (instance_id, maintenance, registry, park) = (
            instance_id.clone(),
            maintenance.clone(),
            registry.clone(),
            park.clone(),
        );
        Box::pin(async move {
            if req.path == "/park" {
                return park_reply(&req.method, &park).await;
            }
            route(
                &instance_id,
                &maintenance,
                &registry,
                &req.method,
                &req.path,
                req.query.as_deref(),
            )
            .await
        })
    })
}

async fn route(
    instance_id: &str,
    m: &Maintenance,
    registry: &prometheus::Registry,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mutation = matches!(
        segments.as_slice(),
        ["disable"] | ["enable"] | ["services", _, "disable" | "enable"] | ["services", _, "weight", _]
    );
    if mutation {
        if method != Method::PUT && method != Method::POST {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use PUT or POST\n");
        }
        return mutate(m, &segments, query).await;
    }
    if !is_get(method) {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/status" => {
            let services = m.services().read().unwrap_or_else(|p| p.into_inner()).clone();
            status(instance_id, &services, m)
        }
        "/metrics" => Reply {
            status: StatusCode::OK,
            content_type: common::metrics::CONTENT_TYPE,
            body: common::metrics::render(registry),
        },
        _ => Reply::not_found(),
    }
}

/// `POST /park`: answered once the state is written (the process then exits).
async fn park_reply(method: &Method, park: &tokio::sync::mpsc::Sender<ParkRequest>) -> Reply {
    if method != Method::PUT && method != Method::POST {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use PUT or POST\n");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if park.try_send(tx).is_err() {
        return Reply::text(StatusCode::CONFLICT, "already parking or handing over\n");
    }
    match rx.await {
        Ok(Ok(text)) => Reply::text(StatusCode::OK, text),
        Ok(Err(why)) => Reply::text(StatusCode::CONFLICT, why),
        Err(_) => Reply::text(StatusCode::CONFLICT, "handing over to a successor already\n"),
    }
}

async fn mutate(m: &Maintenance, segments: &[&str], query: Option<&str>) -> Reply {
    let bad = |msg: String| Reply::json(StatusCode::BAD_REQUEST, &json!({ "error": msg }));
    let wait = match parse_wait(query) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let force = match query_param(query, "force").as_deref() {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(other) => return bad(format!("force: {other:?} is not true or false")),
    };
    let (service, result) = match segments {
        ["disable"] => (None, m.update(None, |s| s.disabled = true)),
        ["enable"] => (None, m.update(None, |s| s.disabled = false)),
        ["services", name, "disable"] => (
            Some(*name),
            m.update(Some(name), |s| {
                let o = s.services.entry(name.to_string()).or_default();
                o.disabled = true;
                o.force = false;
            }),
        ),
        ["services", name, "enable"] => (
            Some(*name),
            m.update(Some(name), |s| {
                let o = s.services.entry(name.to_string()).or_default();
                o.disabled = false;
                o.force = force;
            }),
        ),
        ["services", name, "weight", w] => {
            let weight = match *w {
                "reset" => None,
                w => match w.parse::<u8>() {
                    Ok(w) => Some(w),
                    Err(_) => return bad(format!("weight {w:?} is not in 0..=255 (or `reset`)")),
                },
            };
            (
                Some(*name),
                m.update(Some(name), |s| {
                    s.services.entry(name.to_string()).or_default().weight = weight
                }),
            )
        }
        _ => return Reply::not_found(),
    };
    match result {
        Ok(()) => {}
        Err(e @ MaintenanceError::UnknownService(_)) => {
            return Reply::json(StatusCode::NOT_FOUND, &json!({ "error": e.to_string() }))
        }
        Err(e) => {
            return Reply::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": e.to_string() }),
            )
        }
    }
    let disabling = segments.last() == Some(&"disable");
    let reached = match wait {
        Some(w) if disabling => Some(m.wait_down(service, w).await),
        _ => None,
    };
    let state = m.snapshot();
    let body = json!({
        "ok": reached != Some(false),
        "reconciled": reached,
        "maintenance": state,
    });
    let code = if reached == Some(false) {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::OK
    };
    Reply::json(code, &body)
}

fn status(instance_id: &str, services: &[ServiceHandle], m: &Maintenance) -> Reply {
    let mut all_up = true;
    let list: Vec<_> = services
        .iter()
        .map(|s| {
            let check = s.check.borrow().clone();
            let reports: Vec<_> = s
                .reports
                .iter()
                .map(|r| {
                    let st = r.status.borrow().clone();
                    json!({
                        "type": r.kind,
                        "target": r.target,
                        "registered": st.node.is_some(),
                        "node": st.node,
                        "last_error": st.last_error,
                    })
                })
                .collect();
            let zk_node = s
                .reports
                .iter()
                .filter(|r| r.kind == "zookeeper")
                .find_map(|r| r.status.borrow().node.clone());
            let zk_error = s
                .reports
                .iter()
                .filter(|r| r.kind == "zookeeper")
                .find_map(|r| r.status.borrow().last_error.clone());
            let limit = s.limit.borrow().clone();
            let drain = s.drain.borrow().clone();
            let disable_sequence = match drain.phase {
                crate::hooks::Phase::Idle => json!({ "phase": "idle" }),
                crate::hooks::Phase::Running { since } => json!({
                    "phase": "running",
                    "running_for_seconds": since.elapsed().as_secs_f64(),
                }),
                crate::hooks::Phase::Done { drained } => json!({ "phase": "done", "drained": drained }),
            };
            all_up &= check.healthy;
            json!({
                "name": s.config.name,
                "host": s.config.host,
                "port": s.config.port,
                "healthy": check.healthy,
                "last_check_error": check.failures(),
                "checks": check.checks.iter().map(check_json).collect::<Vec<_>>(),
                "registered": zk_node.is_some(),
                "zk_node": zk_node,
                "last_zk_error": zk_error,
                "reporters": reports,
                "maintenance": m.effective(&s.config.name),
                "disable_sequence": disable_sequence,
                "desired": format!("{:?}", s.desired.borrow().state),
                "write_deferred": limit.deferred_since.is_some(),
                "write_deferred_for_seconds": limit.deferred_since.map(|t| t.elapsed().as_secs_f64()),
                "writes_deferred_total": limit.deferred_total,
            })
        })
        .collect();
    let code = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reply::json(
        code,
        &json!({
            "instance_id": instance_id,
            "disabled": m.snapshot().disabled,
            "services": list,
        }),
    )
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
