//! A whole session fed arbitrary client bytes: framing, decoding, the
//! handshake, requests and goodbye, on an in-memory connection to a fresh
//! broker (admission, roster, delivery and queue all running).
//!
//! Input: one byte seeding how the bytes are cut into writes (and, when its
//! top bit is set, pauses between writes, so timeouts and pings fire), then
//! the bytes the client sends before closing its side.
//!
//! What the server sends back must be well-formed frames that the client
//! library reads as known events, with nothing after `bye`. Without pauses,
//! the direct replies (errors, pongs, user lists) and the goodbye are also
//! predicted from the input by a plain model of the protocol and compared.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use anteroom_broker::config::Config;
use anteroom_broker::gateway::transport::ByteStream;
use anteroom_broker::gateway::{Gateway, session::run_session};
use anteroom_broker::room::Room;
use anteroom_broker::room::names;
use anteroom_client::Event;
use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;
use anteroom_protocol::{ClientMessage, PingId};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A reply the session sends straight back, in the order it sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Error(String),
    Pong(Option<PingId>),
    Users,
}

/// How the model expects the session to end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// The stream ran out: no goodbye, and replies still queued may be dropped.
    Gone,
    /// The server says `bye` with this reason after every reply.
    Bye(&'static str),
}

struct Prediction {
    replies: Vec<Reply>,
    ending: Ending,
    /// The name `welcome` must carry, once admitted.
    name: Option<String>,
    /// Valid `say`s beyond the burst, which may be refused as `rate_limited`.
    may_be_limited: usize,
    /// `rate_limited` errors that must come: for each `who` over `who_burst`,
    /// and for the frame over `request_burst` (the clock does not move).
    limited: usize,
}

/// The protocol as PROTOCOL.md states it, for one client alone in a room
/// with the default configuration.
/// `None` for a stream whose `hello` asks for version 1.1 features, which
/// this version-1 model does not describe.
fn predict(mut stream: &[u8], config: &Config) -> Option<Prediction> {
    let mut p = Prediction {
        replies: Vec::new(),
        ending: Ending::Gone,
        name: None,
        may_be_limited: 0,
        limited: 0,
    };
    let error = |p: &mut Prediction, code: &str| p.replies.push(Reply::Error(code.into()));
    let mut said = 0usize;
    let mut asked = 0usize;
    let mut frames = 0usize;
    while stream.len() >= 4 {
        let len = u32::from_be_bytes(stream[..4].try_into().unwrap()) as usize;
        if len > config.max_frame_bytes {
            error(&mut p, "frame_too_large");
            p.ending = Ending::Bye("protocol_error");
            return Some(p);
        }
        if stream.len() - 4 < len {
            return Some(p);
        }
        let payload = &stream[4..4 + len];
        stream = &stream[4 + len..];
        frames += 1;
        if config.request_rate > 0.0 && frames > config.request_burst as usize {
            p.limited += 1;
            p.ending = Ending::Bye("protocol_error");
            return Some(p);
        }
        if payload.is_empty() {
            error(&mut p, "bad_frame");
            p.ending = Ending::Bye("protocol_error");
            return Some(p);
        }
        let admitted = p.name.is_some();
        match ClientMessage::decode(payload) {
            Err(e) => error(&mut p, e.code.as_str()),
            Ok(ClientMessage::Hello {
                features: Some(_), ..
            }) if !admitted => return None,
            Ok(ClientMessage::Hello { name, .. }) => {
                if admitted {
                    error(&mut p, "bad_request");
                } else {
                    match names::validate(&name) {
                        Ok(name) => p.name = Some(name.to_string()),
                        Err(_) => error(&mut p, "name_invalid"),
                    }
                }
            }
            Ok(ClientMessage::Say { text, .. }) => {
                if !admitted {
                    error(&mut p, "handshake_required");
                } else if text.is_empty() {
                    error(&mut p, "bad_request");
                } else if text.len() > config.max_message_bytes {
                    error(&mut p, "message_too_long");
                } else {
                    said += 1;
                    if said > config.rate_burst as usize {
                        p.may_be_limited += 1;
                    }
                }
            }
            Ok(ClientMessage::Who) if admitted => {
                asked += 1;
                if config.who_rate > 0.0 && asked > config.who_burst as usize {
                    p.limited += 1;
                } else {
                    p.replies.push(Reply::Users);
                }
            }
            Ok(ClientMessage::Who) => error(&mut p, "handshake_required"),
            Ok(ClientMessage::Ping { id }) => p.replies.push(Reply::Pong(id)),
            Ok(ClientMessage::Pong { .. }) => {}
            Ok(ClientMessage::History { .. } | ClientMessage::Whisper { .. }) => {
                error(&mut p, "unknown_type")
            }
            Ok(ClientMessage::Bye) => {
                p.ending = Ending::Bye("bye");
                return Some(p);
            }
        }
    }
    Some(p)
}

/// Cuts of 0 to 63 bytes and, if asked, pauses of up to a minute.
fn schedule(seed: u8) -> impl Iterator<Item = (usize, Duration)> {
    let pauses = seed & 0x80 != 0;
    let mut x = u32::from(seed) | 0x100;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let pause = if pauses && x % 4 == 0 {
            Duration::from_millis(u64::from(x >> 8) % 60_000)
        } else {
            Duration::ZERO
        };
        Some(((x % 64) as usize, pause))
    })
}

/// Runs one session over an in-memory connection; returns what the server sent.
async fn converse(config: Config, seed: u8, input: Vec<u8>) -> Vec<u8> {
    let shutdown = CancellationToken::new();
    let Room {
        bus,
        roster,
        shards,
        chat,
        held,
        components,
    } = Room::start(&config, &shutdown);
    let gateway = Arc::new(Gateway::new(
        config,
        bus.clone(),
        roster,
        shards,
        chat,
        held,
        shutdown,
    ));

    let (client, server) = tokio::io::duplex(4096);
    let (server_read, server_write) = tokio::io::split(server);
    let session = tokio::spawn(run_session(
        gateway,
        ByteStream::new(server_read, server_write),
    ));
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let sender = tokio::spawn(async move {
        let mut rest = &input[..];
        for (n, pause) in schedule(seed) {
            if rest.is_empty() {
                break;
            }
            let n = n.min(rest.len());
            if to_server.write_all(&rest[..n]).await.is_err() {
                return;
            }
            rest = &rest[n..];
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        let _ = to_server.shutdown().await;
    });
    let mut received = Vec::new();
    from_server
        .read_to_end(&mut received)
        .await
        .expect("in-memory reads do not fail");
    session.await.expect("the session does not panic");
    sender.await.expect("the sender does not panic");
    bus.close();
    for component in components {
        component
            .await
            .expect("components stop when the bus closes");
    }
    received
}

fuzz_target!(|data: &[u8]| {
    let [seed, input @ ..] = data else {
        return;
    };
    let config = Config::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let output = runtime.block_on(converse(config.clone(), *seed, input.to_vec()));

    // Well-formed frames, each a known event, nothing after `bye`.
    let mut rest = &output[..];
    let mut events = Vec::new();
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "a partial length prefix at the end");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(len <= MAX_SERVER_FRAME_BYTES);
        assert!(rest.len() - 4 >= len, "a partial frame at the end");
        let event: Event = Event::decode(&rest[4..4 + len])
            .unwrap_or_else(|e| panic!("server frame is not an event: {e}"));
        assert_ne!(event, Event::Unknown);
        if let Event::Error { code, text } = &event {
            assert!(
                *code != anteroom_protocol::ErrorCode::Unknown && !text.is_empty(),
                "{event:?}"
            );
        }
        assert!(
            !matches!(events.last(), Some(Event::Bye { .. })),
            "{event:?} after bye"
        );
        events.push(event);
        rest = &rest[4 + len..];
    }
    if seed & 0x80 != 0 {
        // Time passed, so timeouts and pings may have come first.
        return;
    }

    let Some(p) = predict(input, &config) else {
        return;
    };
    let mut replies = Vec::new();
    let mut limited = 0;
    let mut bye = None;
    for event in &events {
        match event {
            Event::Error { code, .. } if *code == anteroom_protocol::ErrorCode::RateLimited => {
                limited += 1
            }
            Event::Error { code, .. } => replies.push(Reply::Error(code.to_string())),
            Event::Pong { id } => replies.push(Reply::Pong(*id)),
            Event::Users { .. } => replies.push(Reply::Users),
            Event::Welcome { name, users, .. } => {
                assert_eq!(
                    Some(name.as_ref()),
                    p.name.as_deref(),
                    "welcomed under another name"
                );
                assert!(users.contains(name), "{users:?} lacks {name}");
            }
            Event::Bye { reason, .. } => bye = Some(reason.to_string()),
            _ => {}
        }
    }
    assert!(
        limited <= p.limited + p.may_be_limited,
        "{limited} > {} + {}",
        p.limited,
        p.may_be_limited
    );
    match p.ending {
        Ending::Bye(reason) => {
            assert!(limited >= p.limited, "{limited} < {}", p.limited);
            assert_eq!(bye.as_deref(), Some(reason));
            assert_eq!(replies, p.replies);
        }
        Ending::Gone => {
            assert_eq!(bye, None);
            assert!(
                p.replies.starts_with(&replies),
                "sent {replies:?}, expected a prefix of {:?}",
                p.replies
            );
        }
    }
});
