//! QUIC (`quic_listen`): UDP on the wire, TLS 1.3 inside, ALPN
//! `anteroom/1`. A client opens one bidirectional stream, which carries the
//! TCP framing unchanged; the session sees it as any byte stream.
//!
//! Address validation: every new connection from an address QUIC has not
//! validated is sent a Retry first, so a packet with a spoofed source
//! address gets one small Retry and no connection state, handshake or
//! place under the caps. The caps are keyed by address; only a validated
//! address, as after TCP's own handshake, is charged. The price is one
//! round trip per connection.
//!
//! Departures map as on TCP: closing the stream, resetting it, closing the
//! connection or losing it (QUIC's idle timeout, set a little longer than
//! `idle_timeout` so that the session's own timeout and its `bye` come
//! first) all end the session as a disconnect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anteroom_protocol::ByeReason;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::Gateway;
use super::session::{HandshakeGauge, run_session_since};
use super::transport::ByteStream;
use crate::certs::Certificates;
use crate::config::Config;
use crate::telemetry::{Transport, metrics};

/// How much longer than `idle_timeout` QUIC waits for a silent peer.
const IDLE_MARGIN: Duration = Duration::from_secs(5);

/// After the session, how long the client has to take its `bye` and close
/// before the server closes the connection.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Bytes QUIC buffers for sending on one connection, as a socket buffer
/// does for TCP. quinn's default (10 MB) would hide a slow consumer from
/// its outbox, and the outbox's limits from the operator.
const SEND_WINDOW: u64 = 256 * 1024;

/// Receive and send buffers asked of the one UDP socket all QUIC connections
/// share. The default (about 200 KB) overflows in a burst of handshakes or
/// under a room's acknowledgements, and every drop costs a retransmission.
/// The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
const UDP_BUFFER: usize = 8 << 20;

/// Longest a refused client's handshake and `bye` may take.
const REFUSAL_LIMIT: Duration = Duration::from_secs(2);

/// Binds the QUIC endpoint for `addr`.
pub fn bind(
    addr: SocketAddr,
    certs: &Arc<Certificates>,
    config: &Config,
) -> std::io::Result<Endpoint> {
    let crypto = QuicServerConfig::try_from(certs.quic_config()).map_err(std::io::Error::other)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout + IDLE_MARGIN)
        .map_err(std::io::Error::other)?;
    // What a client may send before the session reads it: two largest
    // frames, not quinn's default of a megabyte or more per connection.
    let receive =
        VarInt::from_u32(u32::try_from((config.max_frame_bytes + 4) * 2).unwrap_or(u32::MAX));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(receive)
        .receive_window(receive)
        .send_window(SEND_WINDOW)
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(idle))
        // Keeps NAT bindings open between the session's own pings.
        .keep_alive_interval(Some(config.heartbeat_interval));
    server.transport_config(Arc::new(transport));
    let socket = udp_socket(addr)?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer than asked is still a working socket.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Accepts until the gateway's shutdown token is cancelled.
pub async fn accept_loop(endpoint: Endpoint, gateway: Arc<Gateway>) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = gateway.shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let accepted = Instant::now();
        let peer = incoming.remote_address();
        if !incoming.remote_address_validated() && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        let place = match gateway.limits.admit(peer.ip()) {
            Ok(place) => place,
            Err(why) => {
                debug!(%peer, reason = why.reason(), "QUIC connection refused by the caps");
                metrics().rejected(why.reason());
                refuse(&gateway, incoming);
                continue;
            }
        };
        let span = info_span!("conn", %peer, conn_id = tracing::field::Empty, user = tracing::field::Empty);
        let gw = gateway.clone();
        gateway.tracker.spawn(
            async move {
                let _place = place;
                serve(gw, incoming, accepted).await;
            }
            .instrument(span),
        );
    }
}

/// Runs one QUIC connection: the handshake and the stream, then a session.
async fn serve(gateway: Arc<Gateway>, incoming: Incoming, accepted: Instant) {
    let Some((connection, send, recv)) = handshake(&gateway, incoming, accepted).await else {
        return;
    };
    metrics().accepted(Transport::Quic);
    run_session_since(gateway, ByteStream::new(recv, send), accepted).await;
    // The stream is finished; closing the connection now could discard the
    // `bye` still in flight, so the client gets a moment to close first.
    let _ = tokio::time::timeout(CLOSE_LINGER, connection.closed()).await;
    connection.close(VarInt::from_u32(0), b"");
}

async fn handshake(
    gateway: &Gateway,
    incoming: Incoming,
    accepted: Instant,
) -> Option<(Connection, SendStream, RecvStream)> {
    let _counted = HandshakeGauge::new();
    let deadline = accepted + gateway.config.handshake_timeout;
    let connecting = incoming.accept().ok()?;
    let opened = async {
        let connection = connecting.await?;
        let (send, recv) = connection.accept_bi().await?;
        Ok::<_, quinn::ConnectionError>((connection, send, recv))
    };
    let outcome = tokio::select! {
        _ = gateway.shutdown.cancelled() => return None,
        outcome = tokio::time::timeout_at(deadline, opened) => outcome,
    };
    match outcome {
        Ok(Ok(opened)) => Some(opened),
        Ok(Err(error)) => {
            debug!(%error, "QUIC handshake failed");
            None
        }
        Err(_) => {
            debug!("no QUIC stream within handshake_timeout");
            None
        }
    }
}

/// Refuses a connection over the caps with `bye{server_full}` on its
/// stream, in a task bounded by the gateway's refusal slots; past them (a
/// flood) QUIC refuses it bare.
fn refuse(gateway: &Gateway, incoming: Incoming) {
    let Ok(slot) = gateway.refusals.clone().try_acquire_owned() else {
        incoming.refuse();
        return;
    };
    gateway.tracker.spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REFUSAL_LIMIT, async {
            let connection = incoming.accept()?.await?;
            let (mut send, _recv) = connection.accept_bi().await?;
            send.write_all(&ByeReason::ServerFull.frame())
                .await
                .map_err(std::io::Error::from)?;
            let _ = send.finish();
            let _ = tokio::time::timeout(CLOSE_LINGER, connection.closed()).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await;
    });
}
