//! The control thread: one current-thread tokio runtime on a std thread named
//! `synapse-control`, beside the data path's runtime (the one `worker_threads` sizes).
//!
//! Everything that is not the data path runs there: each service's watcher (ZooKeeper
//! sessions and watches, table builds, their `spawn_blocking` pool), the admin server
//! (`/metrics`, `/stats`, `/services` rendering), the state-file and `file_output` writers,
//! the ZooKeeper metrics and systemd readiness. A scrape or a big table build then never
//! holds up a connection. The two runtimes talk only through what works across runtimes:
//! `ArcSwap` snapshots, tokio `watch`/`mpsc` channels, `CancellationToken`s, `TaskTracker`s
//! and join handles.
//!
//! An I/O object is driven by the reactor of the runtime current when it was created or
//! registered: whatever the control thread serves must be created inside
//! [`ControlThread::handle`]'s context (`handle.enter()` or a task spawned on it).
//!
//! The runtime lives and dies on its own thread (`block_on` until stopped, then dropped
//! there), so it is never dropped inside an async context.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The name of the control thread (at most 15 bytes: what Linux keeps in `comm`).
pub const THREAD_NAME: &str = "synapse-control";

/// The name of the control runtime's blocking threads (table builds, file writes).
const BLOCKING_THREAD_NAME: &str = "synapse-ctl-blk";

/// The control thread and its runtime; stopped by [`ControlThread::stop`] (or, blocking, on
/// drop).
#[derive(Debug)]
pub struct ControlThread {
    handle: Handle,
    stop: CancellationToken,
    /// Fires once the runtime is dropped (its tasks with it).
    stopped: Option<oneshot::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlThread {
    /// Starts the thread and its runtime. Blocks the caller until the runtime is built.
    pub fn start() -> std::io::Result<ControlThread> {
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let (stopped_tx, stopped) = oneshot::channel();
        let stop = CancellationToken::new();
        let stop_rx = stop.clone();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name(BLOCKING_THREAD_NAME)
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(stop_rx.cancelled());
                // Outside `block_on`: the tasks left (sessions closing, idle timers) are
                // dropped here, and the blocking threads joined.
                drop(rt);
                let _ = stopped_tx.send(());
            })?;
        let handle = match handle_rx.recv() {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(std::io::Error::other("the control thread ended while starting"));
            }
        };
        Ok(ControlThread {
            handle,
            stop,
            stopped: Some(stopped),
            thread: Some(thread),
        })
    }

    /// The control runtime: spawn on it, or `enter()` it to create what it must drive.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime (the tasks still on it are dropped) and waits for the thread to
    /// end, without blocking the caller's runtime. Call it once the agent is down.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
        // The thread has nothing left to do but return.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlThread {
    /// On an early return: stops the runtime and joins the thread (blocking, briefly: the
    /// control runtime holds no long work).
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_tasks_on_its_named_thread_and_stops() {
        let control = ControlThread::start().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let name = control
                .handle()
                .spawn(async { std::thread::current().name().map(str::to_string) })
                .await
                .unwrap();
            assert_eq!(name.as_deref(), Some(THREAD_NAME));
            // A task left running is dropped at stop, not waited for.
            let pending = control.handle().spawn(std::future::pending::<()>());
            control.stop().await;
            assert!(pending.await.unwrap_err().is_cancelled());
        });
    }

    #[test]
    fn dropped_outside_async_joins() {
        let control = ControlThread::start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        control.handle().spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_string));
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some(THREAD_NAME));
        drop(control);
    }
}
