//! `tracing` subscriber setup: text or JSON lines on stderr, with a filter that can be
//! changed at run time ([`set_log_filter`], behind the admin APIs' `PUT /log-level`).

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level directive does not parse.
    #[error("invalid log level {level:?} in {origin}: {reason}")]
    BadLevel {
        /// The directive given.
        level: String,
        /// Where it comes from: `RUST_LOG`, `log.level` or the admin API.
        origin: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("logging already initialised")]
    AlreadySet,
    /// The filter cannot be changed: this process did not install the subscriber through
    /// [`init`] (an agent run inside a test, say).
    #[error("the log filter of this process cannot be changed (logging not set up by the agent)")]
    NotReloadable,
    /// The subscriber is gone (the process is exiting).
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

/// The filter [`init`] installs: `RUST_LOG` when set and non-empty, else `config.level`
/// (already checked when the config was loaded). `--check-config` calls it too, so that a
/// bad `RUST_LOG` fails the check as it would fail a start.
pub fn filter(config: &LogConfig) -> Result<EnvFilter, TelemetryError> {
    let (level, origin) = start_directive(config);
    parse(&level, origin)
}

fn start_directive(config: &LogConfig) -> (String, &'static str) {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => (env, "RUST_LOG"),
        _ => (config.level.clone(), "log.level"),
    }
}

fn parse(level: &str, origin: &'static str) -> Result<EnvFilter, TelemetryError> {
    if !level.is_ascii() {
        // tracing-subscriber's parser panics on some non-ASCII input (it slices inside a
        // character); targets and levels are ASCII anyway.
        return Err(TelemetryError::BadLevel {
            level: level.to_string(),
            origin,
            reason: "only ASCII characters are allowed".to_string(),
        });
    }
    EnvFilter::try_new(level).map_err(|e| TelemetryError::BadLevel {
        level: level.to_string(),
        origin,
        reason: e.to_string(),
    })
}

/// The handle on the installed filter, and the directives it was started with and holds now.
struct Reloadable {
    handle: reload::Handle<EnvFilter, Registry>,
    initial: String,
    current: Mutex<String>,
}

static RELOAD: OnceLock<Reloadable> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `config.level`.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    let (level, origin) = start_directive(config);
    let (filter, handle) = reload::Layer::new(parse(&level, origin)?);
    let ansi = std::io::stderr().is_terminal();
    let output = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)?;
    let _ = RELOAD.set(Reloadable {
        handle,
        initial: level.clone(),
        current: Mutex::new(level),
    });
    Ok(())
}

/// The filter directives in force now (`None` when [`init`] did not run).
pub fn log_filter() -> Option<String> {
    let r = RELOAD.get()?;
    let current = r.current.lock().unwrap_or_else(PoisonError::into_inner);
    Some(current.clone())
}

/// Replaces the filter with `directives` (`EnvFilter` syntax: `debug`,
/// `info,synapse=debug`, ...), effective for every following event. Returns the previous
/// directives. A directive that does not parse changes nothing.
pub fn set_log_filter(directives: &str) -> Result<String, TelemetryError> {
    let r = RELOAD.get().ok_or(TelemetryError::NotReloadable)?;
    let directives = directives.trim();
    if directives.is_empty() {
        return Err(TelemetryError::BadLevel {
            level: String::new(),
            origin: "the admin API",
            reason: "empty filter".to_string(),
        });
    }
    // As strict as `log.level` in the config: a typo like `verbose` would otherwise parse
    // as a target name and silently turn logging off.
    crate::config::check_log_level(directives).map_err(|reason| TelemetryError::BadLevel {
        level: directives.to_string(),
        origin: "the admin API",
        reason,
    })?;
    let filter = parse(directives, "the admin API")?;
    // Held across the swap so that two concurrent changes report a consistent "previous".
    let mut current = r.current.lock().unwrap_or_else(PoisonError::into_inner);
    r.handle
        .reload(filter)
        .map_err(|e| TelemetryError::Reload(e.to_string()))?;
    Ok(std::mem::replace(&mut *current, directives.to_string()))
}

/// Restores the directives the process started with; returns the previous ones.
pub fn reset_log_filter() -> Result<String, TelemetryError> {
    let r = RELOAD.get().ok_or(TelemetryError::NotReloadable)?;
    set_log_filter(&r.initial.clone())
}
