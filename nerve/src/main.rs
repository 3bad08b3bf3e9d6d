//! `nerve -c FILE` runs the agent; `nerve --check-config -c FILE` only validates the file.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// nerve: health-checks local services and registers the healthy ones in ZooKeeper.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Config file (.yaml, .yml or .json).
    #[arg(short, long)]
    config: PathBuf,
    /// Validate the config and exit (status 2 and every problem when it is invalid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // nerve does not reload its config yet: dropping the reload requests makes SIGHUP a
    // logged no-op.
    common::cli::main("nerve", &cli.config, cli.check_config, |config, ctx| {
        nerve::run(config, ctx.shutdown)
    })
}
