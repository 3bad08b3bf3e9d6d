//! What both binaries' `main` do once their CLI is parsed: load the config (or only check
//! it), set up logging and signals, and run the agent on a tokio runtime.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, LogConfig};

/// Exit code for a config that cannot be used (systemd units do not restart on it).
pub const EXIT_CONFIG: u8 = 2;

/// A config an agent can be started with.
pub trait AgentConfig: Sized {
    /// Reads and validates the file.
    fn load(file: &Path) -> Result<Self, ConfigError>;
    /// Its `log:` section.
    fn log(&self) -> &LogConfig;
    /// How many services it declares (for `--check-config`).
    fn service_count(&self) -> usize;
}

/// Runs agent `name` with the config at `file` (or only validates it when `check_only`).
pub fn main<C, F, Fut, E>(name: &str, file: &Path, check_only: bool, run: F) -> ExitCode
where
    C: AgentConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    main_reloadable(name, file, check_only, |config, signals: Signals| {
        run(config, signals.shutdown)
    })
}

/// What a reloadable agent gets besides its config.
#[derive(Debug)]
pub struct Signals {
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Bumped on each SIGHUP.
    pub reload: tokio::sync::watch::Receiver<u64>,
    /// The config file, to read again on reload.
    pub file: std::path::PathBuf,
}

/// [`main`] for an agent that reloads its config on SIGHUP.
pub fn main_reloadable<C, F, Fut, E>(name: &str, file: &Path, check_only: bool, run: F) -> ExitCode
where
    C: AgentConfig,
    F: FnOnce(C, Signals) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let config = match C::load(file) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{name}: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        if let Err(err) = crate::telemetry::filter(config.log()) {
            eprintln!("{name}: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
        println!(
            "{name}: {} is valid ({} services)",
            file.display(),
            config.service_count()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(err) = crate::telemetry::init(config.log()) {
        eprintln!("{name}: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{name}: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reload = crate::shutdown::signals(shutdown.clone()).map_err(|e| e.to_string())?;
        let signals = Signals {
            shutdown,
            reload,
            file: file.to_path_buf(),
        };
        run(config, signals).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "{name} failed");
            eprintln!("{name}: {err}");
            ExitCode::FAILURE
        }
    }
}
