//! `${VAR}` and `${VAR:-default}` in config values, expanded from the environment.
//!
//! Expansion runs on the parsed document, string value by string value, never on the file's
//! text: a variable can change a value but never the document's structure (a value holding
//! `"\n  - evil: true"` stays one string). A value that is exactly one reference
//! (`port: ${PORT}`) takes the type its expansion reads as in JSON (number, boolean), so
//! numeric keys can come from the environment; anything else stays a string. `$${` writes a
//! literal `${`. A variable that is not set and has no default is a problem at the value's key
//! path.

use serde_json::Value;

use super::Problems;

/// Expands every string value of `doc` (object keys are left alone) with `lookup`.
pub(super) fn expand(doc: &mut Value, p: &mut Problems, lookup: &dyn Fn(&str) -> Option<String>) {
    walk(doc, "", p, lookup);
}

fn walk(value: &mut Value, path: &str, p: &mut Problems, lookup: &dyn Fn(&str) -> Option<String>) {
    match value {
        Value::String(text) if text.contains('$') => match expand_str(text, lookup) {
            Ok(Expanded { text: out, whole }) => {
                *value = if whole { typed(out) } else { Value::String(out) };
            }
            Err(reason) => p.refuse(path, reason),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{path}[{i}]"), p, lookup);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(item, &at, p, lookup);
            }
        }
        _ => {}
    }
}

/// A value that was one whole reference reads as a JSON number or boolean when it is one.
fn typed(text: String) -> Value {
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text),
    }
}

struct Expanded {
    text: String,
    /// The input was exactly one `${...}` reference.
    whole: bool,
}

fn expand_str(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(format!("unclosed ${{ in {text:?}"));
            };
            let body = &tail[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "invalid variable name {name:?} in {text:?}: use ${{NAME}} or ${{NAME:-default}}"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (give a default with ${{{name}:-value}})"
                    ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    // One reference and nothing else: its closing brace is the last character.
    let whole = text.starts_with("${") && text.find('}') == Some(text.len() - 1);
    Ok(Expanded { text: out, whole })
}

#[cfg(test)]
mod tests;
