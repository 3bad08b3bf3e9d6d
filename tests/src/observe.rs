//! [`NodeCounter`]: counts an instance's nodes under a path as often as it can, from a client
//! of its own that gives a lost server up at once (a new session, fail-eagerly), so that a
//! duplicate node is seen even while the ensemble elects a leader.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use zookeeper_client as zkc;

/// The most children of `path` starting with `prefix` seen at once, polled every few
/// milliseconds until dropped.
#[derive(Debug)]
pub struct NodeCounter {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl NodeCounter {
    /// Starts polling through `connect` (a connect string).
    pub fn start(connect: &str, path: &str, prefix: &str) -> NodeCounter {
        let (stop, max, polls) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, m, p) = (stop.clone(), max.clone(), polls.clone());
        let (connect, path, prefix) = (connect.to_string(), path.to_string(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut client: Option<zkc::Client> = None;
                while !s.load(Ordering::Relaxed) {
                    if client.is_none() {
                        let attempt = zkc::Client::connector()
                            .with_session_timeout(Duration::from_secs(4))
                            .with_connection_timeout(Duration::from_millis(300))
                            .with_fail_eagerly()
                            .connect(&connect);
                        client = tokio::time::timeout(Duration::from_secs(2), attempt)
                            .await
                            .ok()
                            .and_then(Result::ok);
                    }
                    let Some(c) = &client else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    match tokio::time::timeout(Duration::from_millis(500), c.list_children(&path)).await {
                        Ok(Ok(children)) => {
                            let n = children.iter().filter(|c| c.starts_with(&prefix)).count();
                            m.fetch_max(n, Ordering::Relaxed);
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(zkc::Error::NoNode)) => {}
                        _ => client = None,
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        });
        NodeCounter {
            stop,
            max,
            polls,
            thread: Some(thread),
        }
    }

    /// The most nodes seen at once so far.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Listings done so far.
    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::Relaxed)
    }
}

impl Drop for NodeCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
