//! The TCP listener: accepts connections and starts a session for each.
//!
//! Accepting never waits on a session. When accept fails for lack of
//! resources (out of file descriptors, say) the loop backs off, doubling from
//! 10 ms to 1 s, and logs once per burst instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Gateway;
use super::limits::refuse;
use super::session::run_session;
use super::transport::ByteStream;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts until the gateway's shutdown token is cancelled.
pub async fn accept_loop(listener: TcpListener, gateway: Arc<Gateway>) {
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            _ = gateway.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer_addr)) => {
                if backoff.take().is_some() {
                    info!("accepting again");
                }
                // Frames are batched by the writer; do not add Nagle's delay.
                let _ = stream.set_nodelay(true);
                let place = match gateway.limits.admit(peer_addr.ip()) {
                    Ok(place) => place,
                    Err(why) => {
                        debug!(peer = %peer_addr, reason = why.reason(), "connection refused by the caps");
                        refuse(stream, why);
                        continue;
                    }
                };
                let (reader, writer) = stream.into_split();
                let span = info_span!("conn", peer = %peer_addr, conn_id = tracing::field::Empty, user = tracing::field::Empty);
                let session = run_session(gateway.clone(), ByteStream::new(reader, writer));
                gateway.tracker.spawn(
                    async move {
                        // The place under the caps lasts as long as the session.
                        let _place = place;
                        session.await;
                    }
                    .instrument(span),
                );
            }
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                let delay = match backoff {
                    None => {
                        warn!(%error, "accept failed; backing off until it succeeds");
                        FIRST_BACKOFF
                    }
                    Some(d) => (d * 2).min(MAX_BACKOFF),
                };
                backoff = Some(delay);
                tokio::select! {
                    _ = gateway.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
}
