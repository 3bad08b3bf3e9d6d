//! Reading a config file: a small regular file, YAML or JSON by extension, `${VAR}`s
//! expanded, then validated by the agent into its config type.

use std::io::Read;
use std::path::Path;

use super::{env, ConfigError, Problem, Problems};

/// Largest config file read, in bytes (4 MiB). Real configs are a few KiB; the cap keeps a
/// wrong `-c` (a log, a disk image) from being read into memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a YAML (`.yaml`, `.yml`) or JSON (`.json`) file into a JSON value.
///
/// Only a regular file (or a symlink to one) of at most [`MAX_FILE_BYTES`] is read.
pub fn read_document(file: &Path) -> Result<serde_json::Value, ConfigError> {
    let fail = |reason: String| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem {
            path: String::new(),
            reason,
        }],
    };
    let text = read_limited(file).map_err(fail)?;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "json" => serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}"))),
        "yaml" | "yml" => serde_norway::from_str(&text).map_err(|e| fail(format!("not valid YAML: {e}"))),
        _ => Err(fail(format!(
            "unknown file extension {ext:?}: use .yaml, .yml or .json"
        ))),
    }
}

/// The text of `file`, refusing anything but a regular file of at most [`MAX_FILE_BYTES`].
fn read_limited(file: &Path) -> Result<String, String> {
    // Checked on the path first, because opening a FIFO blocks until a writer shows up.
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read file: {e}"))?;
    check_file_type(&meta)?;
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot read file: {e}"))?;
    // Checked again on the open handle: the path may have been replaced in between.
    let meta = opened.metadata().map_err(|e| format!("cannot read file: {e}"))?;
    check_file_type(&meta)?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| format!("not valid UTF-8: {e}"))
}

fn too_big() -> String {
    format!(
        "file is larger than the {} MiB limit for a config file",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// Accepts a regular file within the size cap.
fn check_file_type(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return if meta.len() > MAX_FILE_BYTES {
            Err(too_big())
        } else {
            Ok(())
        };
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(format!(
        "not a regular file ({kind}): give the path of a config file"
    ))
}

/// Reads `file` and turns it into a validated config with `validate`, which records every
/// problem in the given [`Problems`] (and returns `None` only after recording one). The
/// document must be a mapping of keys: `validate` is only given one.
pub fn load<T>(
    file: &Path,
    validate: impl FnOnce(serde_json::Value, &mut Problems) -> Option<T>,
) -> Result<T, ConfigError> {
    let mut doc = read_document(file)?;
    let found = match &doc {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Null => Some("an empty document"),
        serde_json::Value::Array(_) => Some("a list"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
    };
    if let Some(found) = found {
        return Err(ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                path: String::new(),
                reason: format!("expected a mapping of keys (`key: value`), found {found}"),
            }],
        });
    }
    let mut p = Problems::default();
    env::expand(&mut doc, &mut p, &|name| std::env::var(name).ok());
    let config = validate(doc, &mut p);
    match p.finish(file, config)? {
        Some(c) => Ok(c),
        None => Err(ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                path: String::new(),
                reason: "invalid config".into(),
            }],
        }),
    }
}
