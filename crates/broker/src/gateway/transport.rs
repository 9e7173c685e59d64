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

use anteroom_protocol::FrameError;
use anteroom_protocol::codec::{FrameDecoder, READ_BUFFER_INITIAL};
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedRead;

use crate::conn::writer::{ByteSink, FrameSink, MessageSink};

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
        let frames = FramedRead::with_capacity(
            self.reader,
            FrameDecoder::new(max_frame_bytes),
            READ_BUFFER_INITIAL,
        );
        (ByteFrames { frames }, ByteSink(self.writer))
    }
}

/// Inbound frames of a byte stream, read with [`FrameDecoder`]: an oversized
/// length is refused before any payload is read, and the read buffer holds
/// only what the client has sent (see the decoder for why).
#[derive(Debug)]
pub struct ByteFrames<R> {
    frames: FramedRead<R, FrameDecoder>,
}

impl<R: AsyncRead + Unpin> Stream for ByteFrames<R> {
    type Item = Result<BytesMut, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.frames).poll_next(cx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt};
    use tokio::io::AsyncWriteExt;

    const LIMIT: usize = 64 * 1024;

    fn open(
        server: tokio::io::DuplexStream,
    ) -> ByteFrames<tokio::io::ReadHalf<tokio::io::DuplexStream>> {
        let (read, write) = tokio::io::split(server);
        ByteStream::new(read, write).open(LIMIT).0
    }

    /// Whether the read buffer's allocation holds at least `bytes`. Its
    /// `capacity()` can under-report: after a frame is split off, the rest
    /// of the allocation is kept and reclaimed by the next reservation.
    fn allocated<R>(frames: &mut ByteFrames<R>, bytes: usize) -> bool {
        let buf = frames.frames.read_buffer_mut();
        let more = bytes.saturating_sub(buf.len());
        buf.try_reclaim(more)
    }

    #[tokio::test]
    async fn a_header_alone_does_not_grow_the_read_buffer() {
        // A client announcing a maximal frame and trickling its payload must
        // cost what it has sent, not what it announced.
        let (mut client, server) = tokio::io::duplex(2 * LIMIT);
        let mut frames = open(server);
        client
            .write_all(&(LIMIT as u32).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&[0x80]).await.unwrap();
        assert!(frames.next().now_or_never().is_none(), "frame incomplete");
        assert!(
            !allocated(&mut frames, 1024),
            "a header and one byte made the read buffer grow past 1 KiB"
        );
    }

    #[tokio::test]
    async fn the_read_buffer_shrinks_after_a_large_frame() {
        let (mut client, server) = tokio::io::duplex(2 * LIMIT);
        let mut frames = open(server);
        client
            .write_all(&(LIMIT as u32).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&vec![0x80; LIMIT]).await.unwrap();
        let large = frames.next().await.unwrap().unwrap();
        assert_eq!(large.len(), LIMIT);
        drop(large);
        client.write_all(&[0, 0, 0, 1, 0x80]).await.unwrap();
        let small = frames.next().await.unwrap().unwrap();
        assert_eq!(&small[..], &[0x80]);
        assert!(
            !allocated(&mut frames, 8 * 1024),
            "the read buffer kept more than 8 KiB after a large frame"
        );
    }

    #[tokio::test]
    async fn framing_errors_keep_their_meaning() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut frames = open(server);
        // A zero length is an empty frame (the session calls it bad_frame).
        client.write_all(&[0, 0, 0, 0]).await.unwrap();
        assert!(frames.next().await.unwrap().unwrap().is_empty());
        // A length over the limit fails before any payload is read.
        client
            .write_all(&(LIMIT as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            frames.next().await,
            Some(Err(FrameError::TooLarge { limit: LIMIT }))
        ));
    }
}
