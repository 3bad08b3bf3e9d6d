//! `nerve -c FILE` runs the agent; `nerve --check-config -c FILE` only validates the file;
//! `nerve --takeover -c FILE` takes the running nerve's registrations over (an upgrade that
//! keeps the nodes); `nerve ctl ...` talks to a running nerve's maintenance API.
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
    /// Resume the ZooKeeper sessions (and so keep the nodes) of the nerve serving the
    /// config's `upgrade_socket`, which then exits. With no nerve there, start as usual.
    #[arg(long)]
    takeover: bool,
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
        (None, Some(config)) => {
            let takeover = cli.takeover;
            common::cli::main("nerve", &config, cli.check_config, move |c, ctx| {
                nerve::run_upgradable(c, ctx, takeover)
            })
        }
        (None, None) => ExitCode::from(common::cli::EXIT_CONFIG),
    }
}
