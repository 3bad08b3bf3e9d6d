//! `nerve -c FILE` runs the agent; `nerve --check-config -c FILE` only validates the file.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// nerve: health-checks local services and registers the healthy ones in ZooKeeper.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Config file (.yaml, .yml or .json).
    #[arg(short, long)]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match nerve::Config::load(&cli.config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("nerve: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!(
            "nerve: {} is valid ({} services)",
            cli.config.display(),
            config.services.len()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(err) = common::telemetry::init(&config.log) {
        eprintln!("nerve: {err}");
        return ExitCode::from(2);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("nerve: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: nerve::Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    common::shutdown::cancel_on_signals(shutdown.clone())?;
    nerve::run(config, shutdown).await?;
    Ok(())
}
