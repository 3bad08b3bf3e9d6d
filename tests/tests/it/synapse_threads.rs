//! synapse's two runtimes: the data path on the main thread (`worker_threads: 1`), everything
//! else (admin server, ZooKeeper, watchers, writers) on the `synapse-control` thread. Checked
//! from outside, by where the CPU time goes: `/proc/<pid>/task/<tid>/stat` of each thread.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::time::{Duration, Instant};

use integration_tests::agents::{http_get, routed, who};
use integration_tests::{eventually, Backend, SynapseBuilder, Zk, ZkCluster};

const WAIT: Duration = Duration::from_secs(30);
/// CPU time (clock ticks, 10 ms each) the busy thread must spend in each phase: enough for
/// the tick granularity to be small beside it.
const BUSY_TICKS: u64 = 25;

/// The threads of `pid` by name (`comm`), with their ids.
fn threads(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let entry = entry.unwrap();
        let tid: u32 = entry.file_name().to_string_lossy().parse().unwrap();
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            out.push((tid, comm.trim_end().to_string()));
        }
    }
    out
}

/// utime + stime of one thread, in clock ticks.
fn cpu_ticks(pid: u32, tid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    // After the parenthesised comm: state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Runs `work` until thread `busy` has spent [`BUSY_TICKS`] more; returns (busy's ticks,
/// `idle`'s ticks) over that time.
fn until_busy(pid: u32, busy: u32, idle: u32, mut work: impl FnMut()) -> (u64, u64) {
    let (busy0, idle0) = (cpu_ticks(pid, busy), cpu_ticks(pid, idle));
    let deadline = Instant::now() + Duration::from_secs(120);
    while cpu_ticks(pid, busy) < busy0 + BUSY_TICKS {
        assert!(Instant::now() < deadline, "thread {busy} never got busy");
        work();
    }
    (cpu_ticks(pid, busy) - busy0, cpu_ticks(pid, idle) - idle0)
}

/// Item: the admin server and the ZooKeeper client shared the proxy's only thread, so a
/// scrape of a big config stalled connections. Now admin requests cost the control thread
/// and not the main (data) thread, and proxied connections the main thread and not the
/// control thread; both keep answering.
#[test]
fn admin_runs_on_the_control_thread_and_the_proxy_on_the_main_thread() {
    let zk = ZkCluster::standalone();
    let cs = zk.connect_string();
    let backend = Backend::start("a");
    let zkc = Zk::connect(&cs);
    zkc.create(
        "/services/web/a_0000000001",
        format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", backend.port).as_bytes(),
    );
    let synapse = SynapseBuilder::new(&cs).tcp("web").start();
    eventually("web routed", WAIT, || {
        routed(synapse.admin(), "web").filter(|b| b.len() == 1)
    });
    let pid = synapse.agent().pid();

    let all = threads(pid);
    let control: Vec<u32> = all
        .iter()
        .filter(|(_, name)| name == "synapse-control")
        .map(|(tid, _)| *tid)
        .collect();
    assert_eq!(control.len(), 1, "one synapse-control thread; threads: {all:?}");
    let control = control[0];
    // The main thread (tid = pid) runs the current-thread data runtime.
    assert!(all.iter().any(|(tid, _)| *tid == pid), "threads: {all:?}");

    // Admin work: /metrics and /ready, answered.
    let (on_control, on_main) = until_busy(pid, control, pid, || {
        let (status, body) = http_get(synapse.admin(), "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("synapse_"), "{body}");
        assert_eq!(http_get(synapse.admin(), "/ready").unwrap().0, 200);
    });
    eprintln!("admin requests: control thread {on_control} ticks, main thread {on_main}");
    assert!(
        on_main * 4 <= on_control,
        "admin requests cost the main thread {on_main} ticks beside the control thread's {on_control}"
    );

    // Data work: connections through the proxy, answered by the backend.
    let (on_main, on_control) = until_busy(pid, pid, control, || {
        assert_eq!(who(synapse.port("web")).as_deref(), Some("a"));
    });
    eprintln!("proxied connections: main thread {on_main} ticks, control thread {on_control}");
    assert!(
        on_control * 4 <= on_main,
        "proxied connections cost the control thread {on_control} ticks beside the main thread's {on_main}"
    );
}
