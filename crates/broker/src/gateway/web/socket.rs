//! WebSocket as a message-framed transport: one binary message carries one
//! MessagePack map, with no length prefix.
//!
//! The contract's mapping onto the session's rules: a text message is a
//! `bad_frame`; an empty message is a frame of length 0 and a message over
//! `max_frame_bytes` an oversized frame (both end with
//! `bye{protocol_error}`), and such a protocol error closes the WebSocket
//! with code 1008, every other close with 1000. Pings are answered by the
//! WebSocket layer itself.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anteroom_protocol::{ByeReason, FrameError, ServerMessage};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The one byte MessagePack never uses: a text message becomes a payload
/// of it, which the session answers like any frame that is not a map
/// (`error{bad_frame}`).
const NOT_MESSAGEPACK: u8 = 0xc1;

/// What the WebSocket layer reads from the socket at once. Its default,
/// 128 KiB allocated up front, would be most of an idle member's memory;
/// clients send small frames.
const READ_BUFFER: usize = 4 * 1024;

/// The WebSocket layer's limits for a session whose frames are at most
/// `max_frame_bytes`: a longer message is refused before it is buffered.
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Inbound payloads of a WebSocket.
pub struct Inbound<S> {
    messages: SplitStream<WebSocketStream<S>>,
    limit: usize,
}

/// Outbound frames of a WebSocket, one binary message each.
pub struct Outbound<S> {
    messages: SplitSink<WebSocketStream<S>, Message>,
    /// The last frame sent: a `bye{protocol_error}` makes the close 1008.
    last: Option<Bytes>,
    close_sent: bool,
}

/// Splits a WebSocket into the session's two halves.
pub fn split<S>(socket: WebSocketStream<S>, limit: usize) -> (Inbound<S>, Outbound<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (sink, stream) = socket.split();
    (
        Inbound {
            messages: stream,
            limit,
        },
        Outbound {
            messages: sink,
            last: None,
            close_sent: false,
        },
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Inbound<S> {
    type Item = Result<BytesMut, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let payload = match ready!(self.messages.poll_next_unpin(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(None),
                Some(Ok(Message::Binary(bytes))) => BytesMut::from(&bytes[..]),
                Some(Ok(Message::Text(_))) => BytesMut::from(&[NOT_MESSAGEPACK][..]),
                // Pings are answered below us; pongs and raw frames mean nothing.
                Some(Ok(_)) => continue,
                Some(Err(Error::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    let limit = self.limit;
                    return Poll::Ready(Some(Err(FrameError::TooLarge { limit })));
                }
                Some(Err(error)) => {
                    return Poll::Ready(Some(Err(FrameError::Io(std::io::Error::other(error)))));
                }
            };
            return Poll::Ready(Some(Ok(payload)));
        }
    }
}

impl<S> Outbound<S> {
    fn close_code(&self) -> CloseCode {
        let protocol_error = self.last.as_deref().is_some_and(|frame| {
            matches!(
                ServerMessage::decode(frame),
                Ok(ServerMessage::Bye {
                    reason: ByeReason::ProtocolError,
                    ..
                })
            )
        });
        if protocol_error {
            CloseCode::Policy
        } else {
            CloseCode::Normal
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Bytes> for Outbound<S> {
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.messages
            .poll_ready_unpin(cx)
            .map_err(std::io::Error::other)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> Result<(), Self::Error> {
        self.last = Some(frame.clone());
        self.messages
            .start_send_unpin(Message::Binary(frame))
            .map_err(std::io::Error::other)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.messages
            .poll_flush_unpin(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.close_sent {
            ready!(self.messages.poll_ready_unpin(cx)).map_err(std::io::Error::other)?;
            let close = CloseFrame {
                code: self.close_code(),
                reason: "".into(),
            };
            self.messages
                .start_send_unpin(Message::Close(Some(close)))
                .map_err(std::io::Error::other)?;
            self.close_sent = true;
        }
        self.messages
            .poll_close_unpin(cx)
            .map_err(std::io::Error::other)
    }
}
