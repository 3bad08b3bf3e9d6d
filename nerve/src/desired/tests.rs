#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn inputs<'a>(healthy: bool, operator: &'a Operator, expose: bool, down: &'a [String]) -> Inputs<'a> {
    Inputs {
        healthy,
        down_checks: down,
        operator,
        weight: 200,
        expose_unavailable: expose,
        warmup: None,
        held: None,
    }
}

/// A failed `pre_available` hook keeps an available service down (with its reason), and
/// changes nothing for a service that is down anyway or disabled.
#[test]
fn held_back_by_a_hook() {
    let none = Operator::default();
    let forced = Operator {
        force: true,
        ..Operator::default()
    };
    let disabled = Operator {
        disabled: true,
        ..Operator::default()
    };
    let why = "pre-available hook failed: exited with status 1";
    let held = |healthy, op, expose| {
        desired(&Inputs {
            held: Some(why),
            ..inputs(healthy, op, expose, &[])
        })
    };
    assert_eq!(held(true, &none, false), State::Absent);
    assert_eq!(
        held(true, &none, true),
        State::Unavailable {
            reason: why.to_string()
        }
    );
    assert_eq!(
        held(false, &forced, true),
        State::Unavailable {
            reason: why.to_string()
        }
    );
    assert_eq!(
        held(true, &disabled, true),
        State::Unavailable {
            reason: "disabled by operator".to_string()
        }
    );
    assert_eq!(
        held(false, &none, true),
        State::Unavailable {
            reason: "checks failing".to_string()
        }
    );
}

#[test]
fn health_times_operator_times_expose() {
    let down = vec!["http".to_string(), "db".to_string()];
    let none = Operator::default();
    let disabled = Operator {
        disabled: true,
        ..Operator::default()
    };
    let forced = Operator {
        force: true,
        ..Operator::default()
    };
    let weighted = Operator {
        weight: Some(7),
        ..Operator::default()
    };
    let both = Operator {
        disabled: true,
        force: true,
        weight: Some(7),
    };
    let avail = |weight| State::Available { weight };
    let unavail = |r: &str| State::Unavailable {
        reason: r.to_string(),
    };
    let cases: Vec<(bool, &Operator, bool, State)> = vec![
        (true, &none, false, avail(200)),
        (true, &none, true, avail(200)),
        (false, &none, false, State::Absent),
        (false, &none, true, unavail("checks failing: http, db")),
        (true, &disabled, false, State::Absent),
        (true, &disabled, true, unavail("disabled by operator")),
        (false, &disabled, true, unavail("disabled by operator")),
        (false, &forced, false, avail(200)),
        (false, &forced, true, avail(200)),
        (true, &weighted, false, avail(7)),
        (false, &weighted, false, State::Absent),
        // Disable beats force.
        (false, &both, false, State::Absent),
        (true, &both, true, unavail("disabled by operator")),
    ];
    for (healthy, op, expose, want) in cases {
        let got = desired(&inputs(healthy, op, expose, &down));
        assert_eq!(got, want, "healthy {healthy}, {op:?}, expose {expose}");
    }
    assert_eq!(
        desired(&inputs(false, &none, true, &[])),
        unavail("checks failing")
    );
}

#[test]
fn warmup_bounds_the_weight_of_a_healthy_service_only() {
    let none = Operator::default();
    let forced = Operator {
        force: true,
        ..Operator::default()
    };
    let mut i = inputs(true, &none, false, &[]);
    i.warmup = Some(50);
    assert_eq!(desired(&i), State::Available { weight: 50 });
    i.warmup = Some(0);
    assert_eq!(
        desired(&i),
        State::Available { weight: 1 },
        "never 0 while ramping"
    );
    i.warmup = Some(255);
    assert_eq!(desired(&i), State::Available { weight: 200 });
    let mut f = inputs(false, &forced, false, &[]);
    f.warmup = Some(10);
    assert_eq!(desired(&f), State::Available { weight: 200 }, "forced: no ramp");
}

#[test]
fn payload_always_has_a_weight_and_the_reason_when_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nerve.yaml");
    std::fs::write(
        &file,
        "instance_id: h1\nservices:\n  - {name: web, host: 127.0.0.1, port: 80, zk_hosts: 'a:1', zk_path: /s, checks: [{type: tcp}]}\n",
    )
    .unwrap();
    let s = crate::Config::load(&file).unwrap().services.remove(0);
    assert!(payload(&State::Absent, &s).is_none());
    let v: serde_json::Value =
        serde_json::from_slice(&payload(&State::Available { weight: 255 }, &s).unwrap()).unwrap();
    assert_eq!(v["weight"], 255);
    assert_eq!(v["available"], true);
    assert_eq!(v["name"], "h1");
    assert!(v.get("unavailable_reason").is_none(), "{v}");
    let v: serde_json::Value = serde_json::from_slice(
        &payload(
            &State::Unavailable {
                reason: "disabled by operator".into(),
            },
            &s,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(v["available"], false);
    assert_eq!(v["unavailable_reason"], "disabled by operator");
    assert_eq!(v["weight"], 255);
}
