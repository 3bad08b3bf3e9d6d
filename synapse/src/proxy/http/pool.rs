//! Keep-alive connections to one backend. HOT PATH: a checkout and a checkin per request,
//! each a lock-free queue operation (`crossbeam_queue::ArrayQueue`), no allocation.
//!
//! The pool lives in the backend's [`crate::backend::BackendState`] (its `slot`) (created at the backend's
//! first request), so it is carried from one route table to the next like the rest of the
//! backend's live state, and dropped with it: the connections of a backend that left the
//! table and drained close then, or at the end of its `removal_grace`.
//!
//! A connection goes back to the pool when its response body was read to the end; at most
//! `pool_max_idle` wait there (more are closed), and one unused for `pool_idle_timeout` is
//! closed (at the next checkout, or by the service's sweeper within a quarter of the
//! timeout). A connection the backend closed is noticed by hyper and skipped at checkout.

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1::SendRequest;

use super::body::ReqBody;
use super::multiplex::Multiplex;
use crate::balance::now_ns;
use crate::metrics::HttpBackendMetrics;

/// What an HTTP service keeps per backend.
#[derive(Debug)]
pub struct HttpBackend {
    /// Idle keep-alive connections (HTTP/1.1).
    pub pool: Pool,
    /// The multiplexed HTTP/2 connection.
    pub h2: Multiplex,
    /// Metric handles.
    pub metrics: HttpBackendMetrics,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<ReqBody>,
    /// When it went idle ([`now_ns`] clock).
    since_ns: u64,
}

/// Idle keep-alive connections to one backend, oldest first.
#[derive(Debug)]
pub struct Pool {
    /// None when pooling is off (`pool_max_idle: 0`).
    idle: Option<ArrayQueue<Idle>>,
    idle_timeout_ns: u64,
}

impl Pool {
    /// A pool of at most `max_idle` idle connections, each closed after `idle_timeout`
    /// unused.
    pub fn new(max_idle: u32, idle_timeout: std::time::Duration) -> Pool {
        Pool {
            idle: (max_idle > 0).then(|| ArrayQueue::new(max_idle as usize)),
            idle_timeout_ns: u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// An idle connection that is still open and fresh at `now` ([`now_ns`] clock), if any.
    /// It may still be finishing its previous exchange: the caller waits for `ready()`.
    pub fn checkout(&self, now: u64) -> Option<SendRequest<ReqBody>> {
        let idle = self.idle.as_ref()?;
        while let Some(c) = idle.pop() {
            if c.sender.is_closed() {
                continue;
            }
            if now.saturating_sub(c.since_ns) >= self.idle_timeout_ns {
                continue;
            }
            return Some(c.sender);
        }
        None
    }

    /// Gives a connection back; closed when the pool is full or off, or it is closing.
    pub fn checkin(&self, sender: SendRequest<ReqBody>) {
        let Some(idle) = self.idle.as_ref() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let _ = idle.push(Idle {
            sender,
            since_ns: now_ns(),
        });
    }

    /// Closes the connections idle for `pool_idle_timeout` or closed by the backend; returns
    /// how many are left.
    pub fn sweep(&self) -> usize {
        let Some(idle) = self.idle.as_ref() else {
            return 0;
        };
        let now = now_ns();
        // Entries pushed meanwhile are looked at next time.
        for _ in 0..idle.len() {
            let Some(c) = idle.pop() else { break };
            if c.sender.is_closed() || now.saturating_sub(c.since_ns) >= self.idle_timeout_ns {
                continue;
            }
            let _ = idle.push(c);
        }
        idle.len()
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.idle.as_ref().map_or(0, ArrayQueue::len)
    }
}
