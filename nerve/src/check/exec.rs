//! `exec`: runs a command (argv, or `sh -c` with `shell: true`); exit status 0 is healthy.
//!
//! The command runs in its own process group, so that everything it starts can be killed
//! with it: on timeout, when the check is dropped (shutdown), and after it exits (a
//! background process it left behind would otherwise live on, holding its output pipes).
//! The last [`MAX_OUTPUT`] bytes of stdout and stderr are kept for the status.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

use super::{CheckError, Report, MAX_OUTPUT};
use crate::config::ExecCheck;

/// How long output is still read after the command exited or was killed: a process that
/// left the group (`setsid`) may hold the pipes open forever.
const DRAIN: Duration = Duration::from_millis(200);
/// How long killed members of the group are waited for, when nerve is their reaper (PID 1
/// in a container, or a subreaper).
const REAP: Duration = Duration::from_millis(500);

/// Runs the command once, killing its process group after `timeout`.
pub async fn run(check: &ExecCheck, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    let Some((program, args)) = check.argv.split_first() else {
        return Err(CheckError::Setup("empty command".to_string())).into();
    };
    let mut child = match Command::new(program)
        .args(args)
        .envs(&check.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return Err(CheckError::Spawn {
                program: program.clone(),
                reason: e.to_string(),
            })
            .into()
        }
    };
    // The child leads its own group: its pid is the group id.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(|id| Group::new(Pid::from_raw(id)));
    let mut output = Output::new(child.stdout.take(), child.stderr.take());

    let exited: Option<std::io::Result<ExitStatus>> = loop {
        tokio::select! {
            status = child.wait() => break Some(status),
            _ = output.read(), if output.is_open() => {}
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };
    if let Some(group) = &group {
        group.kill();
    }
    let exited = match exited {
        Some(status) => status,
        // Killed with its group just above (and directly, should it have left the group):
        // this returns at once.
        None => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            output.drain(Instant::now() + DRAIN).await;
            if let Some(group) = group {
                group.reap().await;
            }
            return Report {
                result: Err(CheckError::Timeout(timeout)),
                output: Some(output.text()),
            };
        }
    };
    output.drain(Instant::now() + DRAIN).await;
    if let Some(group) = group {
        group.reap().await;
    }
    let result = match exited {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(CheckError::Exit(describe(status))),
        Err(e) => Err(CheckError::Exit(format!("could not be waited for: {e}"))),
    };
    Report {
        result,
        output: Some(output.text()),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// The command's process group. Dropping it kills the group, so a check abandoned on
/// shutdown leaves nothing running.
#[derive(Debug)]
struct Group {
    id: Pid,
    /// Set once the group was killed and reaped: nothing left to do on drop.
    done: bool,
}

impl Group {
    fn new(id: Pid) -> Group {
        Group { id, done: false }
    }

    fn kill(&self) {
        // ESRCH: nothing left in the group.
        let _ = killpg(self.id, Signal::SIGKILL);
    }

    /// Reaps what was killed (see [`reap`]); nothing left to do on drop.
    async fn reap(mut self) {
        self.done = true;
        reap(self.id).await;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned mid-run (shutdown, a cancelled check): kill now, reap in the
            // background.
            self.kill();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(reap(self.id));
            }
        }
    }
}

/// Reaps the killed members of group `id` that were re-parented to nerve. When nerve is
/// PID 1 (a container) or a subreaper, the orphans of the command become its children and
/// would stay zombies: tokio only waits for the children it spawned. Elsewhere they belong
/// to init and this returns at once (`ECHILD`).
async fn reap(id: Pid) {
    let deadline = Instant::now() + REAP;
    loop {
        match waitpid(Pid::from_raw(-id.as_raw()), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// stdout and stderr read together into one bounded tail.
#[derive(Debug)]
struct Output {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    tail: Vec<u8>,
}

impl Output {
    fn new(stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) -> Output {
        Output {
            stdout,
            stderr,
            tail: Vec::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    /// Reads what one of the pipes has; false once both are closed. Cancel-safe.
    async fn read(&mut self) -> bool {
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        let (out_open, err_open) = (self.stdout.is_some(), self.stderr.is_some());
        if !out_open && !err_open {
            return false;
        }
        let (stdout, stderr) = (&mut self.stdout, &mut self.stderr);
        let (from_stdout, n) = tokio::select! {
            n = async { stdout.as_mut()?.read(&mut a).await.ok() }, if out_open => (true, n),
            n = async { stderr.as_mut()?.read(&mut b).await.ok() }, if err_open => (false, n),
        };
        let buf = if from_stdout { &a } else { &b };
        match n {
            Some(n) if n > 0 => self.push(&buf[..n]),
            // EOF or a read error: that pipe is done.
            _ if from_stdout => self.stdout = None,
            _ => self.stderr = None,
        }
        true
    }

    /// Reads until both pipes are closed or `until`.
    async fn drain(&mut self, until: Instant) {
        let _ = tokio::time::timeout_at(until, async { while self.read().await {} }).await;
    }

    fn push(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > MAX_OUTPUT {
            let cut = self.tail.len() - MAX_OUTPUT;
            self.tail.drain(..cut);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.tail).trim().to_string()
    }
}
