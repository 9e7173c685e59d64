//! Frames the server sends. Each variant serializes to a MessagePack map with
//! a string `type` key, exactly as the contract lists them.

use bytes::Bytes;
use serde::Serialize;

use super::codec::encode_frame;

/// The exact text of a `queued` frame, with the position filled in.
pub fn queued_text(position: u64) -> String {
    format!("We are dealing with a large amount of users and you are at {position} in queue")
}

/// `welcome.text` for a client promoted from the queue (fixed by the contract).
pub const WELCOME_FROM_QUEUE: &str = "A spot has opened up! You are now connected to the chat.";

/// `welcome.text` for a client that entered directly.
pub const WELCOME_DIRECT: &str = "Welcome to anteroom! You are now connected to the chat.";

/// A ping or pong `id`: any MessagePack integer, echoed back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum PingId {
    Signed(i64),
    Unsigned(u64),
}

/// A frame from server to client. Borrowed fields keep encoding free of copies.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Welcome {
        name: &'a str,
        users: Vec<&'a str>,
        capacity: u64,
        text: &'a str,
    },
    Queued {
        position: u64,
        waiting: u64,
        text: String,
    },
    Message {
        id: u64,
        from: &'a str,
        text: &'a str,
        ts: u64,
    },
    Joined {
        name: &'a str,
        ts: u64,
    },
    Left {
        name: &'a str,
        reason: LeftReason,
        ts: u64,
    },
    Users {
        names: Vec<&'a str>,
    },
    Gap {
        missed: u64,
    },
    Error {
        code: ErrorCode,
        text: &'a str,
    },
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<PingId>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<PingId>,
    },
    Bye {
        reason: ByeReason,
        text: &'a str,
    },
}

impl ServerMessage<'_> {
    /// Encodes the message as a complete frame.
    ///
    /// Every field is a string, integer or list of strings, which MessagePack
    /// always represents, so a failure here is a bug, not an input condition.
    pub fn to_frame(&self) -> Bytes {
        encode_frame(self).expect("server messages are always encodable")
    }
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    FrameTooLarge,
    UnknownType,
    BadRequest,
    HandshakeRequired,
    NameInvalid,
    NameTaken,
    NotAdmitted,
    MessageTooLong,
    RateLimited,
}

impl ErrorCode {
    /// The wire spelling, also used as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::HandshakeRequired => "handshake_required",
            ErrorCode::NameInvalid => "name_invalid",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NotAdmitted => "not_admitted",
            ErrorCode::MessageTooLong => "message_too_long",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

/// Why a member left the room, as broadcast in `left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    Bye,
    Disconnected,
    IdleTimeout,
    SlowConsumer,
    ProtocolError,
    Shutdown,
}

impl LeftReason {
    /// The wire spelling, also used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Bye => "bye",
            LeftReason::Disconnected => "disconnected",
            LeftReason::IdleTimeout => "idle_timeout",
            LeftReason::SlowConsumer => "slow_consumer",
            LeftReason::ProtocolError => "protocol_error",
            LeftReason::Shutdown => "shutdown",
        }
    }
}

/// Why the server is closing a connection, as sent in `bye`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    ServerFull,
    SlowConsumer,
    IdleTimeout,
    HandshakeTimeout,
    ProtocolError,
    Shutdown,
    Bye,
}

impl ByeReason {
    /// The human-readable `text` that accompanies each reason.
    pub fn text(self) -> &'static str {
        match self {
            ByeReason::ServerFull => "The server is full; please try again later.",
            ByeReason::SlowConsumer => "You fell too far behind the room and were disconnected.",
            ByeReason::IdleTimeout => "No activity for too long; disconnecting.",
            ByeReason::HandshakeTimeout => "No valid hello received in time; disconnecting.",
            ByeReason::ProtocolError => "Protocol error; disconnecting.",
            ByeReason::Shutdown => "The server is shutting down.",
            ByeReason::Bye => "Goodbye!",
        }
    }

    /// The `bye` frame for this reason.
    pub fn frame(self) -> Bytes {
        ServerMessage::Bye {
            reason: self,
            text: self.text(),
        }
        .to_frame()
    }
}

/// An `error` frame.
pub fn error_frame(code: ErrorCode, text: &str) -> Bytes {
    ServerMessage::Error { code, text }.to_frame()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_length_prefixed_maps_with_type() {
        let frame = ServerMessage::Pong {
            id: Some(PingId::Signed(7)),
        }
        .to_frame();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let value = rmpv::decode::read_value(&mut &frame[4..]).unwrap();
        let map = value.as_map().unwrap();
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("type") && v.as_str() == Some("pong"))
        );
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("id") && v.as_i64() == Some(7))
        );
    }

    #[test]
    fn pong_without_id_has_no_id_key() {
        let frame = ServerMessage::Pong { id: None }.to_frame();
        let value = rmpv::decode::read_value(&mut &frame[4..]).unwrap();
        assert_eq!(value.as_map().unwrap().len(), 1);
    }

    #[test]
    fn queued_text_is_exact() {
        assert_eq!(
            queued_text(3),
            "We are dealing with a large amount of users and you are at 3 in queue"
        );
    }
}
