//! `synapse -c FILE` runs the agent; `synapse --check-config -c FILE` only validates the file;
//! `synapse --takeover -c FILE` takes over from the synapse serving the config's
//! `upgrade_socket` (an upgrade without a lost connection).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// synapse: routes localhost connections to the services registered in ZooKeeper.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Config file (.yaml, .yml or .json).
    #[arg(short, long)]
    config: PathBuf,
    /// Validate the config and exit (status 2 and every problem when it is invalid).
    #[arg(long)]
    check_config: bool,
    /// Take the listening sockets and routes of the synapse serving `upgrade_socket`, serve
    /// them, then let that one drain and exit. With no synapse there, start as usual.
    #[arg(long)]
    takeover: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: this unsets LISTEN_FDS / LISTEN_PID.
    let inherited = if cli.check_config {
        synapse::handoff::Inherited::default()
    } else {
        match synapse::handoff::Inherited::from_systemd() {
            Ok(i) => i,
            Err(err) => {
                eprintln!("synapse: {err}");
                return ExitCode::FAILURE;
            }
        }
    };
    let upgrade = synapse::handoff::Upgrade {
        takeover: cli.takeover,
        inherited,
    };
    common::cli::main("synapse", &cli.config, cli.check_config, move |config, ctx| {
        synapse::run_upgradable(config, ctx, upgrade)
    })
}
