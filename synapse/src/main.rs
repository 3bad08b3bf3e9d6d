//! `synapse -c FILE` runs the agent; `synapse --check-config -c FILE` only validates the file.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// synapse: routes localhost connections to the services registered in ZooKeeper.
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
    let config = match synapse::Config::load(&cli.config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("synapse: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!(
            "synapse: {} is valid ({} services)",
            cli.config.display(),
            config.services.len()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(err) = common::telemetry::init(&config.log) {
        eprintln!("synapse: {err}");
        return ExitCode::from(2);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("synapse: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(config: synapse::Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    common::shutdown::cancel_on_signals(shutdown.clone())?;
    synapse::run(config, shutdown).await?;
    Ok(())
}
