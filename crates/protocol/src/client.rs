//! Frames a client sends, decoded and validated into [`ClientMessage`].
//!
//! Decoding goes through a generic MessagePack value first so that each way a
//! frame can be wrong maps to the exact error code the contract asks for:
//! not a map with a string `type` is `bad_frame`, an unknown `type` is
//! `unknown_type`, a missing or mistyped field is `bad_request`.

use std::borrow::Cow;

use bytes::Bytes;
use rmpv::Value;
use serde::Serialize;

use super::codec::encode_frame;
use super::server::{ErrorCode, PingId};

/// Nesting deeper than this is refused; no valid client frame nests at all,
/// and the bound keeps a hostile frame from exhausting the stack.
const MAX_DEPTH: usize = 16;

/// A request from a client: the one vocabulary every client encodes and the
/// server decodes. Clients build it from borrowed strings; the server's
/// [`ClientMessage::decode`] checks its shape and owns what it read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage<'a> {
    /// Asks to join the room under `name` (not yet validated as a name).
    Hello {
        /// The name asked for.
        name: Cow<'a, str>,
        /// Version 1.1 features asked for; absent for a version-1 client.
        #[serde(skip_serializing_if = "Option::is_none")]
        features: Option<Vec<Cow<'a, str>>>,
        /// With `resume`: the token of a held place to take back.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<Cow<'a, str>>,
        /// With `resume`: the id of the last `message` the client saw, so
        /// that it is sent only the ones it missed.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_id: Option<u64>,
    },
    /// A chat line for the room (length not yet checked against the limit).
    Say {
        /// What to say.
        text: Cow<'a, str>,
        /// With `files`: the URL of a file this server issued.
        #[serde(skip_serializing_if = "Option::is_none")]
        attachment: Option<Cow<'a, str>>,
    },
    /// With `history`: a page of the chat log.
    History {
        /// Only messages with a smaller id; absent: the newest.
        #[serde(skip_serializing_if = "Option::is_none")]
        before: Option<i64>,
        /// How many, clamped by the server to `1..history_page_max`.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<i64>,
    },
    /// With `whisper`: a direct message to one member.
    Whisper {
        /// The recipient's name, matched like names are.
        to: Cow<'a, str>,
        /// What to say.
        text: Cow<'a, str>,
    },
    /// Asks for the list of users in the room.
    Who,
    /// Liveness check; answered with a `pong` echoing `id`.
    Ping {
        /// Echoed back, if given.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<PingId>,
    },
    /// Answer to a server `ping`.
    Pong {
        /// The ping's `id`.
        id: PingId,
    },
    /// The client is leaving.
    Bye,
}

/// Why a frame could not be turned into a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct DecodeError {
    /// The code sent back in the `error` frame.
    pub code: ErrorCode,
    /// Human-readable explanation sent as the error's `text`.
    pub detail: String,
}

impl DecodeError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

impl<'a> ClientMessage<'a> {
    /// A version-1 `hello`: no features.
    pub fn hello(name: impl Into<Cow<'a, str>>) -> Self {
        ClientMessage::Hello {
            name: name.into(),
            features: None,
            resume: None,
            last_id: None,
        }
    }

    /// A plain `say`, without attachment.
    pub fn say(text: impl Into<Cow<'a, str>>) -> Self {
        ClientMessage::Say {
            text: text.into(),
            attachment: None,
        }
    }

    /// Encodes the request as a complete frame. A request holds only strings
    /// and integers, which MessagePack always represents.
    pub fn to_frame(&self) -> Bytes {
        encode_frame(self).expect("client messages are always encodable")
    }
}

impl ClientMessage<'static> {
    /// Decodes one frame payload (without its length prefix).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = payload;
        let value =
            rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH).map_err(|_| {
                DecodeError::new(ErrorCode::BadFrame, "payload is not valid MessagePack")
            })?;
        if !cursor.is_empty() {
            return Err(DecodeError::new(
                ErrorCode::BadFrame,
                "bytes left over after the MessagePack value",
            ));
        }
        let Value::Map(entries) = value else {
            return Err(DecodeError::new(
                ErrorCode::BadFrame,
                "payload is not a map",
            ));
        };
        let fields = Fields(&entries);
        let kind = match fields.get("type") {
            Some(Value::String(s)) => s.as_str().ok_or_else(|| {
                DecodeError::new(ErrorCode::BadFrame, "`type` is not valid UTF-8")
            })?,
            Some(_) => {
                return Err(DecodeError::new(
                    ErrorCode::BadFrame,
                    "`type` is not a string",
                ));
            }
            None => {
                return Err(DecodeError::new(
                    ErrorCode::BadFrame,
                    "map has no `type` key",
                ));
            }
        };
        match kind {
            "hello" => Ok(ClientMessage::Hello {
                name: fields.string("name")?.into(),
                features: fields.optional_strings("features")?,
                resume: fields.optional_string("resume")?.map(Cow::Owned),
                last_id: fields.optional_u64("last_id")?,
            }),
            "say" => Ok(ClientMessage::Say {
                text: fields.string("text")?.into(),
                attachment: fields.optional_string("attachment")?.map(Cow::Owned),
            }),
            "history" => Ok(ClientMessage::History {
                before: fields.optional_i64("before")?,
                limit: fields.optional_i64("limit")?,
            }),
            "whisper" => Ok(ClientMessage::Whisper {
                to: fields.string("to")?.into(),
                text: fields.string("text")?.into(),
            }),
            "who" => Ok(ClientMessage::Who),
            "ping" => Ok(ClientMessage::Ping {
                id: fields.optional_int("id")?,
            }),
            "pong" => Ok(ClientMessage::Pong {
                id: fields.optional_int("id")?.ok_or_else(|| {
                    DecodeError::new(ErrorCode::BadRequest, "`pong` needs an integer `id`")
                })?,
            }),
            "bye" => Ok(ClientMessage::Bye),
            other => Err(DecodeError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type `{}`",
                    super::text::truncate(other, 64)
                ),
            )),
        }
    }
}

/// Lookup over the decoded map; keys that are not strings are ignored like
/// any other unknown key.
struct Fields<'a>(&'a [(Value, Value)]);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    fn string(&self, key: &str) -> Result<String, DecodeError> {
        match self.get(key) {
            Some(Value::String(s)) => s.as_str().map(str::to_owned).ok_or_else(|| {
                DecodeError::new(ErrorCode::BadRequest, format!("`{key}` is not valid UTF-8"))
            }),
            Some(_) => Err(DecodeError::new(
                ErrorCode::BadRequest,
                format!("`{key}` must be a string"),
            )),
            None => Err(DecodeError::new(
                ErrorCode::BadRequest,
                format!("missing field `{key}`"),
            )),
        }
    }

    /// An optional string field; `nil` counts as absent.
    fn optional_string(&self, key: &str) -> Result<Option<String>, DecodeError> {
        match self.get(key) {
            None | Some(Value::Nil) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// An optional array of strings; `nil` counts as absent.
    fn optional_strings(&self, key: &str) -> Result<Option<Vec<Cow<'static, str>>>, DecodeError> {
        let wrong = || {
            DecodeError::new(
                ErrorCode::BadRequest,
                format!("`{key}` must be an array of strings"),
            )
        };
        match self.get(key) {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s
                        .as_str()
                        .map(|s| Cow::Owned(s.to_owned()))
                        .ok_or_else(wrong),
                    _ => Err(wrong()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong()),
        }
    }

    /// An optional integer as an `i64` (larger ones saturate); `nil` counts
    /// as absent.
    fn optional_i64(&self, key: &str) -> Result<Option<i64>, DecodeError> {
        Ok(self.optional_int(key)?.map(|id| match id {
            PingId::Signed(i) => i,
            PingId::Unsigned(_) => i64::MAX,
        }))
    }

    /// An optional integer that cannot be negative; `nil` counts as absent.
    fn optional_u64(&self, key: &str) -> Result<Option<u64>, DecodeError> {
        match self.optional_int(key)? {
            None => Ok(None),
            Some(PingId::Unsigned(n)) => Ok(Some(n)),
            Some(PingId::Signed(n)) => u64::try_from(n).map(Some).map_err(|_| {
                DecodeError::new(
                    ErrorCode::BadRequest,
                    format!("`{key}` must not be negative"),
                )
            }),
        }
    }

    /// An optional integer field (any MessagePack integer); `nil` counts as absent.
    fn optional_int(&self, key: &str) -> Result<Option<PingId>, DecodeError> {
        match self.get(key) {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Integer(n)) => Ok(Some(match n.as_i64() {
                Some(i) => PingId::Signed(i),
                None => PingId::Unsigned(n.as_u64().unwrap_or(u64::MAX)),
            })),
            Some(_) => Err(DecodeError::new(
                ErrorCode::BadRequest,
                format!("`{key}` must be an integer"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn encode(v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    }

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    fn code(payload: &[u8]) -> ErrorCode {
        ClientMessage::decode(payload).unwrap_err().code
    }

    #[test]
    fn decodes_each_client_type() {
        let hello = encode(map(&[("type", "hello".into()), ("name", "ann".into())]));
        assert_eq!(
            ClientMessage::decode(&hello).unwrap(),
            ClientMessage::hello("ann")
        );
        let hello = encode(map(&[
            ("type", "hello".into()),
            ("name", "ann".into()),
            ("features", Value::Array(vec!["history".into(), "x".into()])),
        ]));
        assert_eq!(
            ClientMessage::decode(&hello).unwrap(),
            ClientMessage::Hello {
                name: "ann".into(),
                features: Some(vec!["history".into(), "x".into()]),
                last_id: None,
                resume: None,
            }
        );
        let history = encode(map(&[
            ("type", "history".into()),
            ("before", Value::Nil),
            ("limit", 5.into()),
        ]));
        assert_eq!(
            ClientMessage::decode(&history).unwrap(),
            ClientMessage::History {
                before: None,
                limit: Some(5)
            }
        );
        let whisper = encode(map(&[
            ("type", "whisper".into()),
            ("to", "bo".into()),
            ("text", "hi".into()),
        ]));
        assert_eq!(
            ClientMessage::decode(&whisper).unwrap(),
            ClientMessage::Whisper {
                to: "bo".into(),
                text: "hi".into()
            }
        );
        let ping = encode(map(&[("type", "ping".into())]));
        assert_eq!(
            ClientMessage::decode(&ping).unwrap(),
            ClientMessage::Ping { id: None }
        );
        let ping = encode(map(&[("type", "ping".into()), ("id", 7.into())]));
        assert_eq!(
            ClientMessage::decode(&ping).unwrap(),
            ClientMessage::Ping {
                id: Some(PingId::Signed(7))
            }
        );
        let pong = encode(map(&[("type", "pong".into()), ("id", 3.into())]));
        assert_eq!(
            ClientMessage::decode(&pong).unwrap(),
            ClientMessage::Pong {
                id: PingId::Signed(3)
            }
        );
        for (t, m) in [("who", ClientMessage::Who), ("bye", ClientMessage::Bye)] {
            assert_eq!(
                ClientMessage::decode(&encode(map(&[("type", t.into())]))).unwrap(),
                m
            );
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let say = encode(map(&[
            ("type", "say".into()),
            ("text", "hi".into()),
            ("colour", "blue".into()),
        ]));
        assert_eq!(
            ClientMessage::decode(&say).unwrap(),
            ClientMessage::say("hi")
        );
    }

    #[test]
    fn frame_level_errors_are_bad_frame() {
        assert_eq!(code(&[0xc1]), ErrorCode::BadFrame); // never-used marker
        assert_eq!(code(&encode(Value::from(3))), ErrorCode::BadFrame);
        assert_eq!(
            code(&encode(map(&[("name", "x".into())]))),
            ErrorCode::BadFrame
        );
        assert_eq!(
            code(&encode(map(&[("type", 1.into())]))),
            ErrorCode::BadFrame
        );
        let mut trailing = encode(map(&[("type", "who".into())]));
        trailing.push(0xc0);
        assert_eq!(code(&trailing), ErrorCode::BadFrame);
    }

    #[test]
    fn unknown_type_and_bad_request() {
        assert_eq!(
            code(&encode(map(&[("type", "dance".into())]))),
            ErrorCode::UnknownType
        );
        assert_eq!(
            code(&encode(map(&[("type", "say".into())]))),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(&encode(map(&[("type", "say".into()), ("text", 5.into())]))),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(&encode(map(&[("type", "pong".into())]))),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(&encode(map(&[("type", "ping".into()), ("id", "x".into())]))),
            ErrorCode::BadRequest
        );
        for (key, value) in [
            ("features", Value::from("history")),
            ("features", Value::Array(vec![1.into()])),
        ] {
            let hello = map(&[("type", "hello".into()), ("name", "a".into()), (key, value)]);
            assert_eq!(code(&encode(hello)), ErrorCode::BadRequest);
        }
        for key in ["before", "limit"] {
            let history = map(&[("type", "history".into()), (key, "x".into())]);
            assert_eq!(code(&encode(history)), ErrorCode::BadRequest);
        }
        let say = map(&[
            ("type", "say".into()),
            ("text", "".into()),
            ("attachment", 3.into()),
        ]);
        assert_eq!(code(&encode(say)), ErrorCode::BadRequest);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut payload = vec![0x91; 100_000];
        payload.push(0xc0);
        assert_eq!(code(&payload), ErrorCode::BadFrame);
    }
}
