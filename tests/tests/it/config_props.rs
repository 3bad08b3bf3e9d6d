//! Property test of both agents' config loaders, `nerve::Config::load` and
//! `synapse::Config::load` (the `config` cargo-fuzz target explores the same at length): the
//! example configs of `deploy/examples/`, mutated (a key removed, a value replaced by any
//! JSON, an unknown key added, a list element duplicated), written to a file and loaded.
//! Never a panic; an error names at least one problem, each with a reason. Bounded: 256
//! cases, about a second.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::path::Path;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

fn example(name: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name);
    common::config::read_document(&file).unwrap_or_else(|e| panic!("{e}"))
}

/// One step into a document: an object key or a list index.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Every path in `value` (the root included), depth first.
fn paths(value: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(here.clone());
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                here.push(Seg::Key(k.clone()));
                paths(v, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                here.push(Seg::Index(i));
                paths(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    AddKey(String, Value),
    Duplicate,
}

/// Applies `mutation` at the `pick`-th path of `doc` (modulo the number of paths).
fn apply(doc: &mut Value, pick: usize, mutation: Mutation) {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    let path = &all[pick % all.len()];
    match mutation {
        Mutation::Replace(v) => {
            if let Some(slot) = at_mut(doc, path) {
                *slot = v;
            }
        }
        Mutation::Remove | Mutation::Duplicate => {
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            let Some(parent) = at_mut(doc, parent) else {
                return;
            };
            match (parent, last, mutation) {
                (Value::Object(m), Seg::Key(k), Mutation::Remove) => {
                    m.remove(k);
                }
                (Value::Array(a), Seg::Index(i), Mutation::Remove) => {
                    a.remove(*i);
                }
                (Value::Array(a), Seg::Index(i), _) => {
                    let copy = a[*i].clone();
                    a.push(copy);
                }
                _ => {}
            }
        }
        Mutation::AddKey(k, v) => {
            if let Some(Value::Object(m)) = at_mut(doc, path) {
                m.insert(k, v);
            }
        }
    }
}

/// Any JSON value, biased towards what config keys hold (durations, ports, addresses).
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u32..70_000).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[0-9.]{1,5}(ms|s|m|h)?".prop_map(Value::from),
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|\\[::1\\]|[a-z]{1,5}):[0-9]{1,5}".prop_map(Value::from),
        "/[a-z/]{0,8}".prop_map(Value::from),
        prop_oneof![Just("tcp"), Just("http"), Just("info"), Just("json")].prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map("[a-z_]{1,8}", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => json().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => ("[a-z_]{1,10}", json()).prop_map(|(k, v)| Mutation::AddKey(k, v)),
        1 => Just(Mutation::Duplicate),
    ]
}

fn load_both(file: &Path) -> Result<(), TestCaseError> {
    if let Err(e) = nerve::Config::load(file) {
        prop_assert!(!e.problems.is_empty(), "nerve: an error without a problem");
        prop_assert!(e.problems.iter().all(|p| !p.reason.is_empty()), "nerve: {}", e);
    }
    if let Err(e) = synapse::Config::load(file) {
        prop_assert!(!e.problems.is_empty(), "synapse: an error without a problem");
        prop_assert!(e.problems.iter().all(|p| !p.reason.is_empty()), "synapse: {}", e);
    }
    Ok(())
}

#[test]
fn examples_load() {
    let dir = tempfile::tempdir().unwrap();
    let nerve_file = dir.path().join("nerve.json");
    std::fs::write(&nerve_file, example("nerve.yaml").to_string()).unwrap();
    nerve::Config::load(&nerve_file).unwrap();
    let synapse_file = dir.path().join("synapse.json");
    std::fs::write(&synapse_file, example("synapse.yaml").to_string()).unwrap();
    synapse::Config::load(&synapse_file).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures print the shrunk input; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_examples_never_panic_and_errors_name_problems(
        synapse_base in any::<bool>(),
        steps in vec((any::<usize>(), mutation()), 1..5),
    ) {
        let mut doc = example(if synapse_base { "synapse.yaml" } else { "nerve.yaml" });
        for (pick, m) in steps {
            apply(&mut doc, pick, m);
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        load_both(&file)?;
    }
}
