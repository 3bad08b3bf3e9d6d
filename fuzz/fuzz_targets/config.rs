//! The config loaders of both agents, `nerve::Config::load` and `synapse::Config::load`: on
//! any file content they must return a config or a `ConfigError`, never panic, and an error
//! must name at least one problem.
//!
//! There is no in-memory entry point (loading starts from a path: file type and size checks,
//! then YAML or JSON by extension), so each input is written to a file in the temp dir
//! (`/dev/shm` is a good `TMPDIR`). Input layout: the first byte picks the extension
//! (even, e.g. `0`: `.yaml`; odd, e.g. `1`: `.json`), the rest is the file content.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One file per extension per fuzzing process, rewritten for each input.
fn file(json: bool) -> &'static PathBuf {
    static YAML: OnceLock<PathBuf> = OnceLock::new();
    static JSON: OnceLock<PathBuf> = OnceLock::new();
    let (cell, ext) = if json { (&JSON, "json") } else { (&YAML, "yaml") };
    cell.get_or_init(|| std::env::temp_dir().join(format!("fuzz-config-{}.{ext}", std::process::id())))
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, content)) = input.split_first() else {
        return;
    };
    let path = file(selector % 2 == 1);
    if let Err(e) = std::fs::write(path, content) {
        panic!("cannot write the fuzz input to {}: {e}", path.display());
    }
    if let Err(e) = nerve::Config::load(path) {
        assert!(!e.problems.is_empty(), "nerve: an error without a problem");
    }
    if let Err(e) = synapse::Config::load(path) {
        assert!(!e.problems.is_empty(), "synapse: an error without a problem");
    }
});
