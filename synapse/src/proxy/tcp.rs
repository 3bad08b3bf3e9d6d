//! The TCP proxy. HOT PATH: one task per connection; once the service is synced, a
//! connection costs one atomic load and one table load, never a lock.
//!
//! Per connection: load the table once, ask its balancer for up to `connect_attempts`
//! backends (`hash` on `client_ip` hashes the client's address), try them in order. Each
//! attempt is counted in the backend's live state (active connections, connect-time EWMA)
//! and reported to the outlier detector (a failure may eject the backend). The session ends
//! when both sides are done, after `idle_timeout` without traffic, or when its backend left
//! the table and its `removal_grace` is over.
//!
//! A connection accepted before the service's first sync waits for it (up to
//! `first_sync_timeout`) instead of being closed: a restarting synapse binds its listeners
//! before ZooKeeper has answered. (A table from the state file counts as a first sync; the
//! default servers stand in at the end of the timeout.) With `max_connections`, the accept
//! loop takes a permit before accepting: excess clients wait in the listen backlog. Proxied connections are closed after `idle_timeout`
//! without traffic, and both sockets have TCP keepalive, so half-open connections do not
//! hold descriptors forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use common::net::{self, Activity, Tracked};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use crate::balance::{hash_ip, Ctx, HashOn, Policy};
use crate::outlier::Failure;
use crate::service::Service;

use super::accept::{self, Limit};
use super::connect::{connect, first_sync, keepalive, prepare_client, prepare_listener, NotSynced};

/// Accepts connections until `cancel` or `stop` fires ([`accept::serve`]: backoff on
/// errors, `max_connections` permits taken before `accept`, backlog served at the end).
/// Connections are tracked in `connections` so shutdown can wait for them, and see `cancel`
/// (a connection waiting for the first sync gives up when it fires). The listener is shared
/// so that a config reload can stop this loop (`stop`) and serve the same socket with a new
/// one.
pub async fn serve(
    listener: Arc<TcpListener>,
    service: Arc<Service>,
    connections: TaskTracker,
    cancel: CancellationToken,
    stop: CancellationToken,
) {
    prepare_listener(&listener, service.config.tcp_keepalive);
    let limit = service.conn_limit.as_ref().map(|permits| Limit {
        permits,
        limited: &service.metrics.limited,
    });
    accept::serve(
        &listener,
        "proxy",
        limit,
        &cancel,
        &stop,
        |client, peer, permit| {
            spawn_connection(client, peer, &service, &connections, &cancel, permit);
        },
    )
    .await;
}

fn spawn_connection(
    client: TcpStream,
    peer: SocketAddr,
    service: &Arc<Service>,
    connections: &TaskTracker,
    cancel: &CancellationToken,
    permit: Option<OwnedSemaphorePermit>,
) {
    service.metrics.connections.inc();
    let svc = service.clone();
    let cancel = cancel.clone();
    let span = tracing::debug_span!("conn", client.addr = %peer);
    connections.spawn(
        async move {
            // Held until the connection ends: it frees a `max_connections` slot.
            let _permit = permit;
            proxy(client, peer, &svc, &cancel).await
        }
        .instrument(span),
    );
}

/// Serves the connections left in the listen backlog ([`accept::take_backlog`]).
pub(crate) fn drain_backlog(
    listener: &TcpListener,
    service: &Arc<Service>,
    connections: &TaskTracker,
    cancel: &CancellationToken,
) {
    for (client, peer) in accept::take_backlog(listener) {
        spawn_connection(client, peer, service, connections, cancel, None);
    }
}

/// How a proxied session ended.
enum End {
    Copied(std::io::Result<(u64, u64)>),
    Idle,
    Removed,
}

async fn proxy(client: TcpStream, peer: SocketAddr, service: &Service, cancel: &CancellationToken) {
    prepare_client(&client, service.config.tcp_keepalive);
    if !service.snapshot.load().synced() {
        let waited = first_sync(service, cancel).await;
        // The default servers stand in at the end of the same timeout: a tie goes to them.
        let waited = match waited {
            Err(NotSynced::TimedOut) if service.synced() => Ok(()),
            other => other,
        };
        if let Err(why) = waited {
            let rejected = &service.metrics.rejected;
            match why {
                NotSynced::TimedOut => {
                    rejected.not_synced.inc();
                    debug!(
                        waited = ?service.config.first_sync_timeout,
                        "no first sync from ZooKeeper in time; closing client connection"
                    );
                }
                NotSynced::Shutdown => rejected.shutdown.inc(),
            }
            return;
        }
    }
    let table = service.table();
    let ctx = Ctx {
        attempts: service.config.connect_attempts.get() as usize,
        key: matches!(service.config.balance, Policy::Hash(HashOn::ClientIp)).then(|| hash_ip(peer.ip())),
        ignore_ejection: table.panic().active(),
    };
    let mut chosen = None;
    for backend in table.pick(ctx) {
        let attempt = backend.state.live.on_connect_start();
        let started = Instant::now();
        match connect(backend, service.config.connect_timeout).await {
            Ok(stream) => {
                let active = attempt.on_connect_ok();
                let m = &backend.state.metrics;
                m.connect_time.observe(started.elapsed().as_secs_f64());
                backend.state.outlier.on_success();
                chosen = Some((backend.clone(), stream, active));
                break;
            }
            Err(err) => {
                attempt.on_connect_fail();
                backend.state.metrics.failures.inc();
                service
                    .outlier
                    .on_failure(backend, Failure::Connect, &service.snapshot);
                debug!(backend.addr = %backend.state.key, error = %err, "backend connect failed; trying the next");
            }
        }
    }
    // `_active` keeps the connection counted in the backend's live state until it ends.
    let Some((backend, upstream, _active)) = chosen else {
        service.metrics.no_backend.inc();
        service.metrics.rejected.no_backend.inc();
        debug!(
            backends = table.backends().len(),
            "no backend reachable; closing client connection"
        );
        return;
    };
    // Only the chosen backend is kept for the connection's life, not the whole table: a
    // long-lived connection must not keep every table it outlived (with a `hash` table's
    // 64 K slots) alive.
    drop(table);
    let _ = upstream.set_nodelay(true);
    keepalive(&upstream, service.config.tcp_keepalive);
    let m = &backend.state.metrics;
    m.connections.inc();
    m.active.inc();
    let (client_io, upstream_io) = (Activity::default(), Activity::default());
    let mut c = Tracked::new(client, &client_io);
    let mut u = Tracked::new(upstream, &upstream_io);
    let idle = net::idle(service.config.idle_timeout, || {
        client_io.total() + upstream_io.total()
    });
    // copy_bidirectional forwards a half-close (EOF) in each direction with shutdown().
    // When the idle watcher or the end of a removal grace wins, dropping the copy closes
    // both sockets.
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => End::Copied(r),
        _ = idle => End::Idle,
        _ = backend.state.closing.cancelled() => End::Removed,
    };
    m.active.dec();
    // Counted from the wrappers, so an idle timeout or an error still reports the bytes.
    service.metrics.bytes_up.inc_by(upstream_io.written());
    service.metrics.bytes_down.inc_by(client_io.written());
    match end {
        End::Copied(Ok(_)) => {}
        End::Copied(Err(err)) => {
            debug!(backend.addr = %backend.state.key, error = %err, "connection ended with an error")
        }
        End::Idle => {
            service.metrics.idle_closed.inc();
            debug!(backend.addr = %backend.state.key, timeout = ?service.config.idle_timeout, "connection idle; closed both sides");
        }
        End::Removed => {
            service.metrics.grace_closed.inc();
            debug!(backend.addr = %backend.state.key, "backend removed and its removal grace over; closed both sides");
        }
    }
}
