#![allow(clippy::unwrap_used)]
use serde_json::json;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "HOST" => Some("10.0.0.7".into()),
        "PORT" => Some("8080".into()),
        "FLAG" => Some("true".into()),
        "EVIL" => Some("x\n  - injected: true".into()),
        _ => None,
    }
}

fn run(mut doc: serde_json::Value) -> (serde_json::Value, Vec<String>) {
    let mut p = Problems::default();
    expand(&mut doc, &mut p, &env);
    let problems = p.list.iter().map(|pr| pr.to_string()).collect();
    (doc, problems)
}

#[test]
fn references_defaults_and_types() {
    let (doc, problems) = run(json!({
        "services": [{
            "host": "${HOST}",
            "port": "${PORT}",
            "url": "http://${HOST}:${PORT}/x",
            "zone": "${ZONE:-eu-1a}",
            "empty": "${ZONE:-}",
            "flag": "${FLAG}",
            "price": "$5 and $${HOST}",
            "evil": "${EVIL}",
            "bracey": "${PORT}x}",
        }]
    }));
    assert!(problems.is_empty(), "{problems:?}");
    let s = &doc["services"][0];
    assert_eq!(s["host"], json!("10.0.0.7"));
    assert_eq!(s["port"], json!(8080), "a whole reference reads as a number");
    assert_eq!(s["url"], json!("http://10.0.0.7:8080/x"));
    assert_eq!(s["zone"], json!("eu-1a"));
    assert_eq!(s["empty"], json!(""));
    assert_eq!(s["flag"], json!(true));
    assert_eq!(s["price"], json!("$5 and ${HOST}"));
    assert_eq!(
        s["evil"],
        json!("x\n  - injected: true"),
        "values never change the structure"
    );
    assert_eq!(s["bracey"], json!("8080x}"));
}

#[test]
fn unset_and_malformed_references_are_problems_at_their_key_path() {
    let (_, problems) = run(json!({
        "a": "${NOPE}",
        "list": ["ok", "${bad name}"],
        "b": {"c": "${HOST"},
    }));
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("a: environment variable NOPE is not set"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("list[1]: invalid variable name")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("b.c: unclosed")),
        "{problems:?}"
    );
}

#[test]
fn a_value_with_an_unset_variable_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "port: ${NERVE_TEST_SURELY_UNSET_VAR}\n").unwrap();
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct C {
        port: u16,
    }
    let err = crate::config::load(&f, |doc, p| p.take::<C>("", doc))
        .err()
        .unwrap();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].path, "port", "{err}");
    assert!(
        err.problems[0]
            .reason
            .contains("NERVE_TEST_SURELY_UNSET_VAR is not set"),
        "{err}"
    );
}
