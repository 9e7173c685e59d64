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

#[test]
fn every_server_message_decodes_to_what_was_encoded() {
    let all = [
        ServerMessage::Welcome {
            name: "ann".into(),
            users: vec!["bob".into(), "ann".into()],
            capacity: 2,
            text: WELCOME_DIRECT.into(),
            features: None,
            max_upload_bytes: None,
            upload_token: None,
            resume: Some("tok".into()),
            resumed: Some(true),
            resume_grace_s: Some(30),
        },
        ServerMessage::Queued {
            position: 1,
            waiting: 3,
            text: queued_text(1).into(),
            features: None,
            eta_s: Some(12),
            resume: Some("tok".into()),
            resumed: Some(false),
            resume_grace_s: None,
        },
        ServerMessage::Presence {
            joined: vec!["ann".into()],
            left: vec![PresenceLeft {
                name: "bob".into(),
                reason: LeftReason::SlowConsumer,
            }],
            ts: 4,
        },
        ServerMessage::Message {
            id: 7,
            from: "ann".into(),
            text: "hi".into(),
            ts: 1,
            attachment: None,
        },
        ServerMessage::Joined {
            name: "bob".into(),
            ts: 2,
        },
        ServerMessage::Left {
            name: "bob".into(),
            reason: LeftReason::IdleTimeout,
            ts: 3,
        },
        ServerMessage::Users {
            names: vec!["ann".into()],
        },
        ServerMessage::Gap { missed: 4 },
        ServerMessage::Error {
            code: ErrorCode::NameTaken,
            text: "taken".into(),
        },
        ServerMessage::Ping {
            id: Some(PingId::Unsigned(u64::MAX)),
        },
        ServerMessage::Pong { id: None },
        ServerMessage::Bye {
            reason: ByeReason::ServerFull,
            text: ByeReason::ServerFull.text().into(),
        },
    ];
    for message in all {
        let frame = message.to_frame();
        assert_eq!(ServerMessage::decode(&frame[4..]).unwrap(), message);
    }
}

#[test]
fn every_client_message_decodes_to_what_was_encoded() {
    let all = [
        ClientMessage::Hello {
            name: "ann".into(),
            features: None,
            last_id: None,
            resume: None,
        },
        ClientMessage::Say {
            text: "hi".into(),
            attachment: None,
        },
        ClientMessage::Who,
        ClientMessage::Ping { id: None },
        ClientMessage::Ping {
            id: Some(PingId::Signed(-1)),
        },
        ClientMessage::Pong {
            id: PingId::Signed(5),
        },
        ClientMessage::Bye,
    ];
    for message in all {
        let frame = message.to_frame();
        assert_eq!(ClientMessage::decode(&frame[4..]).unwrap(), message);
    }
}

/// A `users` frame whose `names` array has `count` elements, each
/// `element` (already encoded).
fn users_frame(count: u32, element: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x82];
    payload.extend_from_slice(b"\xa4type\xa5users\xa5names\xdd");
    payload.extend_from_slice(&count.to_be_bytes());
    for _ in 0..count {
        payload.extend_from_slice(element);
    }
    payload
}

#[test]
fn a_frame_of_millions_of_tiny_values_is_refused_before_decoding() {
    // Nearly 16 MiB of one-byte empty strings: decoded, about 1 GB.
    let payload = users_frame(16_000_000, &[0xa0]);
    let error = ServerMessage::decode(&payload).unwrap_err();
    assert!(
        matches!(
            error,
            ServerDecodeError::Shape(ShapeError::TooManyValues { .. })
        ),
        "{error}"
    );
    // The same inside a key the client does not know.
    let mut unknown = vec![
        0x82, 0xa4, b't', b'y', b'p', b'e', 0xa4, b'p', b'o', b'n', b'g',
    ];
    unknown.extend_from_slice(&[0xa4, b'j', b'u', b'n', b'k', 0xdd]);
    unknown.extend_from_slice(&1_000_000u32.to_be_bytes());
    unknown.extend(std::iter::repeat_n(0xc0, 1_000_000));
    assert!(ServerMessage::decode(&unknown).is_err());
}

#[test]
fn a_roster_of_a_large_room_still_decodes() {
    let name = b"\xa5m0000";
    let payload = users_frame(100_000, name);
    match ServerMessage::decode(&payload).unwrap() {
        ServerMessage::Users { names } => assert_eq!(names.len(), 100_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_ping_is_answered_with_its_id_and_nothing_else_is() {
    let ping = ServerMessage::Ping {
        id: Some(PingId::Signed(9)),
    };
    assert_eq!(
        ping.answer(),
        Some(ClientMessage::Pong {
            id: PingId::Signed(9)
        })
    );
    assert_eq!(ServerMessage::Gap { missed: 1 }.answer(), None);
}
