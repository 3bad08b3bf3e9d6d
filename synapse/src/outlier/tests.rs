use std::sync::Arc;

use common::codec::Node;

use super::*;
use crate::backend::BackendState;
use crate::balance::PolicyName;
use crate::table::Snapshot;

/// A service's snapshot cell, as the detector sees it.
struct Tables(ArcSwap<Snapshot>);

impl Tables {
    fn load(&self) -> Arc<RouteTable> {
        self.0.load().table.clone()
    }

    fn load_full(&self) -> Arc<RouteTable> {
        self.load()
    }
}

fn table(n: usize) -> Tables {
    let Ok(metrics) = crate::metrics::Metrics::new(&prometheus::Registry::new()) else {
        panic!("metrics")
    };
    let entries = (0..n)
        .map(|i| {
            let node = Node {
                host: format!("10.0.0.{i}"),
                port: 80,
                name: None,
                weight: None,
                available: true,
                unavailable_reason: None,
                haproxy_server_options: None,
                labels: Default::default(),
                shard: None,
            };
            let key = format!("10.0.0.{i}:80");
            let state = Arc::new(BackendState::new(key.clone(), metrics.backend("s", &key)));
            (format!("n{i}"), node, state)
        })
        .collect();
    Tables(ArcSwap::from_pointee(Snapshot {
        table: Arc::new(RouteTable::build(entries, PolicyName::RoundRobin, 1)),
        ..Snapshot::default()
    }))
}

fn config(consecutive_failures: u32) -> OutlierConfig {
    OutlierConfig {
        consecutive_failures,
        ..OutlierConfig::default()
    }
}

/// Reports `n` connect failures on backend `i`; the last verdict.
fn fail(d: &Detector, t: &Tables, i: usize, n: usize) -> Verdict {
    let table = t.load_full();
    let mut last = Verdict::Counted;
    for _ in 0..n {
        last = d.on_failure(&table.backends()[i], Failure::Connect, &t.0);
    }
    last
}

#[test]
fn ejection_time_doubles_up_to_the_cap() {
    let c = OutlierConfig::default();
    let times: Vec<u64> = (1..=7).map(|s| c.ejection_time(s).as_secs()).collect();
    assert_eq!(times, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(c.ejection_time(u32::MAX), Duration::from_secs(30));
}

#[test]
fn ejection_and_panic_counts() {
    let c = OutlierConfig::default();
    let max: Vec<usize> = [0, 1, 2, 3, 4, 10].iter().map(|n| c.max_ejected(*n)).collect();
    assert_eq!(max, [0, 1, 1, 1, 2, 5], "50 %, at least one");
    let none = OutlierConfig {
        max_ejected_percent: 0,
        ..c
    };
    assert_eq!(none.max_ejected(10), 0);
    let before: Vec<usize> = [0, 1, 2, 3, 4]
        .iter()
        .map(|n| c.ejected_before_panic(*n))
        .collect();
    assert_eq!(before, [0, 0, 1, 1, 2], "at least 50 % usable");
    let never = OutlierConfig {
        panic_threshold_percent: 0,
        ..c
    };
    assert_eq!(never.ejected_before_panic(4), 4);
}

#[test]
fn consecutive_failures_eject_and_a_success_resets_the_count() {
    let t = table(4);
    let d = Detector::new(config(3));
    let b = t.load_full();
    assert_eq!(fail(&d, &t, 0, 2), Verdict::Counted);
    b.backends()[0].state.outlier.on_success();
    assert_eq!(
        fail(&d, &t, 0, 2),
        Verdict::Counted,
        "the success reset the count"
    );
    assert_eq!(fail(&d, &t, 0, 1), Verdict::Ejected(Duration::from_secs(1)));
    assert!(b.backends()[0].state.live.is_ejected());
    assert_eq!(b.backends()[0].state.metrics.ejections.get(), 1);
    assert_eq!(
        fail(&d, &t, 0, 10),
        Verdict::Counted,
        "failures of attempts made while ejected do not count"
    );
    assert_eq!(b.backends()[0].state.metrics.ejections.get(), 1);
}

#[test]
fn turned_off_with_zero_failures() {
    let t = table(4);
    let d = Detector::new(config(0));
    assert_eq!(fail(&d, &t, 0, 100), Verdict::Counted);
    assert!(!t.load().backends()[0].state.live.is_ejected());
}

#[test]
fn at_most_max_ejected_percent_are_ejected() {
    let t = table(4);
    let d = Detector::new(config(1));
    assert!(matches!(fail(&d, &t, 0, 1), Verdict::Ejected(_)));
    assert!(matches!(fail(&d, &t, 1, 1), Verdict::Ejected(_)));
    assert_eq!(fail(&d, &t, 2, 1), Verdict::Capped, "2 of 4 is 50 %");
    assert!(!t.load().backends()[2].state.live.is_ejected());
    // Once one comes back, the next failure of the capped one ejects it.
    t.load().backends()[0].state.live.uneject();
    assert!(matches!(fail(&d, &t, 2, 1), Verdict::Ejected(_)));
}

#[test]
fn panic_below_the_threshold_and_after_a_rebuild() {
    let t = table(4);
    let d = Detector::new(OutlierConfig {
        consecutive_failures: 1,
        max_ejected_percent: 100,
        panic_threshold_percent: 50,
        ..OutlierConfig::default()
    });
    fail(&d, &t, 0, 1);
    fail(&d, &t, 1, 1);
    assert!(!t.load().panic().active(), "2 of 4 usable is not below 50 %");
    fail(&d, &t, 2, 1);
    assert!(t.load().panic().active(), "1 of 4 usable");

    // A new table over the same states computes its own panic state.
    let old = t.load_full();
    let entries = old
        .backends()
        .iter()
        .map(|b| (b.id.clone(), b.node.clone(), b.state.clone()))
        .collect();
    let rebuilt = RouteTable::build(entries, PolicyName::RoundRobin, 1);
    assert!(!rebuilt.panic().active(), "not computed yet");
    d.refresh(&rebuilt);
    assert!(rebuilt.panic().active());
    old.backends()[2].state.live.uneject();
    d.refresh(&rebuilt);
    assert!(!rebuilt.panic().active(), "2 of 4 usable again");
}

#[test]
fn probation_reejects_at_once_with_a_doubled_time_until_a_success() {
    let t = table(2);
    let d = Detector::new(config(3));
    let b = t.load_full();
    let live = &b.backends()[0].state.live;
    assert_eq!(fail(&d, &t, 0, 3), Verdict::Ejected(Duration::from_secs(1)));
    // Its ejection over (ended early here instead of waiting), one failure is enough.
    live.uneject();
    assert_eq!(fail(&d, &t, 0, 1), Verdict::Ejected(Duration::from_secs(2)));
    live.uneject();
    assert_eq!(fail(&d, &t, 0, 1), Verdict::Ejected(Duration::from_secs(4)));
    live.uneject();
    b.backends()[0].state.outlier.on_success();
    assert_eq!(
        fail(&d, &t, 0, 2),
        Verdict::Counted,
        "a success ends the probation"
    );
    assert_eq!(
        fail(&d, &t, 0, 1),
        Verdict::Ejected(Duration::from_secs(8)),
        "the streak goes on while ejections follow each other within max_ejection"
    );
}

#[test]
fn the_doubling_restarts_after_max_ejection_without_ejection() {
    let t = table(2);
    let d = Detector::new(OutlierConfig {
        consecutive_failures: 1,
        base_ejection: Duration::from_millis(10),
        max_ejection: Duration::from_millis(40),
        ..OutlierConfig::default()
    });
    let ms = Duration::from_millis;
    let live = t.load().backends()[0].state.live.clone();
    let mut times = Vec::new();
    for _ in 0..4 {
        if let Verdict::Ejected(d) = fail(&d, &t, 0, 1) {
            times.push(d);
        }
        live.uneject();
    }
    assert_eq!(times, [ms(10), ms(20), ms(40), ms(40)]);
    // The rule is about elapsed time: let max_ejection pass after the last ejection's end.
    std::thread::sleep(ms(200));
    assert_eq!(fail(&d, &t, 0, 1), Verdict::Ejected(ms(10)));
}
