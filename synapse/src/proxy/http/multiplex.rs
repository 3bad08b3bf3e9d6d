//! HTTP/2 connections to backends (`backend_protocol: h2c`, and `auto` for HTTP/2 clients).
//! HOT PATH: per request, one atomic load of the backend's connection, a clone of its
//! sender and two counter updates; no lock.
//!
//! One multiplexed connection per backend (prior knowledge, no upgrade dance), opened at the
//! backend's first HTTP/2 request and shared by every request to it, each on its own stream:
//! the service's policy balances requests, not connections. Streams beyond the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` wait in hyper's queue for a free slot. The connection is
//! replaced when it closes (the backend's GOAWAY, an error, a keepalive ping unanswered);
//! closed by the sweeper once no stream was open on it for `pool_idle_timeout` (its last
//! streams finish first); and closed at once when the backend has left the table and its
//! `removal_grace` is over.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2::SendRequest;
use prometheus::IntGauge;

use super::body::ReqBody;
use crate::balance::now_ns;

/// HTTP/2 PING to a backend after this long without a frame from it: 5 min, the shortest
/// interval gRPC servers accept by default without data (their `min_recv_ping_interval`;
/// faster pings get the connection closed with `ENHANCE_YOUR_CALM`). Idle connections are
/// closed after `pool_idle_timeout` anyway; TCP keepalive (`tcp_keepalive`) finds a vanished
/// host sooner.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);
/// A PING unanswered for this long closes the connection: 20 s.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest response header list accepted from a backend: 64 KiB.
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// The HTTP/2 connection of one backend, if any.
#[derive(Debug, Default)]
pub struct Multiplex {
    link: ArcSwapOption<Link>,
    /// Held while connecting: requests arriving meanwhile wait for that connection rather
    /// than opening their own.
    pub(super) connecting: tokio::sync::Mutex<()>,
}

/// One open HTTP/2 connection.
#[derive(Debug)]
pub struct Link {
    sender: SendRequest<ReqBody>,
    /// Streams open on it.
    open: AtomicUsize,
    /// When its last stream ended ([`now_ns`] clock).
    idle_since_ns: AtomicU64,
}

impl Link {
    /// A new link for a connection's sender.
    pub fn new(sender: SendRequest<ReqBody>) -> Link {
        Link {
            sender,
            open: AtomicUsize::new(0),
            idle_since_ns: AtomicU64::new(now_ns()),
        }
    }

    /// Opens a stream: a sender for one request, and the guard that counts the stream open
    /// until it is dropped (at the end of the response body).
    pub fn open(self: &Arc<Link>, gauge: &IntGauge) -> (SendRequest<ReqBody>, Stream) {
        self.open.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        (
            self.sender.clone(),
            Stream {
                link: self.clone(),
                gauge: gauge.clone(),
            },
        )
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// An open stream; dropping it closes it in the counts.
#[derive(Debug)]
pub struct Stream {
    link: Arc<Link>,
    gauge: IntGauge,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.gauge.dec();
        if self.link.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.link.idle_since_ns.store(now_ns(), Ordering::Relaxed);
        }
    }
}

impl Multiplex {
    /// The connection, unless there is none or it closed.
    pub fn current(&self) -> Option<Arc<Link>> {
        let link = self.link.load_full()?;
        if link.sender.is_closed() {
            return None;
        }
        Some(link)
    }

    /// Makes `link` the backend's connection.
    pub fn install(&self, link: Arc<Link>) {
        self.link.store(Some(link));
    }

    /// Lets go of a connection that closed, or that had no stream for `idle_timeout`: it
    /// closes once its last streams are done. Returns whether one is left.
    pub fn sweep(&self, idle_timeout: Duration) -> bool {
        let Some(link) = self.link.load_full() else {
            return false;
        };
        let idle_ns = u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        let idle = link.open.load(Ordering::Relaxed) == 0
            && now_ns().saturating_sub(link.idle_since_ns.load(Ordering::Relaxed)) >= idle_ns;
        if link.sender.is_closed() || idle {
            // Only the connection looked at: a newer one installed meanwhile stays.
            let _ = self.link.compare_and_swap(&link, None);
            return false;
        }
        true
    }
}
