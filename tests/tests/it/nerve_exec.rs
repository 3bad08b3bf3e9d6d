//! nerve's `exec` check against real commands: exit status, output, environment, and the
//! process group killed whole on timeout, after exit and when the run is abandoned.
//!
//! This test process makes itself a child subreaper, as nerve is when it runs as PID 1 in a
//! container: the orphans of a killed command are re-parented to it, so a grandchild that
//! was killed but not reaped would show up here as a zombie child.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::eventually;
use nerve::check::{Check, CheckError, MAX_OUTPUT};
use nerve::config::Config;

fn exec(yaml: &str) -> Check {
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nerve.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - {{name: web, host: 127.0.0.1, port: 8080, zk_hosts: 'a:1', zk_path: /s/web, checks: [{yaml}]}}\n"
        ),
    )
    .unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    Check::new(config.services[0].checks[0].clone())
}

/// What `/proc` says of `pid`: `None` when it is gone, else its state letter (`Z`: zombie).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The pids a script wrote, one a line, once there are `n`.
fn pids(file: &Path, n: usize) -> Vec<u32> {
    eventually("the script wrote its pids", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(file).ok()?;
        let list: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (list.len() >= n).then_some(list)
    })
}

#[tokio::test]
async fn exit_status_output_and_environment() {
    let ok = exec("{type: exec, command: [test, -d, /]}").run().await;
    assert_eq!(ok.result, Ok(()));
    assert_eq!(ok.output.as_deref(), Some(""));

    let failed = exec("{type: exec, command: [sh, -c, 'echo to-stdout; echo to-stderr >&2; exit 3']}")
        .run()
        .await;
    assert_eq!(
        failed.result,
        Err(CheckError::Exit("exited with status 3".into()))
    );
    let output = failed.output.unwrap();
    assert!(
        output.contains("to-stdout") && output.contains("to-stderr"),
        "{output:?}"
    );

    // No shell unless asked: arguments are passed as they are.
    let literal = exec(r#"{type: exec, command: [echo, "$HOME; exit 1"]}"#)
        .run()
        .await;
    assert_eq!(literal.result, Ok(()));
    assert_eq!(literal.output.as_deref(), Some("$HOME; exit 1"));
    // With shell: true, `sh -c` runs the string.
    let shell = exec(r#"{type: exec, shell: true, command: "test -n \"$HOME\" && echo home=set"}"#)
        .run()
        .await;
    assert_eq!(shell.result, Ok(()), "{:?}", shell.output);
    assert_eq!(shell.output.as_deref(), Some("home=set"));

    // nerve's environment plus the configured variables and NERVE_*.
    let env = exec(
        r#"{type: exec, shell: true, env: {MODE: strict}, command: 'echo "$MODE $NERVE_SERVICE $NERVE_HOST $NERVE_PORT"; test -n "$PATH"'}"#,
    )
    .run()
    .await;
    assert_eq!(env.result, Ok(()));
    assert_eq!(env.output.as_deref(), Some("strict web 127.0.0.1 8080"));

    // A program that does not exist.
    let missing = exec("{type: exec, command: [/nonexistent/check]}").run().await;
    assert!(
        matches!(&missing.result, Err(CheckError::Spawn { program, .. }) if program == "/nonexistent/check"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn output_keeps_the_last_4_kib() {
    let r = exec(
        "{type: exec, shell: true, command: 'head -c 20000 /dev/zero | tr \"\\0\" x; echo; echo THE-END >&2; exit 1'}",
    )
    .run()
    .await;
    assert!(matches!(r.result, Err(CheckError::Exit(_))));
    let output = r.output.unwrap();
    assert!(output.len() <= MAX_OUTPUT, "{}", output.len());
    assert!(output.len() > MAX_OUTPUT - 20, "{}", output.len());
    assert!(output.ends_with("THE-END"), "{output:?}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let check = exec(&format!(
        "{{type: exec, shell: true, timeout: 500ms, env: {{PIDS: '{}'}}, \
         command: 'echo started; sleep 1000 & echo $! > \"$PIDS\"; echo $$ >> \"$PIDS\"; wait'}}",
        file.display()
    ));
    let started = Instant::now();
    let report = check.run().await;
    let took = started.elapsed();
    assert_eq!(
        report.result,
        Err(CheckError::Timeout(Duration::from_millis(500)))
    );
    assert_eq!(
        report.output.as_deref(),
        Some("started"),
        "output up to the timeout"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let list = pids(&file, 2);
    let (grandchild, shell) = (list[0], list[1]);
    // Killed and reaped by the time the check returns: no orphan, no zombie.
    assert_eq!(process_state(grandchild), None, "the sleep 1000 grandchild");
    assert_eq!(process_state(shell), None, "the shell");
}

#[tokio::test]
async fn what_a_command_leaves_behind_is_killed_when_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let check = exec(&format!(
        "{{type: exec, shell: true, timeout: 10s, env: {{PIDS: '{}'}}, \
         command: 'sleep 1000 & echo $! > \"$PIDS\"; echo healthy'}}",
        file.display()
    ));
    let started = Instant::now();
    let report = check.run().await;
    // The background sleep holds stdout open: the check must not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.result, Ok(()));
    assert_eq!(report.output.as_deref(), Some("healthy"));
    let grandchild = pids(&file, 1)[0];
    assert_eq!(process_state(grandchild), None);
}

#[tokio::test]
async fn an_abandoned_run_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let check = exec(&format!(
        "{{type: exec, shell: true, timeout: 1h, env: {{PIDS: '{}'}}, \
         command: 'sleep 1000 & echo $! > \"$PIDS\"; echo $$ >> \"$PIDS\"; wait'}}",
        file.display()
    ));
    // The check future is dropped mid-run, as on shutdown.
    let mut run = Box::pin(check.run());
    let list = tokio::select! {
        _ = &mut run => panic!("the command should still be running"),
        list = tokio::task::spawn_blocking({
            let file = file.clone();
            move || pids(&file, 2)
        }) => list.unwrap(),
    };
    drop(run);
    for pid in list {
        eventually_async_gone(pid).await;
    }
}

async fn eventually_async_gone(pid: u32) {
    integration_tests::eventually_async(
        &format!("pid {pid} gone"),
        Duration::from_secs(10),
        || async move { process_state(pid).is_none().then_some(()) },
    )
    .await;
}
