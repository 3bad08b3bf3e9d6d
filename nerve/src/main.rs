//! `nerve -c FILE` runs the agent; `nerve --check-config -c FILE` only validates the file;
//! `nerve ctl ...` talks to a running nerve's maintenance API.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// nerve: health-checks local services and registers the healthy ones in ZooKeeper.
#[derive(Debug, Parser)]
#[command(version, subcommand_negates_reqs = true)]
struct Cli {
    /// Config file (.yaml, .yml or .json).
    #[arg(short, long, required = true)]
    config: Option<PathBuf>,
    /// Validate the config and exit (status 2 and every problem when it is invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operate a running nerve through its admin port (maintenance API).
    Ctl(nerve::ctl::Ctl),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Ctl(ctl)), _) => nerve::ctl::run(&ctl),
        (None, Some(config)) => common::cli::main("nerve", &config, cli.check_config, nerve::run_reloadable),
        (None, None) => ExitCode::from(common::cli::EXIT_CONFIG),
    }
}
