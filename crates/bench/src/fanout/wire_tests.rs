//! The parsers fed real frame streams cut at every byte boundary, and
//! garbage: the same frames must come out however the bytes arrive, and
//! nothing may panic.

use std::borrow::Cow;

use anteroom_protocol::{LeftReason, ServerMessage};

use super::*;
use crate::fanout::members::Inbox;

/// An owned copy of a frame, to compare across buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Message(Vec<u8>),
    Ready,
    Greeting,
    Ping,
    MapPing(Vec<u8>),
    Closed,
    Other,
}

impl From<Frame<'_>> for Seen {
    fn from(frame: Frame<'_>) -> Self {
        match frame {
            Frame::Message(payload) => Seen::Message(payload.to_vec()),
            Frame::Ready => Seen::Ready,
            Frame::Greeting => Seen::Greeting,
            Frame::Ping => Seen::Ping,
            Frame::MapPing(map) => Seen::MapPing(map.to_vec()),
            Frame::Closed => Seen::Closed,
            Frame::Other => Seen::Other,
        }
    }
}

/// What a reader sees when the stream arrives in `chunks`, through the
/// same buffer the members use.
fn feed(wire: Wire, chunks: &[&[u8]]) -> Result<Vec<Seen>, WireError> {
    let mut inbox = Inbox::new(b"");
    let mut seen = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let spare = inbox.spare()?;
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            inbox.filled(n);
            rest = &rest[n..];
            while let Some(frame) = inbox.next(wire)? {
                seen.push(frame.into());
            }
        }
    }
    Ok(seen)
}

/// `stream` cut in two at every byte boundary, and one byte at a time,
/// must read as `expected` every time.
fn every_cut(wire: Wire, stream: &[u8], expected: &[Seen]) {
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(feed(wire, &[a, b]).unwrap(), expected, "cut at byte {cut}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(feed(wire, &bytes).unwrap(), expected, "byte by byte");
}

fn message(from: &str, text: &str) -> ServerMessage<'static> {
    ServerMessage::Message {
        id: 42,
        from: Cow::Owned(from.into()),
        text: Cow::Owned(text.into()),
        ts: 1_700_000_000_000,
        attachment: None,
    }
}

fn msgpack(value: &rmpv::Value) -> Vec<u8> {
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, value).unwrap();
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

#[test]
fn anteroom_frames_read_the_same_at_every_cut() {
    let short = "0000000100000000000000ff";
    let stamp128 = format!("{short}{}", "x".repeat(104));
    let stamp300 = format!("{short}{}", "y".repeat(276));
    let frames = [
        ServerMessage::Welcome {
            name: "m00001".into(),
            users: vec!["m00000".into(), "m00001".into()],
            capacity: 1000,
            text: "Welcome!".into(),
            features: None,
            max_upload_bytes: None,
            upload_token: None,
            resume: None,
            resume_grace_s: None,
            resumed: None,
        },
        ServerMessage::Joined {
            name: "text".into(),
            ts: 1,
        },
        message("m00000", &stamp128),
        message("text", short),
        message("m00002", &stamp300),
        ServerMessage::Left {
            name: "m00002".into(),
            reason: LeftReason::Bye,
            ts: 2,
        },
    ];
    let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_frame().to_vec()).collect();
    every_cut(
        Wire::Anteroom,
        &stream,
        &[
            Seen::Other,
            Seen::Other,
            Seen::Message(stamp128.clone().into_bytes()),
            Seen::Message(short.as_bytes().to_vec()),
            Seen::Message(stamp300.into_bytes()),
            Seen::Other,
        ],
    );
}

#[test]
fn anteroom_keys_are_found_in_any_order_and_odd_payloads_are_skipped() {
    use rmpv::Value;
    let reordered = Value::Map(vec![
        ("text".into(), "hello".into()),
        ("ts".into(), Value::from(1.5f64)),
        ("id".into(), Value::from(u64::MAX)),
        ("from".into(), Value::Nil),
        ("type".into(), "message".into()),
    ]);
    let nested_first = Value::Map(vec![
        ("type".into(), "message".into()),
        ("extra".into(), Value::Array(vec![1.into()])),
        ("text".into(), "hello".into()),
    ]);
    let no_text = Value::Map(vec![("type".into(), "message".into())]);
    let not_a_map = Value::Array(vec!["message".into()]);
    let mut stream = msgpack(&reordered);
    for value in [&nested_first, &no_text, &not_a_map] {
        stream.extend(msgpack(value));
    }
    stream.extend_from_slice(&[0, 0, 0, 0]);
    every_cut(
        Wire::Anteroom,
        &stream,
        &[
            Seen::Message(b"hello".to_vec()),
            Seen::Other,
            Seen::Other,
            Seen::Other,
            Seen::Other,
        ],
    );
}

#[test]
fn an_anteroom_frame_over_the_limit_is_an_error() {
    let len = (MAX_FRAME as u32 + 1).to_be_bytes();
    assert_eq!(Wire::Anteroom.parse(&len), Err(WireError::TooLong));
    let at_limit = (MAX_FRAME as u32).to_be_bytes();
    assert_eq!(Wire::Anteroom.parse(&at_limit), Ok(None));
}

/// A server WebSocket frame: FIN and `opcode`, unmasked, with the
/// shortest length form (or the 64-bit one if `long`).
fn ws_server_frame(opcode: u8, payload: &[u8], long: bool) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 && !long => frame.push(n as u8),
        n if n <= 0xffff && !long => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// A server message as one binary WebSocket message: its map alone.
fn ws_message(message: &ServerMessage<'_>, long: bool) -> Vec<u8> {
    ws_server_frame(0x2, &message.to_frame()[4..], long)
}

#[test]
fn websocket_frames_read_the_same_at_every_cut() {
    use anteroom_protocol::PingId;
    let short = "0000000100000000000000ff";
    let stamp128 = format!("{short}{}", "x".repeat(104));
    // Over 125 bytes of map: the 16-bit length.
    let stamp300 = format!("{short}{}", "y".repeat(276));
    let ping = ServerMessage::Ping {
        id: Some(PingId::Signed(7)),
    };
    let ping_map = ping.to_frame()[4..].to_vec();
    let mut stream = ws_message(
        &ServerMessage::Welcome {
            name: "m00001".into(),
            users: vec!["m00000".into(), "m00001".into()],
            capacity: 1000,
            text: "Welcome!".into(),
            features: None,
            max_upload_bytes: None,
            upload_token: None,
            resume: None,
            resume_grace_s: None,
            resumed: None,
        },
        false,
    );
    stream.extend(ws_message(&message("m00000", &stamp128), false));
    // WebSocket pings and pongs: skipped, payload and all.
    stream.extend(ws_server_frame(0x9, b"ping!", false));
    stream.extend(ws_server_frame(0xa, b"", false));
    stream.extend(ws_message(&message("m00002", &stamp300), false));
    // The 64-bit length form, though a server uses it only past 64 KiB.
    stream.extend(ws_message(&message("text", short), true));
    stream.extend(ws_message(&ping, false));
    stream.extend(ws_message(
        &ServerMessage::Joined {
            name: "text".into(),
            ts: 1,
        },
        false,
    ));
    stream.extend(ws_server_frame(0x8, &[0x03, 0xe8], false));
    every_cut(
        Wire::Ws,
        &stream,
        &[
            Seen::Other,
            Seen::Message(stamp128.clone().into_bytes()),
            Seen::Other,
            Seen::Other,
            Seen::Message(stamp300.into_bytes()),
            Seen::Message(short.as_bytes().to_vec()),
            Seen::MapPing(ping_map),
            Seen::Other,
            Seen::Closed,
        ],
    );
}

#[test]
fn websocket_frames_a_server_never_sends_are_errors() {
    let malformed = |bytes: &[u8]| {
        assert!(
            matches!(Wire::Ws.parse(bytes), Err(WireError::Malformed(_))),
            "{bytes:02x?}"
        )
    };
    // Masked, reserved bits, text, a fragment and its continuation, an
    // unknown opcode, a fragmented or long control frame.
    malformed(&[0x82, 0x81, 1, 2, 3, 4, 0]);
    malformed(&[0xc2, 0x01, 0]);
    malformed(&[0x81, 0x01, b'a']);
    malformed(&[0x02, 0x01, 0]);
    malformed(&[0x80, 0x01, 0]);
    malformed(&[0x83, 0x00]);
    malformed(&[0x09, 0x00]);
    malformed(&[0x89, 126, 0, 126]);
    // Too long, said by the 16-bit or the 64-bit form, before the payload.
    let mut over = vec![0x82, 127];
    over.extend_from_slice(&(MAX_FRAME as u64 + 1).to_be_bytes());
    assert_eq!(Wire::Ws.parse(&over), Err(WireError::TooLong));
    let mut huge = vec![0x82, 127];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    assert_eq!(Wire::Ws.parse(&huge), Err(WireError::TooLong));
    let mut at_limit = vec![0x82, 127];
    at_limit.extend_from_slice(&(MAX_FRAME as u64).to_be_bytes());
    assert_eq!(Wire::Ws.parse(&at_limit), Ok(None));
    // Incomplete headers wait for more.
    for head in [&[][..], &[0x82], &[0x82, 126, 0], &[0x82, 127, 0, 0, 0]] {
        assert_eq!(Wire::Ws.parse(head), Ok(None), "{head:02x?}");
    }
}

#[test]
fn a_websocket_ping_map_is_answered_with_a_masked_pong_echoing_its_id() {
    use anteroom_protocol::{ClientMessage, PingId};
    let ping = ServerMessage::Ping {
        id: Some(PingId::Signed(-3)),
    };
    let mut out = Vec::new();
    super::super::members::answer_ping(&mut out, &ping.to_frame()[4..]);
    assert_eq!(out[0], 0x82);
    assert_eq!(out[1] & 0x80, 0x80);
    let len = usize::from(out[1] & 0x7f);
    let mask = &out[2..6];
    let map: Vec<u8> = out[6..]
        .iter()
        .zip(mask.iter().cycle())
        .map(|(b, m)| b ^ m)
        .collect();
    assert_eq!(map.len(), len);
    assert_eq!(
        ClientMessage::decode(&map).unwrap(),
        ClientMessage::Pong {
            id: PingId::Signed(-3)
        }
    );
    // A ping without an id is owed nothing.
    let mut none = Vec::new();
    let bare = ServerMessage::Ping { id: None };
    super::super::members::answer_ping(&mut none, &bare.to_frame()[4..]);
    assert!(none.is_empty());
}

#[test]
fn redis_pushes_read_the_same_at_every_cut() {
    let stream = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n\
        *3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$7\r\nhe\r\nllo\r\n\
        :12\r\n+OK\r\n\
        *4\r\n$8\r\npmessage\r\n$2\r\nr*\r\n$4\r\nroom\r\n$1\r\nx\r\n\
        *3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$0\r\n\r\n";
    every_cut(
        Wire::Resp,
        stream,
        &[
            Seen::Ready,
            Seen::Message(b"he\r\nllo".to_vec()),
            Seen::Other,
            Seen::Other,
            Seen::Other,
            Seen::Message(Vec::new()),
        ],
    );
}

#[test]
fn redis_errors_and_garbage_are_errors() {
    let refused = Wire::Resp.parse(b"-ERR unknown command\r\n");
    assert_eq!(
        refused,
        Err(WireError::Refused("ERR unknown command".into()))
    );
    let malformed = [
        &b"hello\r\n"[..],
        b"*99\r\n",
        b"*x\r\n",
        b"*3\r\n$abc\r\n",
        b"*1\r\n+OK\r\n",
        b"*1\r\n$2\r\nabc\r\n",
        b"*1\r\n$-1\r\n",
        b"\r\n",
        b"*1\n",
    ];
    for bytes in malformed {
        assert!(
            matches!(Wire::Resp.parse(bytes), Err(WireError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let huge = format!("*1\r\n${}\r\n", MAX_FRAME + 1);
    assert_eq!(Wire::Resp.parse(huge.as_bytes()), Err(WireError::TooLong));
    assert_eq!(Wire::Resp.parse(&[b'*'; MAX_LINE]), Err(WireError::TooLong));
    assert_eq!(Wire::Resp.parse(&[b'*'; MAX_LINE - 1]), Ok(None));
}

#[test]
fn nats_operations_read_the_same_at_every_cut() {
    let stream = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n\
        +OK\r\nPING\r\nPONG\r\n\
        MSG room 1 5\r\nhello\r\n\
        MSG room 1 _INBOX.x 7\r\nhe\r\nllo\r\n\
        -ERR 'Unknown Protocol Operation'\r\n\
        HMSG room 1 12 17\r\nNATS/1.0\r\n\r\nhello\r\n\
        msg\troom 1  0\r\n\r\n";
    every_cut(
        Wire::Nats,
        stream,
        &[
            Seen::Greeting,
            Seen::Other,
            Seen::Ping,
            Seen::Ready,
            Seen::Message(b"hello".to_vec()),
            Seen::Message(b"he\r\nllo".to_vec()),
            Seen::Other,
            Seen::Other,
            Seen::Message(Vec::new()),
        ],
    );
}

#[test]
fn nats_garbage_is_an_error() {
    for bytes in [
        &b"FOO\r\n"[..],
        b"MSG room\r\n",
        b"MSG room 1 a b c\r\n",
        b"MSG room 1 x\r\n",
        b"MSG room 1 2\r\nabc\r\n",
        b"PING\n",
        b"\r\n",
    ] {
        assert!(
            matches!(Wire::Nats.parse(bytes), Err(WireError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let huge = format!("MSG room 1 {}\r\n", MAX_FRAME + 1);
    assert_eq!(Wire::Nats.parse(huge.as_bytes()), Err(WireError::TooLong));
    assert_eq!(Wire::Nats.parse(&[b'I'; MAX_LINE]), Err(WireError::TooLong));
}

#[test]
fn what_the_bench_sends_is_well_formed() {
    let mut out = Vec::new();
    resp_publish(&mut out, b"hi");
    assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$2\r\nhi\r\n");
    out.clear();
    nats_publish(&mut out, b"hi");
    assert_eq!(out, b"PUB room 2\r\nhi\r\n");
    assert!(
        Wire::Resp
            .subscribe_first()
            .starts_with(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nroom\r\n")
    );
    assert!(
        Wire::Nats
            .subscribe_on_greeting()
            .ends_with(b"SUB room 1\r\nPING\r\n")
    );
}

#[test]
fn random_and_damaged_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    let valid: [(Wire, Vec<u8>); 4] = [
        (
            Wire::Anteroom,
            message("m00000", "0000000100000000000000ff")
                .to_frame()
                .to_vec(),
        ),
        (
            Wire::Resp,
            b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\nhello\r\n".to_vec(),
        ),
        (Wire::Nats, b"MSG room 1 5\r\nhello\r\nPING\r\n".to_vec()),
        (
            Wire::Ws,
            ws_message(&message("m00000", "0000000100000000000000ff"), false),
        ),
    ];
    for _ in 0..20_000 {
        for (wire, frame) in &valid {
            let mut bytes = if rng.bool() {
                let mut damaged = frame.clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..damaged.len());
                    damaged[at] = rng.u8(..);
                }
                damaged
            } else {
                (0..rng.usize(..64)).map(|_| rng.u8(..)).collect()
            };
            bytes.truncate(rng.usize(..=bytes.len()));
            let _ = feed(*wire, &[&bytes]);
        }
    }
}
