//! What both binaries' `main` do once their CLI is parsed: load the config (or only check
//! it), set up logging, signals and systemd notifications (`STATUS=`, `WATCHDOG=1`,
//! `STOPPING=1`; each agent says `READY=1` itself), and run the agent on a tokio runtime.

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, LogConfig};
use crate::shutdown::ReloadRequests;

/// What an agent's `run` gets besides its config.
#[derive(Debug)]
pub struct RunContext {
    /// Cancelled on SIGTERM / SIGINT.
    pub shutdown: CancellationToken,
    /// SIGHUP, as reload requests. An agent that does not reload drops it (SIGHUP is then
    /// logged and ignored).
    pub reload: ReloadRequests,
    /// The config file, to read again on a reload.
    pub config_file: PathBuf,
}

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
    /// Runtime threads: 1 runs everything on one thread (tokio's current-thread runtime, as
    /// linkerd2-proxy does with one core: no work-stealing queues, no cross-thread wakeups);
    /// N > 1 a multi-thread runtime with N workers; 0 one worker per CPU. Default 0.
    fn worker_threads(&self) -> usize {
        0
    }
}

/// Runs agent `name` with the config at `file` (or only validates it when `check_only`).
pub fn main<C, F, Fut, E>(name: &str, file: &Path, check_only: bool, run: F) -> ExitCode
where
    C: AgentConfig,
    F: FnOnce(C, RunContext) -> Fut,
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
    // A NOTIFY_SOCKET that cannot be used is reported, not fatal: the agent works without.
    if let Err(err) = crate::notify::init_from_env() {
        tracing::warn!(error = %err, "systemd notifications disabled");
    }
    let runtime = match config.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{name}: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reload = crate::shutdown::cancel_on_signals(shutdown.clone()).map_err(|e| e.to_string())?;
        crate::notify::status("starting");
        if let Some(period) = crate::notify::watchdog_interval() {
            tokio::spawn(crate::notify::watchdog(period));
        }
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            crate::notify::stopping("stopping: draining");
        });
        let ctx = RunContext {
            shutdown,
            reload,
            config_file: file.to_path_buf(),
        };
        run(config, ctx).await.map_err(|e| e.to_string())
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
