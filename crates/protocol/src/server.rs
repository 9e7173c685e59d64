//! Frames the server sends. Each variant serializes to a MessagePack map with
//! a string `type` key, exactly as the contract lists them.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::client::ClientMessage;
use super::codec::{encode_frame, encode_frame_into};
use super::shape::{self, ShapeError};

/// The exact text of a `queued` frame, with the position filled in.
pub fn queued_text(position: u64) -> String {
    format!("We are dealing with a large amount of users and you are at {position} in queue")
}

/// `welcome.text` for a client promoted from the queue (fixed by the contract).
pub const WELCOME_FROM_QUEUE: &str = "A spot has opened up! You are now connected to the chat.";

/// `welcome.text` for a client that entered directly.
pub const WELCOME_DIRECT: &str = "Welcome to anteroom! You are now connected to the chat.";

/// A ping or pong `id`: any MessagePack integer, echoed back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PingId {
    /// Fits an `i64`.
    Signed(i64),
    /// Above `i64::MAX`.
    Unsigned(u64),
}

/// A frame from server to client: the one vocabulary the server encodes and
/// every client decodes. The server builds it from borrowed strings, so
/// encoding copies nothing; a client decodes it into owned strings
/// (`ServerMessage<'static>`, see [`ServerMessage::decode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Admitted into the room.
    Welcome {
        /// The name as stored.
        name: Cow<'a, str>,
        /// Everyone in the room, in join order, this client included.
        users: Vec<Cow<'a, str>>,
        /// The room's capacity (`max_active`).
        capacity: u64,
        /// A greeting; fixed text after waiting in the queue.
        text: Cow<'a, str>,
        /// The features granted; only for a client that asked for some.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<Cow<'a, str>>>,
        /// With `files`: the bearer token for `POST /upload`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_token: Option<Cow<'a, str>>,
        /// With `files`: the largest upload accepted, in bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_upload_bytes: Option<u64>,
        /// With `resume`: the token that takes this seat back after a drop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Cow<'a, str>>,
        /// Answering a `hello` that carried a token: whether it took back
        /// a held seat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed: Option<bool>,
        /// With `resume`: how long a dropped seat is held (`resume_grace`),
        /// so the client can say how long it has to come back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_grace_s: Option<u64>,
    },
    /// Waiting in the queue; sent on entry and whenever the position changes.
    Queued {
        /// 1-based place in the queue.
        position: u64,
        /// Clients in the queue.
        waiting: u64,
        /// The fixed text, see [`queued_text`].
        text: Cow<'a, str>,
        /// In the first `queued` only, for a client that asked for
        /// features: the ones granted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<Cow<'a, str>>>,
        /// With `resume`: the token that takes this place back after a drop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Cow<'a, str>>,
        /// In the first `queued` answering a `hello` that carried a token:
        /// whether it took back a held place.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed: Option<bool>,
        /// With `resume`, in the first `queued` only: how long a dropped
        /// place is held (`resume_grace`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_grace_s: Option<u64>,
        /// With `eta`: seconds until the expected promotion, once the
        /// promotion rate is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta_s: Option<u64>,
    },
    /// A member said something.
    Message {
        /// Strictly increasing in the room.
        id: u64,
        /// The sender's name.
        from: Cow<'a, str>,
        /// What was said.
        text: Cow<'a, str>,
        /// Unix time in milliseconds.
        ts: u64,
        /// A file posted with the message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<Attachment<'a>>,
    },
    /// With `history`: a page of the chat log, oldest first.
    History {
        /// `message` maps, `type` included.
        messages: Vec<ServerMessage<'a>>,
        /// Whether older messages exist.
        more: bool,
        /// Names the store: ids compare only within one epoch.
        epoch: Cow<'a, str>,
    },
    /// With `whisper`: a direct message, to its recipient and its sender.
    Whisper {
        /// The sender, as stored.
        from: Cow<'a, str>,
        /// The recipient, as stored.
        to: Cow<'a, str>,
        /// What was said.
        text: Cow<'a, str>,
        /// Unix time in milliseconds.
        ts: u64,
    },
    /// With `lagging`: this client's outbound buffer passed half of its
    /// limit; sent ahead of what is queued, once per episode.
    Lagging {
        /// Frames waiting for this client.
        queued: u64,
        /// The buffer's limit (`outbox_limit`), past which it is cut off.
        limit: u64,
    },
    /// With `presence_batch`: the room's changes since the last one;
    /// `left` applies before `joined`.
    Presence {
        /// Who entered.
        joined: Vec<Cow<'a, str>>,
        /// Who left, and why.
        left: Vec<PresenceLeft<'a>>,
        /// Unix time in milliseconds.
        ts: u64,
    },
    /// Another user entered the room.
    Joined {
        /// Who.
        name: Cow<'a, str>,
        /// Unix time in milliseconds.
        ts: u64,
    },
    /// A user left the room.
    Left {
        /// Who.
        name: Cow<'a, str>,
        /// Why.
        reason: LeftReason,
        /// Unix time in milliseconds.
        ts: u64,
    },
    /// The answer to `who`.
    Users {
        /// Everyone in the room, in join order.
        names: Vec<Cow<'a, str>>,
    },
    /// Under the `skip` policy: this many room events were dropped for you.
    Gap {
        /// Frames of type `message`, `joined` or `left` dropped.
        missed: u64,
    },
    /// A request was refused; the connection stays open unless a `bye` follows.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// For people.
        text: Cow<'a, str>,
    },
    /// Liveness check; answer with `pong` and the same `id`.
    Ping {
        /// Echoed back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<PingId>,
    },
    /// The answer to a client's `ping`.
    Pong {
        /// The client's `id`, if it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<PingId>,
    },
    /// The server is about to close the connection.
    Bye {
        /// Why.
        reason: ByeReason,
        /// For people.
        text: Cow<'a, str>,
    },
    /// A frame type this version does not know (from a newer server); never
    /// sent.
    #[serde(other)]
    Unknown,
}

impl ServerMessage<'_> {
    /// Encodes the message as a complete frame.
    ///
    /// Every field is a string, integer or list of strings, which MessagePack
    /// always represents, so a failure here is a bug, not an input condition.
    pub fn to_frame(&self) -> Bytes {
        encode_frame(self).expect("server messages are always encodable")
    }

    /// Appends the message as a complete frame to `buf`, after the frames
    /// already there: how room delivery builds one run of events that every
    /// member is sent with one write.
    pub fn append_frame(&self, buf: &mut bytes::BytesMut) {
        encode_frame_into(self, buf).expect("server messages are always encodable")
    }

    /// The answer a client owes this message: a `pong` for a server `ping`.
    /// The one place that says how pings are answered.
    pub fn answer(&self) -> Option<ClientMessage<'static>> {
        match self {
            ServerMessage::Ping { id: Some(id) } => Some(ClientMessage::Pong { id: *id }),
            _ => None,
        }
    }
}

/// Why a server frame could not be read as a [`ServerMessage`].
#[derive(Debug, thiserror::Error)]
pub enum ServerDecodeError {
    /// Too many values or too deep: refused before decoding, see [`shape`].
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Not a server message.
    #[error(transparent)]
    Invalid(#[from] rmp_serde::decode::Error),
}

impl ServerMessage<'static> {
    /// Decodes one frame payload (without its length prefix). Unknown keys
    /// and unknown frame types are tolerated, as the contract asks.
    ///
    /// The payload is first checked against [`shape::SERVER_FRAME`], so that
    /// a hostile server cannot make a 16 MiB frame decode into gigabytes.
    pub fn decode(payload: &[u8]) -> Result<Self, ServerDecodeError> {
        shape::check(payload, shape::SERVER_FRAME)?;
        Ok(rmp_serde::from_slice(payload)?)
    }
}

/// A file posted with a message: where to fetch it and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment<'a> {
    /// An absolute path on the web listener, such as `/files/…`.
    pub url: Cow<'a, str>,
    /// The file name the uploader gave.
    pub name: Cow<'a, str>,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as uploaded.
    pub mime: Cow<'a, str>,
}

/// One departure in a `presence` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceLeft<'a> {
    /// Who.
    pub name: Cow<'a, str>,
    /// Why, as in `left`.
    pub reason: LeftReason,
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a MessagePack map with a string `type`, or `L` = 0.
    BadFrame,
    /// `L` above `max_frame_bytes`.
    FrameTooLarge,
    /// `type` is not a client type.
    UnknownType,
    /// A field missing or mistyped, or a `hello` out of turn.
    BadRequest,
    /// `say` or `who` before `hello`.
    HandshakeRequired,
    /// The name breaks the name rule.
    NameInvalid,
    /// A connected user holds the name.
    NameTaken,
    /// `say` or `who` while queued.
    NotAdmitted,
    /// `say.text` above `max_message_bytes`.
    MessageTooLong,
    /// Over the message rate limit.
    RateLimited,
    /// A whisper to a name no connected member holds.
    NoSuchUser,
    /// A whisper to a member that did not ask for `whisper`.
    WhisperUnsupported,
    /// The chat log could not answer a `history` request; try again.
    Unavailable,
    /// A code this version does not know (from a newer server); never sent.
    #[serde(other)]
    Unknown,
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
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::WhisperUnsupported => "whisper_unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// Why a member left the room, as broadcast in `left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// It said `bye`.
    Bye,
    /// Its connection ended without a goodbye.
    Disconnected,
    /// Silent for `idle_timeout`.
    IdleTimeout,
    /// Cut off for falling behind.
    SlowConsumer,
    /// Cut off for breaking the protocol.
    ProtocolError,
    /// The server shut down.
    Shutdown,
    /// A reason this version does not know (from a newer server); never sent.
    #[serde(other)]
    Unknown,
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
            LeftReason::Unknown => "unknown",
        }
    }
}

/// Why the server is closing a connection, as sent in `bye`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// The room and the queue are full.
    ServerFull,
    /// It fell too far behind.
    SlowConsumer,
    /// Silent for `idle_timeout`.
    IdleTimeout,
    /// No valid `hello` within `handshake_timeout`.
    HandshakeTimeout,
    /// It broke the protocol.
    ProtocolError,
    /// The server is shutting down.
    Shutdown,
    /// The answer to the client's own `bye`.
    Bye,
    /// A reason this version does not know (from a newer server); never sent.
    #[serde(other)]
    Unknown,
}

impl ByeReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::ServerFull => "server_full",
            ByeReason::SlowConsumer => "slow_consumer",
            ByeReason::IdleTimeout => "idle_timeout",
            ByeReason::HandshakeTimeout => "handshake_timeout",
            ByeReason::ProtocolError => "protocol_error",
            ByeReason::Shutdown => "shutdown",
            ByeReason::Bye => "bye",
            ByeReason::Unknown => "unknown",
        }
    }

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
            ByeReason::Unknown => "",
        }
    }

    /// The `bye` frame for this reason.
    pub fn frame(self) -> Bytes {
        ServerMessage::Bye {
            reason: self,
            text: self.text().into(),
        }
        .to_frame()
    }
}

/// Each code and reason prints as its wire spelling.
macro_rules! display_as_wire {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_wire!(ErrorCode, LeftReason, ByeReason);

/// An `error` frame.
pub fn error_frame(code: ErrorCode, text: &str) -> Bytes {
    ServerMessage::Error {
        code,
        text: text.into(),
    }
    .to_frame()
}

#[cfg(test)]
mod tests;
