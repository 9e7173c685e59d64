//! What a transport hands the session: a stream of inbound frame payloads
//! and a sink for outbound frames.
//!
//! The session core knows nothing else about the connection. A byte stream
//! (TCP; TLS and QUIC streams too) is adapted by [`ByteStream`], which finds
//! frames by their 4-byte length prefix; a message-framed duplex (WebSocket)
//! by [`MessageDuplex`], one message per frame. Adding a transport is a
//! listener plus one of these adapters, never a second session.

use std::pin::Pin;
use std::task::{Context, Poll};

use anteroom_protocol::{FrameError, frame_codec};
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::conn::writer::{ByteSink, FrameSink, MessageSink};

/// Initial read buffer: enough for typical frames, small enough that an idle
/// connection costs little. It grows on demand up to `max_frame_bytes`.
const READ_BUFFER: usize = 256;

/// A connection as the session core sees it.
pub trait Transport: Send + 'static {
    /// Frame payloads from the client (without any length prefix). An
    /// oversized frame is [`FrameError::TooLarge`]; a transport failure ends
    /// the stream with [`FrameError::Io`].
    type Inbound: Stream<Item = Result<BytesMut, FrameError>> + Unpin + Send + 'static;
    /// Where the connection's writer puts complete frames.
    type Outbound: FrameSink + 'static;

    /// Splits the connection; `max_frame_bytes` bounds inbound frames.
    fn open(self, max_frame_bytes: usize) -> (Self::Inbound, Self::Outbound);
}

/// A byte stream's two halves, carrying length-prefixed frames.
#[derive(Debug)]
pub struct ByteStream<R, W> {
    reader: R,
    writer: W,
}

impl<R, W> ByteStream<R, W> {
    /// Wraps the reading and writing halves of one connection.
    pub fn new(reader: R, writer: W) -> Self {
        Self { reader, writer }
    }
}

impl<R, W> Transport for ByteStream<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Inbound = ByteFrames<R>;
    type Outbound = ByteSink<W>;

    fn open(self, max_frame_bytes: usize) -> (Self::Inbound, Self::Outbound) {
        let frames =
            FramedRead::with_capacity(self.reader, frame_codec(max_frame_bytes), READ_BUFFER);
        (
            ByteFrames {
                frames,
                limit: max_frame_bytes,
            },
            ByteSink(self.writer),
        )
    }
}

/// Inbound frames of a byte stream, read with the length-delimited codec
/// (which refuses an oversized length before allocating for it).
#[derive(Debug)]
pub struct ByteFrames<R> {
    frames: FramedRead<R, LengthDelimitedCodec>,
    limit: usize,
}

impl<R: AsyncRead + Unpin> Stream for ByteFrames<R> {
    type Item = Result<BytesMut, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let limit = self.limit;
        Pin::new(&mut self.frames)
            .poll_next(cx)
            .map(|item| item.map(|frame| frame.map_err(|e| FrameError::classify(e, limit))))
    }
}

/// A message-framed duplex: each inbound item is one frame's payload, each
/// outbound frame one message. The adapter that builds it (a WebSocket
/// listener) enforces `max_frame_bytes` on what it reads.
#[derive(Debug)]
pub struct MessageDuplex<I, O> {
    inbound: I,
    outbound: O,
}

impl<I, O> MessageDuplex<I, O> {
    /// Pairs a stream of inbound payloads with a sink of outbound payloads.
    pub fn new(inbound: I, outbound: O) -> Self {
        Self { inbound, outbound }
    }
}

impl<I, O> Transport for MessageDuplex<I, O>
where
    I: Stream<Item = Result<BytesMut, FrameError>> + Unpin + Send + 'static,
    O: Sink<Bytes> + Unpin + Send + 'static,
    O::Error: Into<std::io::Error>,
{
    type Inbound = I;
    type Outbound = MessageSink<O>;

    fn open(self, _max_frame_bytes: usize) -> (Self::Inbound, Self::Outbound) {
        (self.inbound, MessageSink(self.outbound))
    }
}
