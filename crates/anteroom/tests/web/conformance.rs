//! WebSocket conformance of `/ws`, with a client written here from RFC 6455
//! (handshake, masking, opcodes, FIN bits), sharing no code with the
//! server's WebSocket library.
//!
//! The property: however a client cuts its messages into fragments
//! (continuation frames, empty ones included) and whatever control frames
//! it puts between them (pings, unsolicited pongs), the session sees
//! exactly its messages, in order: every `say` comes back as a `message`
//! with the same text, in the order sent. Every ping is answered by a pong
//! with the same payload, in order (RFC 6455 would allow answering only
//! the latest of several unanswered pings; the server answers each before
//! it reads the next frame, so none is skipped). A close from the client
//! is echoed with its code, and the connection then ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::kit::{self, SUBPROTOCOL, decode, encode};
use crate::support::map;

const CONTINUATION: u8 = 0x0;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// How long any one step may take before the case fails.
const STEP: Duration = Duration::from_secs(5);

/// One frame as a client sends it: masked with `mask`.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend((len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend((len as u64).to_be_bytes());
    }
    out.extend(mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One frame from the server: FIN, opcode, payload (servers do not mask).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    assert_eq!(head[0] & 0x70, 0, "reserved bits set");
    assert_eq!(head[1] & 0x80, 0, "a server frame is masked");
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    assert!(len <= 16 << 20, "server frame of {len} bytes");
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
}

/// What the server sent, in order.
#[derive(Debug)]
enum Got {
    Message(Vec<u8>),
    Pong(Vec<u8>),
    Close(Vec<u8>),
    End,
}

/// Opens `/ws` by hand, offering the subprotocol; returns the socket's
/// halves with anything read past the handshake put back in front.
async fn open(addr: SocketAddr) -> (impl AsyncRead + Unpin, tokio::net::tcp::OwnedWriteHalf) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let request = kit::upgrade(
        &addr.to_string(),
        &format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"),
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    // RFC 6455's example key has a known answer.
    assert!(
        head.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nsec-websocket-protocol: {SUBPROTOCOL}\r\n")),
        "{head}"
    );
    let (read, write) = stream.into_split();
    let early = std::io::Cursor::new(buf[end..].to_vec());
    (AsyncReadExt::chain(early, read), write)
}

/// Reads frames into `got` until the connection ends, reassembling
/// fragmented messages.
async fn reader(mut r: impl AsyncRead + Unpin, got: mpsc::UnboundedSender<Got>) {
    let mut partial: Option<Vec<u8>> = None;
    loop {
        let Ok((fin, opcode, payload)) = read_frame(&mut r).await else {
            let _ = got.send(Got::End);
            return;
        };
        let whole = match (opcode, partial.as_mut()) {
            (PONG, _) => Got::Pong(payload),
            (CLOSE, _) => Got::Close(payload),
            (PING, _) => panic!("the server pinged: {payload:?}"),
            (CONTINUATION, Some(so_far)) => {
                so_far.extend(payload);
                if !fin {
                    continue;
                }
                Got::Message(partial.take().unwrap())
            }
            (BINARY, None) if fin => Got::Message(payload),
            (BINARY, None) => {
                partial = Some(payload);
                continue;
            }
            _ => panic!("unexpected frame: opcode {opcode}, fin {fin}"),
        };
        if got.send(whole).is_err() {
            return;
        }
    }
}

/// One message's plan: where its payload is cut, and the control frames
/// sent before each fragment after the first (`true`: a ping, `false`: an
/// unsolicited pong, which the server ignores).
#[derive(Debug, Clone)]
struct Plan {
    cuts: Vec<prop::sample::Index>,
    controls: Vec<Vec<(bool, Vec<u8>)>>,
    masks: Vec<[u8; 4]>,
}

#[derive(Debug, Clone)]
struct Case {
    texts: Vec<String>,
    /// One plan for `hello`, then one for each text.
    plans: Vec<Plan>,
    /// The close frame's code and reason; `None`: a close without a body.
    close: Option<(u16, String)>,
}

fn plan() -> impl Strategy<Value = Plan> {
    let control = (any::<bool>(), prop::collection::vec(any::<u8>(), 0..=125));
    (
        prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        prop::collection::vec(prop::collection::vec(control, 0..3), 5),
        prop::collection::vec(any::<[u8; 4]>(), 5),
    )
        .prop_map(|(cuts, controls, masks)| Plan {
            cuts,
            controls,
            masks,
        })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "\\PC{1,40}",
        3 => "[a-z ]{100,3000}",
        // Fragments and echoes over 64 KiB need the 64-bit length.
        1 => (66_000usize..70_000).prop_map(|n| "w".repeat(n)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..6)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(text(), n),
                prop::collection::vec(plan(), n + 1),
                prop::option::of((
                    prop_oneof![Just(1000u16), Just(1001), Just(4000)],
                    "[a-z]{0,20}",
                )),
            )
        })
        .prop_map(|(texts, plans, close)| Case {
            texts,
            plans,
            close,
        })
}

/// The frames of one message sent by `plan`, and the ping payloads in them.
fn fragments(payload: &[u8], plan: &Plan) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut cuts: Vec<usize> = plan
        .cuts
        .iter()
        .map(|i| i.index(payload.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(payload.len());
    let mut wire = Vec::new();
    let mut pings = Vec::new();
    let mut start = 0;
    for (i, &end) in cuts.iter().enumerate() {
        if i > 0 {
            for (ping, data) in &plan.controls[i - 1] {
                let opcode = if *ping { PING } else { PONG };
                wire.extend(frame(true, opcode, data, plan.masks[(i + 1) % 5]));
                if *ping {
                    pings.push(data.clone());
                }
            }
        }
        let opcode = if i == 0 { BINARY } else { CONTINUATION };
        let last = i + 1 == cuts.len();
        wire.extend(frame(last, opcode, &payload[start..end], plan.masks[i]));
        start = end;
    }
    (wire, pings)
}

async fn next(got: &mut mpsc::UnboundedReceiver<Got>) -> Result<Got, TestCaseError> {
    match tokio::time::timeout(STEP, got.recv()).await {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err(TestCaseError::fail("the reader stopped")),
        Err(_) => Err(TestCaseError::fail("nothing from the server in time")),
    }
}

async fn run(addr: SocketAddr, name: String, case: Case) -> Result<(), TestCaseError> {
    let (read, mut write) = open(addr).await;
    let (tx, mut got) = mpsc::unbounded_channel();
    let reading = tokio::spawn(reader(read, tx));

    let mut payloads = vec![encode(&map(&[
        ("type", "hello".into()),
        ("name", name.as_str().into()),
    ]))];
    payloads.extend(
        case.texts
            .iter()
            .map(|t| encode(&map(&[("type", "say".into()), ("text", t.as_str().into())]))),
    );
    let mut wire = Vec::new();
    let mut pings = Vec::new();
    for (payload, plan) in payloads.iter().zip(&case.plans) {
        let (frames, sent) = fragments(payload, plan);
        wire.extend(frames);
        pings.extend(sent);
    }
    write.write_all(&wire).await.unwrap();

    let (mut echoed, mut pongs) = (Vec::new(), Vec::new());
    while echoed.len() < case.texts.len() || pongs.len() < pings.len() {
        match next(&mut got).await? {
            Got::Message(payload) => {
                let v: Value = decode(&payload);
                match v["type"].as_str().unwrap() {
                    "message" if v["from"].as_str() == Some(&name) => {
                        echoed.push(v["text"].as_str().unwrap().to_string())
                    }
                    "welcome" | "message" | "joined" | "left" => {}
                    _ => return Err(TestCaseError::fail(format!("unexpected {v}"))),
                }
            }
            Got::Pong(data) => pongs.push(data),
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
    }
    prop_assert_eq!(&echoed, &case.texts, "the session saw other messages");
    prop_assert_eq!(&pongs, &pings, "pongs do not answer the pings");

    let body = match &case.close {
        Some((code, reason)) => [&code.to_be_bytes()[..], reason.as_bytes()].concat(),
        None => Vec::new(),
    };
    write
        .write_all(&frame(true, CLOSE, &body, [7, 1, 2, 3]))
        .await
        .unwrap();
    loop {
        match next(&mut got).await? {
            Got::Close(echo) => {
                prop_assert_eq!(echo.get(..2), body.get(..2), "the close code is echoed");
                break;
            }
            Got::Message(_) => {}
            other => {
                return Err(TestCaseError::fail(format!(
                    "expected a close, got {other:?}"
                )));
            }
        }
    }
    prop_assert!(
        matches!(next(&mut got).await?, Got::End),
        "nothing after the close"
    );
    reading.await.unwrap();
    Ok(())
}

#[test]
fn fragmented_messages_with_interleaved_pings_reach_the_session_intact() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(kit::start(|c| {
        c.max_frame_bytes = 128 * 1024;
        c.max_message_bytes = 100_000;
        c.rate_limit = 1e6;
        c.rate_burst = 1_000_000;
        c.request_rate = 0.0;
    }));
    let addr = kit::web(&server);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let n = AtomicUsize::new(0);
    // How many cases fragmented a message, and how many pinged in between.
    let (fragmented, pinged) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let outcome = runner.run(&case(), |case| {
        let fragments = case.plans.iter().any(|p| !p.cuts.is_empty());
        fragmented.fetch_add(usize::from(fragments), Ordering::Relaxed);
        let pings = case.plans.iter().any(|p| {
            p.controls[..p.cuts.len()]
                .iter()
                .flatten()
                .any(|(ping, _)| *ping)
        });
        pinged.fetch_add(usize::from(pings), Ordering::Relaxed);
        let n = n.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(run(addr, format!("p{n}"), case))
    });
    runtime.block_on(server.stop());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let (fragmented, pinged) = (fragmented.into_inner(), pinged.into_inner());
    assert!(
        fragmented > 10 && pinged > 10,
        "the cases hardly fragment ({fragmented}) or ping ({pinged})"
    );
}

#[tokio::test]
async fn fragments_adding_up_past_max_frame_bytes_are_frame_too_large() {
    let server = kit::start(|c| {
        c.max_frame_bytes = 1024;
        c.max_message_bytes = 512;
    })
    .await;
    let (read, mut write) = open(kit::web(&server)).await;
    let (tx, mut got) = mpsc::unbounded_channel();
    tokio::spawn(reader(read, tx));
    let mask = [1, 2, 3, 4];
    // Each fragment is small; together they pass the limit.
    let mut wire = frame(false, BINARY, &[0x80; 600], mask);
    wire.extend(frame(true, PING, b"between", mask));
    wire.extend(frame(true, CONTINUATION, &[0x80; 600], mask));
    write.write_all(&wire).await.unwrap();
    let mut maps = Vec::new();
    let close = loop {
        match next(&mut got).await.unwrap() {
            Got::Message(payload) => maps.push(decode(&payload)),
            Got::Pong(data) => assert_eq!(data, b"between"),
            Got::Close(body) => break body,
            Got::End => panic!("ended without a close; got {maps:?}"),
        }
    };
    let kinds: Vec<_> = maps
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap(),
                v["code"].as_str().or(v["reason"].as_str()),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("error", Some("frame_too_large")),
            ("bye", Some("protocol_error"))
        ]
    );
    assert_eq!(close.get(..2), Some(&1008u16.to_be_bytes()[..]));
    server.stop().await;
}
