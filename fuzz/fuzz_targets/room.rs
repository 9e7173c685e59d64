//! A room of several clients driven by arbitrary operations: joining,
//! talking, asking, leaving, vanishing and sending garbage, in a room of two
//! seats with a queue behind it, so promotions, departures and position
//! updates interleave.
//!
//! Input: a sequence of operations, two bytes each: the client (of four) and
//! what it does. Raw bytes for a client follow their operation.
//!
//! Checked for every client: the server's bytes are well-formed frames of
//! known events, nothing follows `bye`, a client is welcomed at most once and
//! hears no `message` before its welcome, message ids only increase, its
//! queue position never goes up, and the room never lists more members than
//! its seats. And the memory the whole run holds at its peak stays within a bound
//! proportional to the input: nothing is reserved for what a client only
//! announced.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anteroom_broker::config::Config;
use anteroom_broker::gateway::transport::ByteStream;
use anteroom_broker::gateway::{Gateway, session::run_session};
use anteroom_broker::room::Room;
use anteroom_client::Event;
use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;
use anteroom_protocol::{ClientMessage, PingId};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

/// Counts live heap bytes and their peak, to bound what a run may hold.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the counters
// are plain atomics and never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLIENTS: usize = 4;

/// Room for what the runtime, the components and four sessions hold when
/// idle, measured with room to spare; everything beyond must come from the
/// input itself.
const BASELINE_BYTES: usize = 4 << 20;

/// Heap a byte of input may cost at most, across copies in flight (the
/// client's write, the server's read buffer, a decoded message, the frames
/// fanned out to four outboxes).
const BYTES_PER_INPUT_BYTE: usize = 64;

struct Client {
    write: Option<WriteHalf<DuplexStream>>,
    reader: tokio::task::JoinHandle<Vec<u8>>,
}

async fn send(client: &mut Client, frame: &[u8]) {
    if let Some(write) = client.write.as_mut()
        && write.write_all(frame).await.is_err()
    {
        client.write = None;
    }
}

async fn read_all(mut read: ReadHalf<DuplexStream>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = read.read_to_end(&mut out).await;
    out
}

/// Runs the operations against a fresh room; returns what each client got.
async fn run(input: &[u8]) -> Vec<Vec<u8>> {
    let config = Config {
        max_active: 2,
        max_waiting: 8,
        ..Config::default()
    };
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
        shutdown.clone(),
    ));
    let mut sessions = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, server) = tokio::io::duplex(16 * 1024);
        let (server_read, server_write) = tokio::io::split(server);
        sessions.push(tokio::spawn(run_session(
            gateway.clone(),
            ByteStream::new(server_read, server_write),
        )));
        let (read, write) = tokio::io::split(client);
        clients.push(Client {
            write: Some(write),
            reader: tokio::spawn(read_all(read)),
        });
    }

    let mut rest = input;
    while let [who, op, tail @ ..] = rest {
        rest = tail;
        let i = usize::from(*who) % CLIENTS;
        let client = &mut clients[i];
        match op % 9 {
            0 => {
                let name = format!("c{}", op / 9 % 6);
                send(client, &ClientMessage::hello(name).to_frame()).await
            }
            1 => send(client, &ClientMessage::say("hi").to_frame()).await,
            2 => send(client, &ClientMessage::Who.to_frame()).await,
            3 => {
                let id = Some(PingId::Signed(i64::from(*op)));
                send(client, &ClientMessage::Ping { id }.to_frame()).await
            }
            4 => send(client, &ClientMessage::Bye.to_frame()).await,
            5 => client.write = None,
            6 => {
                // Raw bytes: the next byte says how many follow.
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                let n = usize::from(n).min(tail.len());
                send(client, &tail[..n]).await;
                rest = &tail[n..];
            }
            7 => tokio::time::sleep(Duration::from_millis(u64::from(*op) * 50)).await,
            _ => tokio::task::yield_now().await,
        }
        tokio::task::yield_now().await;
    }

    // Everyone leaves; the sessions end and the readers see the close.
    for client in &mut clients {
        client.write = None;
    }
    let mut received = Vec::new();
    for client in clients {
        received.push(client.reader.await.expect("readers do not panic"));
    }
    for session in sessions {
        session.await.expect("sessions do not panic");
    }
    shutdown.cancel();
    bus.close();
    for component in components {
        component
            .await
            .expect("components stop when the bus closes");
    }
    received
}

/// What one client's bytes must look like.
fn check_client(mut rest: &[u8], welcomed: &mut HashSet<String>) {
    let mut seen_bye = false;
    let mut in_room = false;
    let mut last_id = 0;
    let mut last_position = u64::MAX;
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "a partial length prefix at the end");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(len <= MAX_SERVER_FRAME_BYTES);
        assert!(rest.len() - 4 >= len, "a partial frame at the end");
        let event = Event::decode(&rest[4..4 + len])
            .unwrap_or_else(|e| panic!("server frame is not an event: {e}"));
        rest = &rest[4 + len..];
        assert!(!seen_bye, "{event:?} after bye");
        match event {
            Event::Unknown => panic!("a frame of unknown type"),
            Event::Bye { .. } => seen_bye = true,
            Event::Welcome { name, users, .. } => {
                assert!(!in_room, "welcomed twice");
                in_room = true;
                assert!(users.contains(&name), "{users:?} lacks {name}");
                assert!(users.len() <= 2, "more members than seats: {users:?}");
                assert!(
                    welcomed.insert(name.to_lowercase()),
                    "two clients welcomed as {name}"
                );
            }
            Event::Queued { position, .. } => {
                assert!(!in_room, "queued after welcome");
                assert!(position <= last_position, "position went up");
                last_position = position;
            }
            Event::Message { id, .. } => {
                assert!(in_room, "message before welcome");
                assert!(id > last_id, "message ids went back");
                last_id = id;
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let received = runtime.block_on(run(data));
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let bound = BASELINE_BYTES + BYTES_PER_INPUT_BYTE * data.len();
    assert!(
        peak <= bound,
        "{peak} bytes held at the peak for {} bytes of input",
        data.len()
    );

    // A name freed by a departure may be welcomed again on another
    // connection, so each client's welcomes are checked on their own.
    for bytes in &received {
        let mut welcomed = HashSet::new();
        check_client(bytes, &mut welcomed);
    }
});
