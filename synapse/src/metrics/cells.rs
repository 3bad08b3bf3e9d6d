//! Series held as bare atomics and rendered when `/metrics` is read: the per-backend ones
//! ([`BackendSeries`]) and the per-service ones ([`ServiceSeries`]).
//!
//! A `prometheus` labelled child carries its own copy of the family's descriptor (name, help
//! text, label names) and its label pairs as strings: about 600 bytes for a counter and 1.2
//! kB for a histogram, so the seven series of a backend cost over 4 kB, and the ~24 of a
//! service (~41 for an HTTP one) some 15 kB: most of synapse's memory per backend and per
//! service (issue 13; Envoy keeps ≤ 3 kB per host, ≤ 42 kB per cluster, in all). Here a
//! backend's or a service's series are small atomic cells and one map entry naming them;
//! the descriptors exist once, and the label pairs are made at scrape time only. The
//! exposition is the same as the `prometheus` vectors gave (names, help, types, labels,
//! bucket bounds; the registry sorts families and series).
//!
//! The handles keep the method names of `prometheus`'s (`inc`, `get`, `set`, `observe`), so
//! the data path's calls did not change; each is one relaxed atomic operation, as theirs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// A counter (one atomic).
#[derive(Debug, Clone, Default)]
pub struct IntCounter(Arc<AtomicU64>);

impl IntCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `v`.
    pub fn inc_by(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge (one atomic).
#[derive(Debug, Clone, Default)]
pub struct IntGauge(Arc<AtomicI64>);

impl IntGauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Most buckets a [`Histogram`] has (the bounds are a `'static` list given at creation).
const MAX_BUCKETS: usize = 16;

#[derive(Debug)]
struct HistogramCells {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative): `counts[i]` holds those in
    /// `(bounds[i-1], bounds[i]]`.
    counts: [AtomicU64; MAX_BUCKETS],
    count: AtomicU64,
    /// Sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

/// A histogram with fixed bucket bounds (at most 16).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCells>);

impl Histogram {
    /// A histogram over `bounds` (increasing; the first 16 are kept).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramCells {
            bounds: &bounds[..bounds.len().min(MAX_BUCKETS)],
            counts: Default::default(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Records `v` (in the first bucket whose bound is ≥ `v`, as Prometheus's `le`).
    pub fn observe(&self, v: f64) {
        let c = &self.0;
        let i = c.bounds.partition_point(|b| *b < v);
        if let Some(slot) = c.counts.get(i).filter(|_| i < c.bounds.len()) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        c.count.fetch_add(1, Ordering::Relaxed);
        let _ = c.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    fn proto(&self) -> proto::Histogram {
        let c = &self.0;
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let buckets = c
            .bounds
            .iter()
            .zip(c.counts.iter())
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        // Read after the buckets: the count is never below their total.
        h.set_sample_count(c.count.load(Ordering::Relaxed).max(cumulative));
        h.set_sample_sum(f64::from_bits(c.sum.load(Ordering::Relaxed)));
        h
    }
}

/// Buckets of `synapse_backend_connect_seconds`: 100 µs to 2.5 s.
pub const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Handles for one backend of one service.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Connections open now.
    pub active: IntGauge,
    /// Connections established.
    pub connections: IntCounter,
    /// Connection attempts that failed (refused or timed out).
    pub failures: IntCounter,
    /// Time to connect, successful attempts only.
    pub connect_time: Histogram,
    /// Outlier ejections.
    pub ejections: IntCounter,
    /// 1 while ejected (set at ejection and whenever `/metrics` is read).
    pub ejected: IntGauge,
    /// Effective weight in the current table.
    pub weight: IntGauge,
}

impl BackendMetrics {
    /// Fresh handles, registered nowhere (tests; [`BackendSeries::get`] registers them).
    pub fn detached() -> BackendMetrics {
        BackendMetrics {
            active: IntGauge::default(),
            connections: IntCounter::default(),
            failures: IntCounter::default(),
            connect_time: Histogram::new(CONNECT_BUCKETS),
            ejections: IntCounter::default(),
            ejected: IntGauge::default(),
            weight: IntGauge::default(),
        }
    }
}

/// The per-backend families: name, help, type, and how to read a backend's value.
type Read = fn(&BackendMetrics) -> Sample;

/// One value read at scrape time.
#[derive(Debug)]
pub enum Sample {
    /// A counter's value.
    Counter(u64),
    /// A gauge's value.
    Gauge(i64),
    /// A histogram's buckets, count and sum.
    Histogram(proto::Histogram),
}

impl From<&IntCounter> for Sample {
    fn from(c: &IntCounter) -> Sample {
        Sample::Counter(c.get())
    }
}

impl From<&IntGauge> for Sample {
    fn from(g: &IntGauge) -> Sample {
        Sample::Gauge(g.get())
    }
}

impl From<&Histogram> for Sample {
    fn from(h: &Histogram) -> Sample {
        Sample::Histogram(h.proto())
    }
}

/// The series `labels` with the value `sample`.
fn metric(labels: Vec<LabelPair>, sample: Sample) -> proto::Metric {
    let mut metric = proto::Metric::from_label(labels);
    match sample {
        Sample::Counter(v) => {
            let mut c = proto::Counter::default();
            c.set_value(v as f64);
            metric.set_counter(c);
        }
        Sample::Gauge(v) => {
            let mut g = proto::Gauge::default();
            g.set_value(v as f64);
            metric.set_gauge(g);
        }
        Sample::Histogram(h) => metric.set_histogram(h),
    }
    metric
}

/// An empty family `name`.
fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family
}

const FAMILIES: [(&str, &str, MetricType, Read); 7] = [
    (
        "synapse_backend_connections_active",
        "Open connections per backend",
        MetricType::GAUGE,
        |m| Sample::Gauge(m.active.get()),
    ),
    (
        "synapse_backend_connections_total",
        "Connections established per backend",
        MetricType::COUNTER,
        |m| Sample::Counter(m.connections.get()),
    ),
    (
        "synapse_backend_connect_failures_total",
        "Failed connection attempts per backend",
        MetricType::COUNTER,
        |m| Sample::Counter(m.failures.get()),
    ),
    (
        "synapse_backend_connect_seconds",
        "Time to connect to a backend (successful attempts)",
        MetricType::HISTOGRAM,
        |m| Sample::Histogram(m.connect_time.proto()),
    ),
    (
        "synapse_backend_ejections_total",
        "Outlier ejections per backend",
        MetricType::COUNTER,
        |m| Sample::Counter(m.ejections.get()),
    ),
    (
        "synapse_backend_ejected",
        "1 while the backend is ejected",
        MetricType::GAUGE,
        |m| Sample::Gauge(m.ejected.get()),
    ),
    (
        "synapse_backend_weight",
        "Effective weight of the backend in the route table (0 = no new connections)",
        MetricType::GAUGE,
        |m| Sample::Gauge(m.weight.get()),
    ),
];

/// Handles by service, then by `host:port`.
type ByService = BTreeMap<Box<str>, BTreeMap<Box<str>, BackendMetrics>>;

/// The series of every backend, by service and `host:port`: a `prometheus` collector.
#[derive(Debug, Clone)]
pub struct BackendSeries {
    descs: Arc<[Desc]>,
    backends: Arc<Mutex<ByService>>,
}

impl BackendSeries {
    /// The collector, with no backend yet.
    pub fn new() -> Result<BackendSeries, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, _)| {
                Desc::new(
                    (*name).to_string(),
                    (*help).to_string(),
                    vec!["service".into(), "backend".into()],
                    HashMap::new(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BackendSeries {
            descs: descs.into(),
            backends: Arc::default(),
        })
    }

    /// The handles of `backend` (`host:port`) of `service`: the existing ones, or new ones.
    pub fn get(&self, service: &str, backend: &str) -> BackendMetrics {
        let mut map = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = map.get(service).and_then(|s| s.get(backend)) {
            return m.clone();
        }
        map.entry(service.into())
            .or_default()
            .entry(backend.into())
            .or_insert_with(BackendMetrics::detached)
            .clone()
    }

    /// Backends with series.
    pub fn count(&self) -> usize {
        let map = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(BTreeMap::len).sum()
    }

    /// Drops the series of a backend.
    pub fn remove(&self, service: &str, backend: &str) {
        let mut map = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get_mut(service) {
            s.remove(backend);
            if s.is_empty() {
                map.remove(service);
            }
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

impl Collector for BackendSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let map = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        FAMILIES
            .iter()
            .map(|(name, help, kind, read)| {
                let mut family = family(name, help, *kind);
                let metrics = family.mut_metric();
                for (service, backends) in map.iter() {
                    for (backend, m) in backends {
                        // By label name, as `prometheus` orders a vector's pairs.
                        let labels = vec![label("backend", backend), label("service", service)];
                        metrics.push(metric(labels, read(m)));
                    }
                }
                family
            })
            .collect()
    }
}

/// One family of per-service series: name, help, type, the label beside `service` (with
/// its values: one series each), and how to read a service's value.
#[derive(Debug)]
pub struct Family<M> {
    /// The metric name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its type.
    pub kind: MetricType,
    /// The second label's name and values; None: `service` alone, one series.
    pub label: Option<(&'static str, &'static [&'static str])>,
    /// The value of a service's series `i` (index into the second label's values; 0 without
    /// one).
    pub read: fn(&M, usize) -> Sample,
}

/// The series of every service, by name: a `prometheus` collector over `families`, each
/// service's cells `M` made by `fresh` when it is first asked for.
#[derive(Debug)]
pub struct ServiceSeries<M: 'static> {
    families: &'static [Family<M>],
    fresh: fn() -> M,
    descs: Arc<[Desc]>,
    services: Arc<Mutex<BTreeMap<Box<str>, M>>>,
}

impl<M> Clone for ServiceSeries<M> {
    fn clone(&self) -> Self {
        ServiceSeries {
            families: self.families,
            fresh: self.fresh,
            descs: self.descs.clone(),
            services: self.services.clone(),
        }
    }
}

impl<M: Clone> ServiceSeries<M> {
    /// The collector of `families`, with no service yet.
    pub fn new(families: &'static [Family<M>], fresh: fn() -> M) -> Result<Self, prometheus::Error> {
        let descs = families
            .iter()
            .map(|f| {
                let mut labels = vec!["service".to_string()];
                labels.extend(f.label.map(|(l, _)| l.to_string()));
                Desc::new(f.name.to_string(), f.help.to_string(), labels, HashMap::new())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceSeries {
            families,
            fresh,
            descs: descs.into(),
            services: Arc::default(),
        })
    }

    /// The cells of `service`: the existing ones, or new ones.
    pub fn get(&self, service: &str) -> M {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = map.get(service) {
            return m.clone();
        }
        map.entry(service.into()).or_insert_with(self.fresh).clone()
    }

    /// Services with series.
    pub fn count(&self) -> usize {
        self.services.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Drops the series of `service`.
    pub fn remove(&self, service: &str) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(service);
    }
}

impl<M: Clone + Send + Sync + 'static> Collector for ServiceSeries<M> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        self.families
            .iter()
            .map(|f| {
                let mut family = family(f.name, f.help, f.kind);
                let metrics = family.mut_metric();
                for (service, m) in map.iter() {
                    match f.label {
                        None => metrics.push(metric(vec![label("service", service)], (f.read)(m, 0))),
                        Some((name, values)) => {
                            for (i, value) in values.iter().enumerate() {
                                // By label name, as `prometheus` orders a vector's pairs.
                                let mut labels = vec![label(name, value), label("service", service)];
                                labels.sort_by(|a, b| a.name().cmp(b.name()));
                                metrics.push(metric(labels, (f.read)(m, i)));
                            }
                        }
                    }
                }
                family
            })
            .collect()
    }
}

/// Series written per encoder call: the protos of one chunk exist at a time, so a scrape of
/// thousands of backends never holds them all (it did through `Registry::gather`, whose
/// transient tree set the heap's high-water mark: issue 13).
const CHUNK: usize = 64;

/// One series to write: its label pairs (name, value; sorted by name) and where to read it.
struct Row<'a, M> {
    labels: [(&'static str, &'a str); 2],
    /// Label pairs used (1 or 2).
    n: usize,
    cells: &'a M,
    /// Index into the family's second label values (0 without one).
    i: usize,
}

impl<M> Row<'_, M> {
    fn labels(&self) -> &[(&'static str, &str)] {
        &self.labels[..self.n]
    }
}

/// Writes one family in the text format, as `Registry::gather` and `TextEncoder` would:
/// series sorted by their label values (in label-name order), `# HELP` and `# TYPE` once.
/// Nothing for a family without series (`gather` drops those).
fn encode_rows<M>(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    (name, help, kind): (&str, &str, MetricType),
    rows: &mut [Row<'_, M>],
    read: impl Fn(&M, usize) -> Sample,
) {
    rows.sort_by(|a, b| {
        let (a, b) = (a.labels(), b.labels());
        a.iter().map(|l| l.1).cmp(b.iter().map(|l| l.1))
    });
    for (k, chunk) in rows.chunks(CHUNK).enumerate() {
        let mut f = family(name, help, kind);
        let metrics = f.mut_metric();
        for r in chunk {
            let labels = r.labels().iter().map(|(n, v)| label(n, v)).collect();
            metrics.push(metric(labels, read(r.cells, r.i)));
        }
        scratch.clear();
        if let Err(err) = TextEncoder::new().encode(&[f], scratch) {
            tracing::warn!(error = %err, metric = name, "metrics encoding failed");
            return;
        }
        // `# HELP` and `# TYPE` (one line each: the encoder escapes newlines in the help)
        // only before the first chunk.
        let skip = if k == 0 {
            0
        } else {
            scratch
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == b'\n')
                .nth(1)
                .map_or(0, |(i, _)| i + 1)
        };
        out.extend_from_slice(&scratch[skip..]);
    }
}

impl BackendSeries {
    /// The families' names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        FAMILIES.iter().map(|f| f.0)
    }

    /// Writes the family `name` (one of [`names`](Self::names)) to `out`.
    pub fn encode(&self, name: &str, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        let Some((name, help, kind, read)) = FAMILIES.iter().find(|f| f.0 == name) else {
            return;
        };
        let map = self.backends.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<Row<'_, BackendMetrics>> = map
            .iter()
            .flat_map(|(service, backends)| {
                backends.iter().map(move |(backend, m)| Row {
                    labels: [("backend", &**backend), ("service", &**service)],
                    n: 2,
                    cells: m,
                    i: 0,
                })
            })
            .collect();
        encode_rows(out, scratch, (name, help, *kind), &mut rows, |m, _| read(m));
    }
}

impl<M> ServiceSeries<M> {
    /// The families' names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        self.families.iter().map(|f| f.name)
    }

    /// Writes the family `name` (one of [`names`](Self::names)) to `out`.
    pub fn encode(&self, name: &str, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        let Some(f) = self.families.iter().find(|f| f.name == name) else {
            return;
        };
        let map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<Row<'_, M>> = Vec::new();
        for (service, m) in map.iter() {
            match f.label {
                None => rows.push(Row {
                    labels: [("service", &**service), ("", "")],
                    n: 1,
                    cells: m,
                    i: 0,
                }),
                Some((label, values)) => {
                    for (i, value) in values.iter().enumerate() {
                        let mut labels = [(label, *value), ("service", &**service)];
                        labels.sort_by(|a, b| a.0.cmp(b.0));
                        rows.push(Row {
                            labels,
                            n: 2,
                            cells: m,
                            i,
                        });
                    }
                }
            }
        }
        encode_rows(out, scratch, (f.name, f.help, f.kind), &mut rows, f.read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn render(registry: &prometheus::Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn series_render_like_the_prometheus_vectors() {
        let registry = prometheus::Registry::new();
        let series = BackendSeries::new().unwrap();
        registry.register(Box::new(series.clone())).unwrap();
        let m = series.get("web", "10.0.0.1:80");
        m.connections.inc();
        m.active.inc();
        m.weight.set(7);
        m.connect_time.observe(0.0003);
        m.connect_time.observe(3.0);
        // The same handles for the same backend.
        series.get("web", "10.0.0.1:80").connections.inc();
        let text = render(&registry);
        assert!(
            text.contains("synapse_backend_connections_total{backend=\"10.0.0.1:80\",service=\"web\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE synapse_backend_connect_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("le=\"2.5\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("synapse_backend_connect_seconds_count{"), "{text}");
        assert!(
            text.contains("# HELP synapse_backend_weight Effective weight"),
            "{text}"
        );

        // The reference: the same operations on prometheus's own vectors.
        let reference = prometheus::Registry::new();
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "synapse_backend_connect_seconds",
                "Time to connect to a backend (successful attempts)",
            )
            .buckets(CONNECT_BUCKETS.to_vec()),
            &["service", "backend"],
        )
        .unwrap();
        reference.register(Box::new(h.clone())).unwrap();
        let child = h.with_label_values(&["web", "10.0.0.1:80"]);
        child.observe(0.0003);
        child.observe(3.0);
        let ours: String = text
            .lines()
            .filter(|l| l.contains("synapse_backend_connect_seconds"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(ours, render(&reference));

        series.remove("web", "10.0.0.1:80");
        assert!(!render(&registry).contains("synapse_backend"));
    }
}
