//! `exec`: runs a command (argv, or `sh -c` with `shell: true`); exit status 0 is healthy.
//!
//! The command runs in its own process group, so that everything it starts can be killed
//! with it: on timeout, when the check is dropped (shutdown), and after it exits (a
//! background process it left behind would otherwise live on, holding its output pipes).
//! The last [`MAX_OUTPUT`] bytes of its output are kept for the status: stdout and stderr
//! share one pipe (as `2>&1`), so the tail keeps the order in which the command wrote.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
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
    let spawn_error = |e: std::io::Error| CheckError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    };
    // One pipe for both streams; close-on-exec so that commands run at the same time by
    // other checks do not inherit (and hold open) this one's ends.
    let (reader, writer) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(std::io::Error::from)
        .and_then(|(r, w)| Ok((pipe::Receiver::from_owned_fd(r)?, w)))
    {
        Ok(ends) => ends,
        Err(e) => return Err(spawn_error(e)).into(),
    };
    let stderr = match writer.try_clone() {
        Ok(fd) => fd,
        Err(e) => return Err(spawn_error(e)).into(),
    };
    // The command (and with it the parent's copies of the write end) is dropped right after
    // the spawn, so the pipe ends when the command's group has closed it.
    let spawned = Command::new(program)
        .args(args)
        .envs(&check.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Err(spawn_error(e)).into(),
    };
    // The child leads its own group: its pid is the group id.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(|id| Group::new(Pid::from_raw(id)));
    let mut output = Output::new(reader);

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

/// The command's output (stdout and stderr, one pipe) read into one bounded tail.
#[derive(Debug)]
struct Output {
    pipe: Option<pipe::Receiver>,
    tail: Vec<u8>,
}

impl Output {
    fn new(pipe: pipe::Receiver) -> Output {
        Output {
            pipe: Some(pipe),
            tail: Vec::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.pipe.is_some()
    }

    /// Reads what the pipe has; false once it is closed. Cancel-safe.
    async fn read(&mut self) -> bool {
        let Some(pipe) = self.pipe.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 4096];
        match pipe.read(&mut buf).await {
            Ok(n) if n > 0 => self.push(&buf[..n]),
            // EOF or a read error: the output is over.
            _ => self.pipe = None,
        }
        true
    }

    /// Reads until the pipe is closed or `until`.
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
