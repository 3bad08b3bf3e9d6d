//! The TCP proxy. HOT PATH: one task per connection; the route table is loaded once per
//! connection, never locked.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

use crate::service::Service;
use crate::table::{Backend, Target};

/// Accepts connections until `cancel` fires. Accept errors (e.g. too many open files) are
/// logged and retried after a pause; the loop never dies. Connections are tracked in
/// `connections` so shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    connections: TaskTracker,
    cancel: CancellationToken,
) {
    let mut pause = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        let (client, peer) = match accepted {
            Ok(c) => {
                pause = Duration::from_millis(5);
                c
            }
            Err(err) => {
                warn!(error = %err, retry_in = ?pause, "accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        service.metrics.connections.inc();
        let svc = service.clone();
        let span = tracing::debug_span!("conn", client.addr = %peer);
        connections.spawn(async move { proxy(client, &svc).await }.instrument(span));
    }
}

async fn proxy(mut client: TcpStream, service: &Service) {
    let table = service.table.load_full();
    let attempts = service.config.connect_attempts.get() as usize;
    let mut chosen = None;
    for backend in table.pick(attempts) {
        match connect(backend, service.config.connect_timeout).await {
            Ok(stream) => {
                chosen = Some((backend, stream));
                break;
            }
            Err(err) => {
                backend.state.metrics.failures.inc();
                debug!(backend.addr = %backend.state.key, error = %err, "backend connect failed; trying the next");
            }
        }
    }
    let Some((backend, mut upstream)) = chosen else {
        service.metrics.no_backend.inc();
        debug!(
            backends = table.backends().len(),
            "no backend reachable; closing client connection"
        );
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let m = &backend.state.metrics;
    m.connections.inc();
    m.active.inc();
    // copy_bidirectional forwards a half-close (EOF) in each direction with shutdown().
    let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    m.active.dec();
    match result {
        Ok((up, down)) => {
            service.metrics.bytes_up.inc_by(up);
            service.metrics.bytes_down.inc_by(down);
        }
        Err(err) => debug!(backend.addr = %backend.state.key, error = %err, "connection ended with an error"),
    }
}

async fn connect(backend: &Backend, timeout: Duration) -> std::io::Result<TcpStream> {
    let fut = async {
        match &backend.target {
            Target::Addr(addr) => TcpStream::connect(addr).await,
            Target::Host(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}
