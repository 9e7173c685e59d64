//! The TCP listeners, plain and TLS: accept connections and start a session
//! for each.
//!
//! Accepting never waits on a session. When accept fails for lack of
//! resources (out of file descriptors, say) the loop backs off, doubling from
//! 10 ms to 1 s, and logs once per burst instead of spinning.
//!
//! At shutdown the loop stops, and the connections still waiting in the
//! kernel's backlog, whose clients already count themselves connected, are
//! accepted and told `bye{reason:"shutdown"}` instead of being reset when
//! the listener closes.

use std::sync::Arc;
use std::time::Duration;

use anteroom_protocol::ByeReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Gateway;
use super::limits::refuse;
use super::session::run_session_since;
use super::tls::{self, TlsAcceptor};
use super::transport::ByteStream;
use crate::telemetry::{Transport, metrics};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Most connections taken from the backlog at shutdown: the backlog the
/// server asks for (more arrive only while it is being drained).
const MAX_DRAINED: usize = 4096;

/// Longest a connection drained at shutdown may take to receive its `bye`.
const GOODBYE_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// After that `bye`, how long what the client sends is read and discarded,
/// so that closing does not reset the connection while the `bye` is in
/// flight (as a session lingers).
const GOODBYE_LINGER: Duration = Duration::from_millis(500);

/// What a listener's connections speak before the frames begin.
#[derive(Clone)]
pub enum Security {
    /// Frames straight away (`listen`).
    Plain,
    /// A TLS handshake first (`tls_listen`).
    Tls(TlsAcceptor),
}

/// Accepts until the gateway's shutdown token is cancelled, then says
/// goodbye to the connections left in a plain listener's backlog (a TLS
/// listener's are closed: a goodbye there costs a handshake each).
pub async fn accept_loop(listener: TcpListener, gateway: Arc<Gateway>, security: Security) {
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            // Shutdown first: what is still in the backlog is drained below.
            biased;
            _ = gateway.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer_addr)) => {
                if backoff.take().is_some() {
                    info!("accepting again");
                }
                let accepted = tokio::time::Instant::now();
                // Frames are batched by the writer; do not add Nagle's delay.
                let _ = stream.set_nodelay(true);
                let place = match gateway.limits.admit(peer_addr.ip()) {
                    Ok(place) => place,
                    Err(why) => {
                        debug!(peer = %peer_addr, reason = why.reason(), "connection refused by the caps");
                        match &security {
                            Security::Plain => refuse(stream, why),
                            Security::Tls(acceptor) => tls::refuse(&gateway, acceptor, stream, why),
                        }
                        continue;
                    }
                };
                let span = info_span!("conn", peer = %peer_addr, conn_id = tracing::field::Empty, user = tracing::field::Empty);
                let gw = gateway.clone();
                let security = security.clone();
                gateway.tracker.spawn(
                    async move {
                        // The place under the caps lasts as long as the session.
                        let _place = place;
                        match security {
                            Security::Plain => {
                                metrics().accepted(Transport::Tcp);
                                let (reader, writer) = stream.into_split();
                                let transport = ByteStream::new(reader, writer);
                                run_session_since(gw, transport, accepted).await;
                            }
                            // On the heap: a TLS handshake's state would
                            // otherwise grow every plain connection's task.
                            Security::Tls(acceptor) => {
                                Box::pin(tls::serve(gw, &acceptor, stream, accepted)).await;
                            }
                        }
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
    if matches!(security, Security::Plain) {
        drain_backlog(listener, &gateway);
    }
}

/// Takes every connection still waiting in the kernel's backlog (without
/// waiting for more) and tells each `bye{reason:"shutdown"}`, in tasks the
/// gateway's tracker waits for like sessions.
fn drain_backlog(listener: TcpListener, gateway: &Gateway) {
    // The standard listener accepts directly: no readiness event the
    // runtime may not have seen yet decides whether a connection is there.
    let Ok(listener) = listener.into_std() else {
        return;
    };
    let mut drained = 0;
    while drained < MAX_DRAINED {
        match listener.accept() {
            Ok((stream, _)) => {
                drained += 1;
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                if let Ok(stream) = stream {
                    gateway.tracker.spawn(goodbye(stream, ByeReason::Shutdown));
                }
            }
            Err(error) if is_per_connection(&error) => {}
            // Empty, or out of descriptors: what is left is reset with the
            // listener.
            Err(_) => break,
        }
    }
    if drained > 0 {
        debug!(drained, "connections in the backlog told of the shutdown");
    }
}

/// Tells a connection that never gets a session why it is closed: its
/// `bye`, the sending side shut, then the client's input read and discarded
/// for a moment so that the close does not reset the `bye` away.
async fn goodbye(mut stream: TcpStream, reason: ByeReason) {
    let bye = reason.frame();
    let sent = tokio::time::timeout(GOODBYE_WRITE_LIMIT, async {
        stream.write_all(&bye).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(GOODBYE_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
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
