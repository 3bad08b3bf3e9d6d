//! The problem collector: every problem of a config, each at its key path, found in one pass
//! ([`Problems::take`] deserializes a value key by key past its errors).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Most deserialization attempts [`Problems::take`] makes on one value (each one removes a
/// bad key or stands in for one) before it gives up on the rest.
const MAX_ATTEMPTS: usize = 200;

/// A config file that could not be used: every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// What is wrong, one entry per key.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", self.file.display(), p)?;
        }
        Ok(())
    }
}

/// One problem at one key path, e.g. `services[2].checks[0].timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path from the document root; empty for the document itself.
    pub path: String,
    /// Why the value was refused.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Collects problems while a raw config is validated.
#[derive(Debug, Default)]
pub struct Problems {
    pub(super) list: Vec<Problem>,
    /// Key paths whose value [`Problems::take`] refused (and removed or stood in for): later
    /// problems at or under them are consequences, not news. A set looked up by the prefixes
    /// of a new problem's path, so that a config with thousands of problems is not checked in
    /// quadratic time.
    refused: HashSet<String>,
}

impl Problems {
    /// Records a problem at `path`, unless [`Problems::take`] already refused the value
    /// there (a check of the default or stand-in value would only repeat it).
    pub fn push(&mut self, path: impl Into<String>, reason: impl fmt::Display) {
        let path = path.into();
        if self.is_refused(&path) {
            return;
        }
        self.list.push(Problem {
            path,
            reason: reason.to_string(),
        });
    }

    /// Records a problem at `path` and refuses the value there: later problems at or under
    /// `path` are consequences of this one and are dropped.
    pub fn refuse(&mut self, path: &str, reason: impl fmt::Display) {
        self.push(path, reason);
        self.refused.insert(path.to_string());
    }

    /// Whether `path` is a refused path or lies under one (`a` covers `a.b` and `a[0]`, not
    /// `ab`; the empty root path covers only itself).
    fn is_refused(&self, path: &str) -> bool {
        if self.refused.is_empty() {
            return false;
        }
        self.refused.contains(path)
            || path
                .match_indices(['.', '['])
                .any(|(i, _)| i > 0 && self.refused.contains(&path[..i]))
    }

    /// Deserializes `value` (found at key path `path`) into `T`, recording every problem
    /// inside it with its full key path.
    ///
    /// serde stops at the first error, so on an error the offending key is recorded, removed
    /// from `value` and the deserialization tried again (a bounded number of times). When a
    /// required key is missing, or was removed that way (then serde's follow-up "missing
    /// field" is not recorded), a neutral stand-in (`""`, `0`, `[]`, `{}` or `false`, the
    /// first that fits) takes its place, so the rest of the value is still checked; if none
    /// fits, the struct holding the key is removed in turn.
    ///
    /// Returns `Some` when `value` deserializes once the bad keys are gone or stood in for,
    /// so the caller can go on checking the rest: later problems pushed at a refused key are
    /// dropped as repeats, and the recorded problems still fail the config.
    pub fn take<T: DeserializeOwned>(&mut self, path: &str, mut value: Value) -> Option<T> {
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let err = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(v) => return Some(v),
                Err(err) => err,
            };
            let at: Vec<Seg> = err.path().iter().map(Seg::from).collect();
            let reason = err.into_inner().to_string();
            if let Some(key) = missing_field(&reason) {
                let mut field = at.clone();
                field.push(Seg::Key(key.to_string()));
                if !removed.contains(&field) {
                    self.push(join_path(path, &at), reason);
                    self.refused.insert(join_path(path, &field));
                    removed.push(field.clone());
                }
                if stand_in::<T>(&mut value, &field) {
                    continue;
                }
            } else {
                let full = join_path(path, &at);
                self.push(full.clone(), reason);
                self.refused.insert(full);
            }
            let target = removal_target(&at)?;
            if !remove_at(&mut value, &target) {
                return None;
            }
            self.refused.insert(join_path(path, &target));
            removed.push(target);
        }
        self.push(
            path,
            format!("more than {MAX_ATTEMPTS} problems; fix these first"),
        );
        None
    }

    /// `Ok(value)` when no problem was recorded, else the error for `file`.
    pub fn finish<T>(self, file: &Path, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                file: file.to_path_buf(),
                problems: self.list,
            })
        }
    }
}

/// One step of a key path, as [`Problems::take`] walks and edits a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
    /// A step serde could not name (an enum variant, a non-string key): not walkable.
    Opaque,
}

impl From<&serde_path_to_error::Segment> for Seg {
    fn from(s: &serde_path_to_error::Segment) -> Seg {
        match s {
            serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
            _ => Seg::Opaque,
        }
    }
}

/// `prefix` followed by `at`, written `a.b[2].c`.
fn join_path(prefix: &str, at: &[Seg]) -> String {
    let mut out = prefix.to_string();
    for seg in at {
        match seg {
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Opaque => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// The key serde reports missing in a "missing field `x`" message.
fn missing_field(reason: &str) -> Option<&str> {
    reason.strip_prefix("missing field `")?.strip_suffix('`')
}

/// What to remove for an error at `at`: the deepest object key on the walkable part of the
/// path (a bad list element takes its whole list with it, so that later indices keep their
/// meaning). `None` at the root: nothing left to remove.
fn removal_target(at: &[Seg]) -> Option<Vec<Seg>> {
    let walkable = at.iter().position(|s| *s == Seg::Opaque).unwrap_or(at.len());
    let last_key = at[..walkable].iter().rposition(|s| matches!(s, Seg::Key(_)))?;
    Some(at[..=last_key].to_vec())
}

/// Puts the first neutral value `T` accepts at `field` (a required key, missing or whose bad
/// value was removed); false, with the key removed again, when none fits.
fn stand_in<T: DeserializeOwned>(value: &mut Value, field: &[Seg]) -> bool {
    let Some((Seg::Key(key), parents)) = field.split_last() else {
        return false;
    };
    let candidates = [
        Value::String(String::new()),
        Value::from(0),
        Value::Array(Vec::new()),
        Value::Object(serde_json::Map::new()),
        Value::Bool(false),
    ];
    for candidate in candidates {
        let Some(obj) = walk(value, parents).and_then(Value::as_object_mut) else {
            return false;
        };
        obj.insert(key.clone(), candidate);
        match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(_) => return true,
            Err(err) => {
                let at: Vec<Seg> = err.path().iter().map(Seg::from).collect();
                if !at.starts_with(field) {
                    return true;
                }
            }
        }
    }
    remove_at(value, field);
    false
}

/// The value at `path` (keys and indices) inside `value`.
fn walk<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut here = value;
    for seg in path {
        here = match seg {
            Seg::Key(k) => here.as_object_mut()?.get_mut(k)?,
            Seg::Index(i) => here.as_array_mut()?.get_mut(*i)?,
            Seg::Opaque => return None,
        };
    }
    Some(here)
}

/// Removes the key at `target` (which ends with a key) from `value`; false if not found.
fn remove_at(value: &mut Value, target: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = target.split_last() else {
        return false;
    };
    walk(value, parents)
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove(last))
        .is_some()
}
