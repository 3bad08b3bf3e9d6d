//! `tracing` subscriber setup: text or JSON lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level directive does not parse.
    #[error("invalid log level {level:?} in {origin}: {reason}")]
    BadLevel {
        /// The directive given.
        level: String,
        /// Where it comes from: `RUST_LOG` or `log.level`.
        origin: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("logging already initialised")]
    AlreadySet,
}

/// The filter [`init`] installs: `RUST_LOG` when set and non-empty, else `config.level`
/// (already checked when the config was loaded). `--check-config` calls it too, so that a
/// bad `RUST_LOG` fails the check as it would fail a start.
pub fn filter(config: &LogConfig) -> Result<EnvFilter, TelemetryError> {
    let (level, origin) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => (env, "RUST_LOG"),
        _ => (config.level.clone(), "log.level"),
    };
    EnvFilter::try_new(&level).map_err(|e| TelemetryError::BadLevel {
        level,
        origin,
        reason: e.to_string(),
    })
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `config.level`.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = filter(config)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadySet)
}
