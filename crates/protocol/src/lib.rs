//! The wire protocol: bytes to frames (`codec`), frames to typed messages
//! (`client`, `server`). Sessions only ever see typed messages; this module owns
//! every byte-level rule and limit so that no other module can get them wrong.

pub mod client;
pub mod codec;
pub mod disposition;
pub mod features;
pub mod roster;
pub mod server;
pub mod shape;
pub mod text;

pub use client::{ClientMessage, DecodeError};
pub use codec::{FrameDecoder, FrameError, frame_codec};
pub use features::{Feature, Features};
pub use roster::EncodedNames;
pub use server::{
    Attachment, ByeReason, ErrorCode, LeftReason, PingId, PresenceLeft, ServerDecodeError,
    ServerMessage,
};

/// Unix time in milliseconds, the unit of every `ts` field.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
