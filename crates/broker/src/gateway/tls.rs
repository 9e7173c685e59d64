//! TLS over TCP (`tls_listen`): the handshake, then the TCP framing inside.
//!
//! The handshake runs in the connection's own task, under
//! `handshake_timeout` counted from the TCP accept, so a client that never
//! completes one costs a task and a timer and delays nobody; it is closed
//! without a `bye`, having no channel to read one on. The accept loop is
//! the plain listener's ([`super::listener`]).

use std::sync::Arc;
use std::time::Duration;

use anteroom_protocol::ByeReason;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tracing::debug;

pub use tokio_rustls::TlsAcceptor;

use super::Gateway;
use super::limits::Refusal;
use super::session::{HandshakeGauge, run_session_since};
use super::transport::ByteStream;
use crate::telemetry::{Transport, metrics};

/// Longest a refused client's handshake and `bye` may take.
const REFUSAL_LIMIT: Duration = Duration::from_secs(2);

/// Runs one TLS connection: the handshake, then a session.
pub async fn serve(
    gateway: Arc<Gateway>,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    accepted: Instant,
) {
    let Some(tls) = handshake(&gateway, acceptor, stream, accepted).await else {
        return;
    };
    metrics().accepted(Transport::Tls);
    let (reader, writer) = tokio::io::split(tls);
    run_session_since(gateway, ByteStream::new(reader, writer), accepted).await;
}

async fn handshake(
    gateway: &Gateway,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    accepted: Instant,
) -> Option<TlsStream<TcpStream>> {
    let _counted = HandshakeGauge::new();
    let deadline = accepted + gateway.config.handshake_timeout;
    let outcome = tokio::select! {
        _ = gateway.shutdown.cancelled() => return None,
        outcome = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => outcome,
    };
    match outcome {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("no TLS handshake within handshake_timeout");
            None
        }
    }
}

/// Refuses a connection over the caps: like the plain listener, with
/// `bye{server_full}`, which here needs a handshake first. Those run in
/// tasks bounded by the gateway's refusal slots; past them (a flood) the
/// connection is closed bare.
pub fn refuse(gateway: &Gateway, acceptor: &TlsAcceptor, stream: TcpStream, why: Refusal) {
    metrics().rejected(why.reason());
    let Ok(slot) = gateway.refusals.clone().try_acquire_owned() else {
        return;
    };
    let acceptor = acceptor.clone();
    gateway.tracker.spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REFUSAL_LIMIT, async {
            let mut tls = acceptor.accept(stream).await?;
            tls.write_all(&ByeReason::ServerFull.frame()).await?;
            tls.shutdown().await
        })
        .await;
    });
}
