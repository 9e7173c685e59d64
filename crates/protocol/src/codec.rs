//! Framing: a 4-byte big-endian length, then that many bytes of MessagePack.
//!
//! The server reads with [`FrameDecoder`], whose buffer grows only with the
//! bytes a client has actually sent. Clients read the server's frames with
//! tokio-util's `LengthDelimitedCodec` ([`frame_codec`]). Writing encodes a
//! whole frame, prefix included, into one `Bytes` so that a room event is
//! encoded once and the same bytes are shared by every recipient.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::{
    Decoder, LengthDelimitedCodec, length_delimited::LengthDelimitedCodecError,
};

/// Largest frame a well-behaved client must accept from the server (16 MiB).
pub const MAX_SERVER_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Size of the length prefix.
const HEADER: usize = 4;

/// A read buffer's initial size: enough for typical frames, small enough
/// that an idle connection costs little.
pub const READ_BUFFER_INITIAL: usize = 256;

/// A read buffer up to this size is kept between frames; a larger one is
/// given back once the frames that made it grow have been taken out.
pub const READ_BUFFER_KEPT: usize = 4096;

/// Builds a length-delimited codec for frames of at most `max_frame_bytes`.
///
/// It reserves room for a whole frame as soon as its length is read, which
/// suits a client reading a server it trusts; the server reads untrusted
/// input with [`FrameDecoder`] instead.
pub fn frame_codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// Why reading the next frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length exceeds `max_frame_bytes`; the connection must close.
    #[error("frame longer than the {limit}-byte limit")]
    TooLarge { limit: usize },
    /// The socket failed or was reset.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Classifies an error from the length-delimited decoder: an oversized
    /// length is a protocol violation, anything else is the transport's.
    pub fn classify(err: std::io::Error, limit: usize) -> Self {
        let oversized = err
            .get_ref()
            .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
        if oversized {
            FrameError::TooLarge { limit }
        } else {
            FrameError::Io(err)
        }
    }
}

/// The server's inbound frame decoder: the length-delimited rules, with a
/// read buffer bounded by what the client has actually sent.
///
/// tokio-util's `LengthDelimitedCodec` reserves the announced length as soon
/// as it reads a prefix, so a 4-byte header costs `max_frame_bytes` of memory
/// until the payload arrives, however slowly it trickles in. This decoder
/// reserves nothing: the buffer grows as bytes are read (the reader doubles
/// it when full), and after a frame is taken out of a buffer grown beyond
/// [`READ_BUFFER_KEPT`], what is left moves into a small new one, so the
/// large allocation goes away with the frame.
///
/// A length of 0 yields an empty frame (the session calls it `bad_frame`); a
/// length over the limit is [`FrameError::TooLarge`] before any payload is
/// read. A stream that ends inside a frame, its prefix included, is an error
/// ("bytes remaining on stream").
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limit: usize,
    /// The buffer has been seen larger than [`READ_BUFFER_KEPT`] since it was
    /// last replaced. Its `capacity()` alone cannot tell: after a frame is
    /// split off, the rest of the allocation is kept but not reported.
    grown: bool,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max_frame_bytes` of payload.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            limit: max_frame_bytes,
            grown: false,
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        self.grown |= src.capacity() > READ_BUFFER_KEPT;
        let Some(&[a, b, c, d]) = src.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        if src.len() - HEADER < len {
            // No reservation for the rest: the buffer grows only as bytes
            // arrive.
            return Ok(None);
        }
        src.advance(HEADER);
        let frame = src.split_to(len);
        if self.grown && src.len() <= READ_BUFFER_KEPT {
            // The frame keeps the large allocation alive only until the
            // session drops it; the buffer starts small again.
            let mut rest = BytesMut::with_capacity(READ_BUFFER_INITIAL.max(src.len()));
            rest.extend_from_slice(src);
            *src = rest;
            self.grown = false;
        }
        Ok(Some(frame))
    }
}

/// Encodes one message as a complete frame (length prefix and MessagePack map).
///
/// Server messages are plain data with string keys, so encoding cannot fail
/// for any value this crate builds; a failure would be a programming error
/// and is reported rather than sent half-written.
pub fn encode_frame<T: Serialize + ?Sized>(message: &T) -> Result<Bytes, rmp_serde::encode::Error> {
    let mut buf = BytesMut::with_capacity(64);
    encode_frame_into(message, &mut buf)?;
    Ok(buf.freeze())
}

/// Appends one message as a complete frame to `buf`: frames encoded back to
/// back into one buffer can be sent with a single write. On failure `buf` is
/// left as it was.
pub fn encode_frame_into<T: Serialize + ?Sized>(
    message: &T,
    buf: &mut BytesMut,
) -> Result<(), rmp_serde::encode::Error> {
    let start = buf.len();
    buf.put_u32(0);
    let mut writer = std::mem::take(buf).writer();
    let encoded = rmp_serde::encode::write_named(&mut writer, message);
    *buf = writer.into_inner();
    let len = encoded.and_then(|()| {
        u32::try_from(buf.len() - start - 4)
            .map_err(|_| rmp_serde::encode::Error::Syntax("frame longer than 4 GiB".to_string()))
    });
    match len {
        Ok(len) => {
            buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reserves_nothing_for_its_payload() {
        let mut decoder = FrameDecoder::new(64 * 1024);
        let mut buf = BytesMut::with_capacity(READ_BUFFER_INITIAL);
        buf.put_u32(64 * 1024);
        buf.put_u8(0x80);
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= READ_BUFFER_INITIAL);
        assert_eq!(
            buf.len(),
            5,
            "nothing is consumed before the frame is whole"
        );
    }

    #[test]
    fn the_length_rules_hold() {
        let mut decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        buf.put_u32(2);
        buf.put_slice(b"ab");
        assert!(decoder.decode(&mut buf).unwrap().unwrap().is_empty());
        assert_eq!(&decoder.decode(&mut buf).unwrap().unwrap()[..], b"ab");
        buf.put_u32(17);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 16 })
        ));
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let mut decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        assert!(matches!(
            decoder.decode_eof(&mut buf),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn a_grown_buffer_is_replaced_after_its_frame() {
        let mut decoder = FrameDecoder::new(64 * 1024);
        let mut buf = BytesMut::with_capacity(128 * 1024);
        buf.put_u32(60 * 1024);
        buf.put_bytes(1, 60 * 1024);
        buf.put_u32(1);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.len(), 60 * 1024);
        drop(frame);
        assert!(buf.capacity() <= READ_BUFFER_KEPT);
        assert!(
            !buf.try_reclaim(READ_BUFFER_KEPT),
            "the large allocation is gone"
        );
        assert_eq!(&buf[..], &[0, 0, 0, 1], "the rest is kept");
    }
}
