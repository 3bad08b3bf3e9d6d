//! Upgrades (WebSocket) passed through: the backend's `101` goes to the client, then bytes
//! are copied both ways until either side closes, `idle_timeout` passes without a byte, or
//! the backend's `removal_grace` ends.

use common::net;
use hyper::body::Incoming;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::server::Client;
use super::{headers, HttpService, RespBody};
use crate::balance::InFlight;
use crate::table::Backend;

impl HttpService {
    /// Hands the client the backend's `101` and copies bytes both ways once both sides
    /// have switched.
    pub(super) fn upgraded(
        &self,
        client: &Client,
        resp: Response<Incoming>,
        on_client: hyper::upgrade::OnUpgrade,
        on_backend: hyper::upgrade::OnUpgrade,
        in_flight: Option<InFlight>,
        backend: &Backend,
    ) -> Response<RespBody> {
        let (mut head, _) = resp.into_parts();
        headers::prepare_response(&mut head.headers, true);
        let idle_timeout = self.service.config.idle_timeout;
        let closing = backend.state.closing.clone();
        let activity = client.activity.clone();
        let key = backend.state.key.clone();
        client.tasks.spawn(async move {
            let _in_flight = in_flight;
            let (c, b) = match tokio::join!(on_client, on_backend) {
                (Ok(c), Ok(b)) => (c, b),
                (Err(err), _) | (_, Err(err)) => {
                    debug!(backend.addr = %key, error = %err, "upgrade failed");
                    return;
                }
            };
            let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
            // The client side is counted by its `Tracked` stream, under the upgrade.
            let idle = net::idle(idle_timeout, || activity.total());
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut c, &mut b) => if let Err(err) = r {
                    debug!(backend.addr = %key, error = %err, "upgraded connection ended with an error");
                },
                _ = idle => debug!(backend.addr = %key, "upgraded connection idle; closed"),
                _ = closing.cancelled() => debug!(backend.addr = %key, "backend removed and its removal grace over; upgraded connection closed"),
            }
        });
        Response::from_parts(head, RespBody::empty())
    }
}
