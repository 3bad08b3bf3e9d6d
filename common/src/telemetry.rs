//! `tracing` subscriber setup: text or JSON lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level directive does not parse.
    #[error("invalid log level {level:?}: {reason}")]
    BadLevel {
        /// The directive given.
        level: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber is already installed.
    #[error("logging already initialised")]
    AlreadySet,
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `config.level`.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env).map_err(|e| TelemetryError::BadLevel {
            level: env,
            reason: e.to_string(),
        })?,
        _ => EnvFilter::try_new(&config.level).map_err(|e| TelemetryError::BadLevel {
            level: config.level.clone(),
            reason: e.to_string(),
        })?,
    };
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
