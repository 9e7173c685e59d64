//! The bench's WebSocket clients of anteroom's web listener, as lean as its
//! TCP ones: a TCP connection from the spread of source addresses, the
//! HTTP upgrade written by hand (`GET /ws`, subprotocol `anteroom.v1`), the
//! `101` response's headers read and its status checked, then raw frames.
//!
//! Each binary message carries one MessagePack map, without the length
//! prefix of the TCP protocol. What a client sends is masked, as RFC 6455
//! requires, with one fixed masking key; what the server sends is not, and
//! the fan-out's reader finds its frame boundaries with a minimal parser
//! ([`crate::fanout::ws_frame`]). The join (`hello`, then `welcome` or
//! `queued`) is done on the raw frames too.

use std::net::SocketAddr;

use anteroom_client::protocol::{ClientMessage, ServerMessage};
use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fanout::{WsFrame, ws_frame};
use crate::transport::HANDSHAKE_TIMEOUT;

/// The subprotocol of anteroom's WebSocket sessions.
const SUBPROTOCOL: &str = "anteroom.v1";

/// The `Sec-WebSocket-Key` of every client: 16 bytes in base64 (RFC 6455's
/// sample nonce). The key only proves the server speaks WebSocket; a fixed
/// one costs nothing per connection.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The masking key of every client frame. RFC 6455 asks for an
/// unpredictable one against proxies' cache poisoning; between the bench
/// and the server on loopback there is no proxy, and a fixed key keeps the
/// client's work per frame to the XOR the server undoes.
pub const MASK: [u8; 4] = [0x5a, 0x3c, 0xa5, 0xc3];

/// Longest `101` response head accepted.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Upgrades `stream` to a WebSocket session at `/ws` of `server`; returns
/// the bytes read past the response's headers (none, in practice: the
/// server says nothing before `hello`).
pub async fn upgrade(stream: &mut TcpStream, server: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        ensure!(
            head.len() < MAX_RESPONSE_HEAD,
            "WebSocket upgrade: response headers longer than {MAX_RESPONSE_HEAD} bytes"
        );
        let n = stream.read(&mut chunk).await?;
        ensure!(n > 0, "the server closed the connection during the upgrade");
        head.extend_from_slice(&chunk[..n]);
    };
    let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 101 ") {
        bail!(
            "WebSocket upgrade refused: {}",
            String::from_utf8_lossy(status)
        );
    }
    Ok(head.split_off(end))
}

/// Appends `payload` to `out` as one masked binary frame.
pub fn client_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x82); // FIN, binary
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Appends `message` to `out` as one masked binary frame: its map, without
/// the length prefix.
pub fn client_message(out: &mut Vec<u8>, message: &ClientMessage<'_>) {
    client_frame(out, &message.to_frame()[4..]);
}

/// Joins the room as `name` over an upgraded connection whose first bytes
/// read are `read`: sends `hello` and reads frames until `welcome` (true)
/// or `queued` (false), within [`HANDSHAKE_TIMEOUT`]. Returns the answer
/// and the bytes read past it.
pub async fn join(
    stream: &mut TcpStream,
    read: Vec<u8>,
    name: &str,
) -> anyhow::Result<(bool, Vec<u8>)> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, join_now(stream, read, name))
        .await
        .map_err(|_| anyhow::anyhow!("no answer to hello within {HANDSHAKE_TIMEOUT:?}"))?
}

async fn join_now(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    name: &str,
) -> anyhow::Result<(bool, Vec<u8>)> {
    let mut hello = Vec::new();
    client_message(
        &mut hello,
        &ClientMessage::Hello {
            name: name.into(),
            features: None,
            last_id: None,
            resume: None,
        },
    );
    stream.write_all(&hello).await?;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((frame, took)) = ws_frame(&buf)? {
            let welcomed = match frame {
                WsFrame::Binary(payload) => match ServerMessage::decode(payload)
                    .context("decoding the server's answer to hello")?
                {
                    ServerMessage::Welcome { .. } => Some(true),
                    ServerMessage::Queued { .. } => Some(false),
                    ServerMessage::Bye { reason, .. } => bail!("refused: bye {reason:?}"),
                    ServerMessage::Error { code, text } => bail!("refused: {code:?}: {text}"),
                    _ => None,
                },
                WsFrame::Control => None,
                WsFrame::Close => bail!("the server closed the WebSocket before welcome"),
            };
            buf.drain(..took);
            if let Some(welcomed) = welcomed {
                return Ok((welcomed, buf));
            }
        }
        let n = stream.read(&mut chunk).await?;
        ensure!(n > 0, "the server closed the connection before welcome");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes a client frame's masking, as the server does.
    fn unmask(frame: &[u8], head: usize) -> Vec<u8> {
        let mask = &frame[head - 4..head];
        frame[head..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect()
    }

    #[test]
    fn client_frames_are_masked_with_the_right_length_form() {
        for (len, head) in [(0, 6), (125, 6), (126, 8), (65_535, 8), (65_536, 14)] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            client_frame(&mut out, &payload);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0x80, "mask bit");
            assert_eq!(out.len(), head + len);
            assert_eq!(unmask(&out, head), payload);
        }
    }
}
