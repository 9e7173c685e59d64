//! Decoding and validating what a client sends: a frame payload to a
//! `ClientMessage` or a `DecodeError`, and the naming rule applied to `hello`.
//!
//! The input is one frame payload (no length prefix).

#![no_main]

use std::sync::Arc;

use anteroom_broker::room::names::{self, MAX_NAME_CHARS, NameError, Names};
use anteroom_protocol::{ClientMessage, ErrorCode, PingId, text};
use libfuzzer_sys::fuzz_target;
use rmpv::Value;

/// Longest error text a refusal may carry: the only echoed part, an unknown
/// `type`, is cut to 64 characters.
const MAX_DETAIL_BYTES: usize = 512;

fn map(kind: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut entries = vec![(Value::from("type"), Value::from(kind))];
    entries.extend(fields.into_iter().map(|(k, v)| (Value::from(k), v)));
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Map(entries)).unwrap();
    out
}

fn id_value(id: PingId) -> Value {
    match id {
        PingId::Signed(i) => Value::from(i),
        PingId::Unsigned(u) => Value::from(u),
    }
}

/// The message written out again as a plain MessagePack map.
fn reencode(message: &ClientMessage) -> Vec<u8> {
    match message {
        ClientMessage::Hello {
            name,
            features,
            resume,
            last_id,
        } => {
            let mut fields = vec![("name", name.as_ref().into())];
            if let Some(features) = features {
                let list = features.iter().map(|f| Value::from(f.as_ref())).collect();
                fields.push(("features", Value::Array(list)));
            }
            if let Some(token) = resume {
                fields.push(("resume", token.as_ref().into()));
            }
            if let Some(id) = last_id {
                fields.push(("last_id", Value::from(*id)));
            }
            map("hello", fields)
        }
        ClientMessage::Say { text, attachment } => {
            let mut fields = vec![("text", text.as_ref().into())];
            if let Some(url) = attachment {
                fields.push(("attachment", url.as_ref().into()));
            }
            map("say", fields)
        }
        ClientMessage::History { before, limit } => {
            let mut fields = Vec::new();
            if let Some(before) = before {
                fields.push(("before", Value::from(*before)));
            }
            if let Some(limit) = limit {
                fields.push(("limit", Value::from(*limit)));
            }
            map("history", fields)
        }
        ClientMessage::Whisper { to, text } => map(
            "whisper",
            vec![("to", to.as_ref().into()), ("text", text.as_ref().into())],
        ),
        ClientMessage::Who => map("who", vec![]),
        ClientMessage::Ping { id: None } => map("ping", vec![]),
        ClientMessage::Ping { id: Some(id) } => map("ping", vec![("id", id_value(*id))]),
        ClientMessage::Pong { id } => map("pong", vec![("id", id_value(*id))]),
        ClientMessage::Bye => map("bye", vec![]),
    }
}

fn check_name(raw: &str) {
    let Ok(name) = names::validate(raw) else {
        return;
    };
    let chars = name.chars().count();
    assert!((1..=MAX_NAME_CHARS).contains(&chars), "{name:?}");
    assert_eq!(name, name.trim());
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert!(!name.chars().any(text::is_forbidden_in_name), "{name:?}");
    assert!(raw.contains(name));
    assert_eq!(names::validate(name), Ok(name), "validation is idempotent");

    // Names are the same when they lower-case the same.
    let held = Arc::new(Names::new());
    let claim = held.claim(name, 1).expect("a fresh registry holds nothing");
    for other in [name.to_string(), name.to_lowercase(), name.to_uppercase()] {
        let same = other.to_lowercase() == name.to_lowercase();
        match held.claim(&other, 2) {
            Err(NameError::Taken) => assert!(same, "{other:?} taken by {name:?}"),
            Ok(_) => assert!(!same, "{other:?} given while {name:?} is held"),
            Err(error) => panic!("claim failed with {error:?}"),
        }
    }
    drop(claim);
    assert!(held.is_empty(), "a dropped claim releases the name");
}

fuzz_target!(|data: &[u8]| {
    // Any string reaches the naming rule, not only those inside a valid hello.
    check_name(&String::from_utf8_lossy(data));

    match ClientMessage::decode(data) {
        Ok(message) => {
            let again = reencode(&message);
            assert_eq!(ClientMessage::decode(&again).as_ref(), Ok(&message));
            // What the server decodes, a client encodes back the same.
            let frame = message.to_frame();
            assert_eq!(frame[..4], ((frame.len() - 4) as u32).to_be_bytes());
            assert_eq!(ClientMessage::decode(&frame[4..]).as_ref(), Ok(&message));
            if let ClientMessage::Hello { name, .. } = &message {
                check_name(name);
            }
        }
        Err(error) => {
            assert!(!error.detail.is_empty(), "{error:?}");
            assert!(error.detail.len() <= MAX_DETAIL_BYTES, "{error:?}");
            assert!(
                matches!(
                    error.code,
                    ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::BadRequest
                ),
                "{error:?}"
            );
        }
    }

    // Whatever the input, nested 64 levels deep it is refused as a bad frame
    // without recursing that far.
    let mut deep = vec![0x91; 64];
    deep.extend_from_slice(data);
    let mut wrapped = vec![0x82, 0xa4, b't', b'y', b'p', b'e', 0xa3, b'w', b'h', b'o'];
    wrapped.extend_from_slice(&[0xa1, b'x']);
    wrapped.extend_from_slice(&deep);
    assert_eq!(
        ClientMessage::decode(&wrapped).map_err(|e| e.code),
        Err(ErrorCode::BadFrame)
    );
});
