//! Prometheus helpers shared by both agents. Each binary defines its own metrics in its
//! `metrics.rs`, registered in a `Registry` it is handed (never the global default one).

use prometheus::{Encoder, Registry, TextEncoder};

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families; if one ever is
    // not, the scrape shows what was written so far rather than crashing the agent.
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %err, "metrics encoding failed");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Exports the ZooKeeper state of `sessions` (connect string → session; a connect string
/// given twice is one ensemble) as `<agent>_zk_connected{zk}` (1 while connected) and
/// `<agent>_zk_session_expirations_total{zk}` (sessions replaced by a new one after they
/// expired or were given up), kept up to date by one small task per session, which ends with
/// the session.
pub fn zk_sessions(
    agent: &str,
    registry: &Registry,
    sessions: impl IntoIterator<Item = (String, std::sync::Arc<crate::registry::Session>)>,
) -> Result<(), prometheus::Error> {
    use prometheus::{IntCounterVec, IntGaugeVec, Opts};
    let connected = IntGaugeVec::new(
        Opts::new(
            format!("{agent}_zk_connected"),
            "1 while connected to the ZooKeeper ensemble",
        ),
        &["zk"],
    )?;
    let expirations = IntCounterVec::new(
        Opts::new(
            format!("{agent}_zk_session_expirations_total"),
            "ZooKeeper sessions replaced by a new one after they expired or were given up",
        ),
        &["zk"],
    )?;
    registry.register(Box::new(connected.clone()))?;
    registry.register(Box::new(expirations.clone()))?;
    let mut seen = std::collections::BTreeSet::new();
    for (connect, session) in sessions {
        if !seen.insert(connect.clone()) {
            continue;
        }
        let up = connected.with_label_values(&[connect.as_str()]);
        let count = expirations.with_label_values(&[connect.as_str()]);
        let mut status = session.subscribe();
        tokio::spawn(async move {
            loop {
                let (is_up, epoch) = {
                    let s = status.borrow_and_update();
                    (s.connected, s.session_epoch)
                };
                up.set(i64::from(is_up));
                // The first session is epoch 1; each later one replaced an earlier one.
                count.inc_by(epoch.saturating_sub(1).saturating_sub(count.get()));
                if status.changed().await.is_err() {
                    up.set(0);
                    return;
                }
            }
        });
    }
    Ok(())
}
