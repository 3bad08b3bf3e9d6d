//! synapse's admin routes: `GET /ready` (200 once every service has a first table, from
//! ZooKeeper, the state file or the default servers; the body says which), `GET /services`
//! (backends per service with their weights, live state and ejection, where they come from,
//! JSON), `GET /stats` (the same for a browser, HTML) and `GET /metrics`. The services are
//! those of the running config (reloads included).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::admin::{is_get, AdminRequest, Handler, Reply};
use hyper::StatusCode;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;

use crate::balance::now_ns;
use crate::filter::{Fallback, LocalityState};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::supervisor::Services;
use crate::table::{Backend, RouteTable, Snapshot, SyncSource};

/// Builds the admin handler: `/metrics` renders `metrics` and the rest of `registry`.
pub fn handler(services: Services, registry: prometheus::Registry, metrics: Metrics) -> Handler {
    Arc::new(move |req: AdminRequest| {
        Box::pin(std::future::ready(route(&services, &registry, &metrics, &req)))
    })
}

/// Every route reads in-memory state: answered at once.
fn route(
    services: &Services,
    registry: &prometheus::Registry,
    metrics: &Metrics,
    req: &AdminRequest,
) -> Reply {
    if !is_get(&req.method) {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let services = services.load();
    match req.path.as_str() {
        "/ready" => ready(&services),
        "/services" => list(&services),
        "/stats" => crate::stats::page(&services),
        "/metrics" => {
            refresh_gauges(&services);
            Reply {
                status: StatusCode::OK,
                content_type: common::metrics::CONTENT_TYPE,
                body: metrics.render(registry),
            }
        }
        _ => Reply::not_found(),
    }
}

fn ready(services: &[Arc<Service>]) -> Reply {
    let waiting: Vec<&str> = services
        .iter()
        .filter(|s| !s.synced())
        .map(|s| s.config.name.as_str())
        .collect();
    if !waiting.is_empty() {
        return Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for first sync of: {}\n", waiting.join(", ")),
        );
    }
    let stand_ins: Vec<String> = services
        .iter()
        .filter_map(|s| match s.snapshot.load().source {
            SyncSource::Cache => Some(format!(
                "{}: synced from cache (state file), not from ZooKeeper yet\n",
                s.config.name
            )),
            SyncSource::DefaultServers => Some(format!(
                "{}: routing to default servers, no ZooKeeper listing yet\n",
                s.config.name
            )),
            _ => None,
        })
        .collect();
    Reply::text(StatusCode::OK, format!("ready\n{}", stand_ins.concat()))
}

/// Ejections and panic mode end with time, not with an event: their gauges are brought up
/// to date when they are read.
fn refresh_gauges(services: &[Arc<Service>]) {
    for s in services {
        let table = s.table();
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
        "remote": b.remote,
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

/// `/services`: one object per service, by name (a later service of the same name in
/// place of an earlier one, as a JSON map has it), pretty-printed. Written one service,
/// and one backend, at a time: the whole document as a `serde_json::Value` tree made a
/// transient of several MB at 1000 backends, which set the heap's high-water mark (issue 13).
fn list(services: &[Arc<Service>]) -> Reply {
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.config.name.as_str(), &**s)).collect();
    let backends: usize = by_name
        .values()
        .map(|s| s.snapshot.load().table.backends().len())
        .sum();
    // One allocation of about the final size (about 700 bytes per backend): a large one is
    // mapped afresh and given back whole.
    let mut body = Vec::with_capacity(1024 + by_name.len() * 2048 + backends * 1024);
    let doc = ServicesDoc(by_name, Instant::now());
    if let Err(err) = serde_json::to_writer_pretty(&mut body, &doc) {
        return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"));
    }
    body.push(b'\n');
    Reply {
        status: StatusCode::OK,
        content_type: "application/json",
        body: String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// The `/services` document.
struct ServicesDoc<'a>(BTreeMap<&'a str, &'a Service>, Instant);

impl Serialize for ServicesDoc<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(name, s)| (name, ServiceJson(s, self.1))))
    }
}

/// One service's object: its keys in order (a `serde_json::Map` sorts them), `backends`
/// written one at a time.
struct ServiceJson<'a>(&'a Service, Instant);

impl Serialize for ServiceJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let snapshot = self.0.snapshot.load_full();
        let serde_json::Value::Object(fields) = service_json(self.0, &snapshot, self.1) else {
            return ser.serialize_unit();
        };
        let mut map = ser.serialize_map(Some(fields.len()))?;
        for (k, v) in &fields {
            if k == "backends" {
                map.serialize_entry(k, &Backends(&snapshot.table))?;
            } else {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// A table's backends, each made and written in turn.
struct Backends<'a>(&'a RouteTable);

impl Serialize for Backends<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.backends().iter().map(|b| backend_json(b)))
    }
}

/// A service's object, `backends` left null (see [`ServiceJson`]).
fn service_json(s: &Service, snapshot: &Snapshot, now: Instant) -> serde_json::Value {
    let table = &snapshot.table;
    let draining: Vec<_> = snapshot
        .draining
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
    let sel = snapshot.selected;
    let locality = c.locality.as_ref().map(|l| {
        let (state, local, usable) = match sel.locality {
            LocalityState::Off => ("off", 0, 0),
            LocalityState::Local { local, usable } => ("local", local, usable),
            LocalityState::Failover { local, usable } => ("failover", local, usable),
        };
        json!({
            "label": l.label,
            "value": l.value,
            "min_local": l.min_local.to_string(),
            "state": state,
            "local_backends": local,
            "usable_backends": usable,
        })
    });
    let fallback = match sel.fallback {
        Fallback::None => None,
        Fallback::DefaultServers => Some("default_servers"),
        Fallback::Previous => Some("previous_backends"),
    };
    json!({
        "listen": c.listen.map(|l| l.to_string()),
        "mode": match c.mode {
            crate::config::Mode::Tcp => "tcp",
            crate::config::Mode::Http => "http",
        },
        "zk_path": c.zk_path,
        "synced": snapshot.synced(),
        "synced_from": snapshot.source.as_str(),
        "fallback": fallback,
        "label_filters": c.label_filters.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "filtered_nodes": sel.filtered_out,
        "locality": locality,
        "default_servers": c.default_servers.len(),
        "keep_default_servers": c.keep_default_servers,
        "max_connections": c.max_connections.map(|n| n.get()),
        "debounce_ms": millis(c.debounce),
        "debounce_max_ms": millis(c.debounce_max),
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
        "backends": null,
        "draining": draining,
    })
}
