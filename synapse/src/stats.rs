//! `GET /stats`: an HTML status page in the manner of HAProxy's stats page, one block per
//! service with its backends, for a person with a browser. Self-contained (inline CSS, no
//! script, no external asset) and refreshed by the browser every [`REFRESH_SECONDS`].
//!
//! It reads what `GET /services` reads (each service's route table, sync flag and metric
//! handles) into a plain view ([`ServiceView`]), rendered by a pure function ([`render`]).
//! Everything that comes from ZooKeeper is HTML-escaped.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::admin::Reply;
use hyper::StatusCode;

use crate::filter::Fallback;
use crate::service::Service;

/// Seconds between two refreshes of the page by the browser.
pub const REFRESH_SECONDS: u32 = 5;

/// One service, as the page shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Listen address.
    pub listen: String,
    /// ZooKeeper path watched.
    pub zk_path: String,
    /// A first table is installed.
    pub synced: bool,
    /// Where the table comes from: `zookeeper`, `cache`, `default_servers`, `none`.
    pub source: String,
    /// What stands in for ZooKeeper's backends: `previous_backends`, `default_servers`.
    pub fallback: Option<String>,
    /// Too few backends usable: ejection ignored.
    pub panic: bool,
    /// Balancing policy.
    pub balance: String,
    /// Client connections accepted.
    pub connections: u64,
    /// Client connections closed unserved: no backend reachable, not synced in time,
    /// shutdown.
    pub rejected: u64,
    /// Proxied connections closed for idleness.
    pub idle_closed: u64,
    /// Bytes client → backend and backend → client.
    pub bytes: (u64, u64),
    /// Znodes skipped as malformed.
    pub invalid_nodes: u64,
    /// Nodes marked unavailable.
    pub unavailable_nodes: i64,
    /// Route tables installed.
    pub updates: u64,
    /// Last change of the backend set, milliseconds since the Unix epoch (0: none yet).
    pub last_change_ms: u64,
    /// The backends of the current table.
    pub backends: Vec<BackendView>,
    /// Removed backends whose connections are still open: (`host:port`, open connections,
    /// seconds until they are closed).
    pub draining: Vec<(String, u64, u64)>,
}

/// One backend row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendView {
    /// `host:port`.
    pub addr: String,
    /// The znode it came from.
    pub id: String,
    /// Payload `name`.
    pub name: Option<String>,
    /// Payload weight (`None`: default).
    pub weight: Option<u32>,
    /// Effective weight (0: no new connection).
    pub effective_weight: u32,
    /// Used only when no other backend is usable.
    pub backup: bool,
    /// Demoted to a backup by locality.
    pub remote: bool,
    /// Ejected by outlier detection now.
    pub ejected: bool,
    /// Open connections.
    pub active: u64,
    /// Connections established.
    pub connections: u64,
    /// Failed connection attempts.
    pub failures: u64,
    /// Outlier ejections so far.
    pub ejections: u64,
    /// Connect latency EWMA, milliseconds.
    pub latency_ms: f64,
    /// Labels, `k=v` joined.
    pub labels: String,
}

/// Reads the current state of `services`.
pub fn view(services: &[Arc<Service>]) -> Vec<ServiceView> {
    let now = Instant::now();
    services
        .iter()
        .map(|s| {
            let m = &s.metrics;
            let snapshot = s.snapshot.load_full();
            let table = &snapshot.table;
            let fallback = match snapshot.selected.fallback {
                Fallback::None => None,
                Fallback::DefaultServers => Some("default_servers".to_string()),
                Fallback::Previous => Some("previous_backends".to_string()),
            };
            ServiceView {
                name: s.config.name.clone(),
                listen: s
                    .config
                    .listen
                    .map_or_else(|| "(http_listeners only)".to_string(), |l| l.to_string()),
                zk_path: s.config.zk_path.clone(),
                synced: snapshot.synced(),
                source: snapshot.source.as_str().to_string(),
                fallback,
                panic: table.panic().active(),
                balance: s.config.balance.name().as_str().to_string(),
                connections: m.connections.get(),
                rejected: m.rejected.not_synced.get()
                    + m.rejected.no_backend.get()
                    + m.rejected.shutdown.get(),
                idle_closed: m.idle_closed.get(),
                bytes: (m.bytes_up.get(), m.bytes_down.get()),
                invalid_nodes: m.invalid_nodes.get(),
                unavailable_nodes: m.unavailable_nodes.get(),
                updates: m.updates.get(),
                last_change_ms: snapshot.last_change_ms,
                backends: table
                    .backends()
                    .iter()
                    .map(|b| BackendView {
                        addr: b.state.key.clone(),
                        id: b.id.clone(),
                        name: b.node.name.clone(),
                        weight: b.node.weight,
                        effective_weight: b.weight,
                        backup: b.backup,
                        remote: b.remote,
                        ejected: b.state.live.is_ejected(),
                        active: b.state.live.active(),
                        connections: b.state.metrics.connections.get(),
                        failures: b.state.metrics.failures.get(),
                        ejections: b.state.metrics.ejections.get(),
                        latency_ms: b.state.live.latency().as_secs_f64() * 1000.0,
                        labels: b
                            .node
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                    .collect(),
                draining: snapshot
                    .draining
                    .iter()
                    .map(|d| {
                        (
                            d.state.key.clone(),
                            d.state.live.active(),
                            d.closes_at.saturating_duration_since(now).as_secs(),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The page for `services`, now.
pub fn page(services: &[Arc<Service>]) -> Reply {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Reply {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8",
        body: render(&view(services), &common::hostname(), now_ms),
    }
}

/// The state word and CSS class of a service.
fn service_state(s: &ServiceView) -> (&'static str, &'static str) {
    match (s.synced, s.fallback.as_deref()) {
        (false, _) => ("WAITING FOR FIRST SYNC", "wait"),
        (true, Some("previous_backends")) => ("STALE: PREVIOUS BACKENDS", "warn"),
        (true, Some(_)) => ("DEFAULT SERVERS", "warn"),
        (true, None) if s.backends.is_empty() => ("NO BACKEND", "down"),
        (true, None) if s.panic => ("PANIC: EJECTION IGNORED", "warn"),
        (true, None) => ("UP", "up"),
    }
}

/// The state word and row class of a backend.
fn backend_state(s: &ServiceView, b: &BackendView) -> (&'static str, &'static str) {
    if b.ejected {
        ("EJECTED", "row-down")
    } else if b.effective_weight == 0 {
        ("DRAIN (weight 0)", "row-wait")
    } else if b.remote {
        ("BACKUP (remote)", "row-wait")
    } else if b.backup {
        ("BACKUP", "row-wait")
    } else if s.fallback.is_some() {
        ("UP (stand-in)", "row-warn")
    } else {
        ("UP", "row-up")
    }
}

/// Renders the page. Pure: `now_ms` is the wall-clock time to show and to count ages from.
pub fn render(services: &[ServiceView], host: &str, now_ms: u64) -> String {
    let mut out = String::with_capacity(4096 + services.len() * 2048);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>synapse stats: {host}</title>
<style>
body{{font:13px/1.4 system-ui,-apple-system,"DejaVu Sans",Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2329}}
header{{background:#1f3a5f;color:#fff;padding:10px 16px}}
header h1{{font-size:18px;margin:0}} header p{{margin:2px 0 0;opacity:.85}}
header a{{color:#cfe3ff}}
main{{padding:12px 16px}}
section{{background:#fff;border:1px solid #d5d9de;border-radius:4px;margin:0 0 14px}}
section h2{{font-size:15px;margin:0;padding:8px 10px;border-bottom:1px solid #d5d9de;display:flex;gap:12px;align-items:center;flex-wrap:wrap}}
.meta{{font-weight:normal;color:#55606b;font-size:12px}}
.badge{{font-size:11px;font-weight:bold;padding:2px 8px;border-radius:10px;color:#fff}}
.up{{background:#2e8540}} .down{{background:#c62828}} .warn{{background:#e07b00}} .wait{{background:#6b7785}}
dl{{display:flex;flex-wrap:wrap;gap:4px 18px;margin:0;padding:6px 10px;border-bottom:1px solid #eceef1}}
dt{{color:#55606b}} dd{{margin:0 0 0 4px;font-weight:600}} dl div{{display:flex}}
table{{border-collapse:collapse;width:100%}}
th,td{{padding:4px 10px;text-align:left;border-bottom:1px solid #eceef1;white-space:nowrap}}
th{{background:#eef1f4;font-size:12px;color:#3b4650}}
td.n,th.n{{text-align:right;font-variant-numeric:tabular-nums}}
tr.row-up td:first-child{{border-left:4px solid #2e8540}}
tr.row-warn td:first-child{{border-left:4px solid #e07b00}}
tr.row-down td:first-child{{border-left:4px solid #c62828}} tr.row-down td{{color:#c62828}}
tr.row-wait td:first-child{{border-left:4px solid #6b7785}} tr.row-wait td{{color:#55606b}}
td.err{{color:#c62828;font-weight:600}}
.empty{{padding:8px 10px;color:#55606b;font-style:italic}}
footer{{padding:0 16px 16px;color:#55606b;font-size:12px}}
</style></head><body>
<header><h1>synapse stats</h1><p>{host} &middot; synapse {version} &middot; {n} service(s) &middot; {time} &middot; refreshes every {REFRESH_SECONDS}s &middot; <a href="/services">/services</a> &middot; <a href="/metrics">/metrics</a> &middot; <a href="/ready">/ready</a></p></header>
<main>
"#,
        host = esc(host),
        version = env!("CARGO_PKG_VERSION"),
        n = services.len(),
        time = utc(now_ms),
    );
    for s in services {
        let (state, class) = service_state(s);
        let last_change = if s.last_change_ms == 0 {
            "never".to_string()
        } else {
            format!(
                "{} ago ({})",
                ago(now_ms.saturating_sub(s.last_change_ms)),
                utc(s.last_change_ms)
            )
        };
        let _ = write!(
            out,
            r#"<section id="svc-{id}"><h2>{name} <span class="badge {class}">{state}</span> <span class="meta">listen {listen} &middot; zk {zk} &middot; table from {source} &middot; balance {balance}</span></h2>
<dl><div><dt>backends</dt><dd>{nb}</dd></div><div><dt>connections</dt><dd>{conns}</dd></div><div><dt>rejected</dt><dd>{rej}</dd></div><div><dt>idle timeouts</dt><dd>{idle}</dd></div><div><dt>bytes in/out</dt><dd>{up} / {down}</dd></div><div><dt>invalid nodes</dt><dd>{inv}</dd></div><div><dt>unavailable nodes</dt><dd>{unav}</dd></div><div><dt>route updates</dt><dd>{upd}</dd></div><div><dt>last change</dt><dd>{last_change}</dd></div></dl>
"#,
            id = esc(&s.name),
            name = esc(&s.name),
            listen = esc(&s.listen),
            zk = esc(&s.zk_path),
            source = esc(&s.source),
            balance = esc(&s.balance),
            nb = s.backends.len(),
            conns = s.connections,
            rej = s.rejected,
            idle = s.idle_closed,
            up = bytes(s.bytes.0),
            down = bytes(s.bytes.1),
            inv = s.invalid_nodes,
            unav = s.unavailable_nodes,
            upd = s.updates,
        );
        if s.backends.is_empty() {
            out.push_str(r#"<p class="empty">no backend in the route table</p>"#);
        } else {
            out.push_str(
                r#"<table><thead><tr><th>backend</th><th>state</th><th>name</th><th class="n">weight</th><th class="n">active</th><th class="n">connections</th><th class="n">connect errors</th><th class="n">ejections</th><th class="n">latency</th><th>labels</th><th>znode</th></tr></thead><tbody>
"#,
            );
            for b in &s.backends {
                let (word, row) = backend_state(s, b);
                let weight = match b.weight {
                    Some(w) if w != b.effective_weight => format!("{} (node {w})", b.effective_weight),
                    _ => b.effective_weight.to_string(),
                };
                let _ = writeln!(
                    out,
                    r#"<tr class="{row}"><td>{addr}</td><td>{word}</td><td>{name}</td><td class="n">{weight}</td><td class="n">{active}</td><td class="n">{conns}</td><td class="n{err}">{fail}</td><td class="n">{ej}</td><td class="n">{lat:.1} ms</td><td>{labels}</td><td>{id}</td></tr>"#,
                    addr = esc(&b.addr),
                    name = esc(b.name.as_deref().unwrap_or("-")),
                    active = b.active,
                    conns = b.connections,
                    err = if b.failures > 0 { " err" } else { "" },
                    fail = b.failures,
                    ej = b.ejections,
                    lat = b.latency_ms,
                    labels = esc(&b.labels),
                    id = esc(&b.id),
                );
            }
            for (addr, active, closes_in) in &s.draining {
                let _ = writeln!(
                    out,
                    r#"<tr class="row-wait"><td>{addr}</td><td>DRAINING (removed)</td><td>-</td><td class="n">-</td><td class="n">{active}</td><td class="n">-</td><td class="n">-</td><td class="n">-</td><td class="n">-</td><td>closes in {closes_in}s</td><td>-</td></tr>"#,
                    addr = esc(addr),
                );
            }
            out.push_str("</tbody></table>\n");
        }
        out.push_str("</section>\n");
    }
    if services.is_empty() {
        out.push_str(r#"<p class="empty">no service configured</p>"#);
    }
    out.push_str("</main><footer>States: UP = routed; STALE = ZooKeeper lists none, the previous backends are kept; DEFAULT SERVERS = the configured default servers stand in; PANIC = too few usable backends, ejection ignored; NO BACKEND = connections are refused. Backends: EJECTED = skipped by outlier detection for now; BACKUP = used only when no other backend is usable; DRAIN = weight 0, no new connection; DRAINING = removed, open connections finish.</footer></body></html>\n");
    out
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 KiB`-style byte counts.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `3s`, `4m 10s`, `2h 5m`, `3d 4h`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `2024-05-01 12:34:56 UTC` for milliseconds since the Unix epoch.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
