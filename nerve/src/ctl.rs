//! `nerve ctl`: the maintenance API for operators who do not want curl. One HTTP/1.1
//! request to the admin port (localhost by default), the JSON answer printed; exit status 0
//! on a 2xx answer, 1 otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

/// `nerve ctl <action> [service] [--force] [--wait 5s] [--admin 127.0.0.1:3421]`.
#[derive(Debug, clap::Args)]
pub struct Ctl {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
    /// nerve's admin address.
    #[arg(long, global = true, default_value = "127.0.0.1:3421")]
    pub admin: String,
}

/// A maintenance action.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Deregister a service (every service without a name), or mark it unavailable when it
    /// has `expose_unavailable`.
    Disable {
        /// The service; every service when absent.
        service: Option<String>,
        /// Wait until ZooKeeper holds the new state (e.g. `10s`), at most 5m.
        #[arg(long)]
        wait: Option<String>,
    },
    /// Undo `disable`.
    Enable {
        /// The service; every service when absent (the global disable only).
        service: Option<String>,
        /// Register even when the checks fail.
        #[arg(long)]
        force: bool,
    },
    /// Set a service's weight (0..=255), or `reset` to the configured one.
    Weight {
        /// The service.
        service: String,
        /// The weight, or `reset`.
        weight: String,
    },
    /// Print the status.
    Status,
    /// Exit without deregistering: the ZooKeeper sessions (and so the nodes) are left for
    /// a nerve started with `--takeover` within the session timeout (needs `upgrade_socket`).
    Park,
}

/// Runs the action; prints the answer.
pub fn run(ctl: &Ctl) -> ExitCode {
    let (method, path) = match &ctl.action {
        Action::Disable { service, wait } => {
            let base = match service {
                Some(s) => format!("/services/{s}/disable"),
                None => "/disable".to_string(),
            };
            let q = wait.as_ref().map(|w| format!("?wait={w}")).unwrap_or_default();
            ("POST", base + &q)
        }
        Action::Enable { service, force } => {
            let base = match service {
                Some(s) => format!("/services/{s}/enable"),
                None => "/enable".to_string(),
            };
            ("POST", base + if *force { "?force=true" } else { "" })
        }
        Action::Weight { service, weight } => ("POST", format!("/services/{service}/weight/{weight}")),
        Action::Status => ("GET", "/status".to_string()),
        Action::Park => ("POST", "/park".to_string()),
    };
    match request(&ctl.admin, method, &path) {
        Ok((code, body)) => {
            print!("{body}");
            if (200..300).contains(&code) || (path == "/status" && code == 503) {
                ExitCode::SUCCESS
            } else {
                eprintln!("nerve ctl: {method} {path}: HTTP {code}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("nerve ctl: cannot reach nerve at {}: {e}", ctl.admin);
            ExitCode::FAILURE
        }
    }
}

fn request(admin: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(admin)?;
    // A disable may wait up to 5 minutes for ZooKeeper.
    stream.set_read_timeout(Some(Duration::from_secs(330)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    Ok((code, body.to_string()))
}
