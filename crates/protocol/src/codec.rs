//! Framing: a 4-byte big-endian length, then that many bytes of MessagePack.
//!
//! Reading uses tokio-util's `LengthDelimitedCodec`, which rejects an oversized
//! length before allocating anything for it. Writing encodes a whole frame,
//! prefix included, into one `Bytes` so that a room event is encoded once and
//! the same bytes are shared by every recipient.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::{LengthDelimitedCodec, length_delimited::LengthDelimitedCodecError};

/// Largest frame a well-behaved client must accept from the server (16 MiB).
pub const MAX_SERVER_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Builds the inbound codec for a connection.
///
/// `max_frame_bytes` is the configured limit on frames the server accepts.
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

/// Encodes one message as a complete frame (length prefix and MessagePack map).
///
/// Server messages are plain data with string keys, so encoding cannot fail
/// for any value this crate builds; a failure would be a programming error
/// and is reported rather than sent half-written.
pub fn encode_frame<T: Serialize + ?Sized>(message: &T) -> Result<Bytes, rmp_serde::encode::Error> {
    let mut buf = BytesMut::with_capacity(64).writer();
    buf.get_mut().put_u32(0);
    rmp_serde::encode::write_named(&mut buf, message)?;
    let mut buf = buf.into_inner();
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| rmp_serde::encode::Error::Syntax("frame longer than 4 GiB".to_string()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}
