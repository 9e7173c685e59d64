use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::*;
use crate::conn::outbox::EventRun;
use crate::conn::writer::ByteSink;

/// `count` frames of `len` payload bytes each, numbered from `first`, back
/// to back.
fn frames(first: u8, count: u8, len: usize) -> Bytes {
    let mut buf = BytesMut::new();
    for n in first..first + count {
        buf.put_u32(len as u32);
        buf.put_bytes(n, len);
    }
    buf.freeze()
}

/// Payload bytes of each frame in `bytes`, in order.
fn numbers(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        let frame = &bytes[4..4 + len];
        assert!(frame.iter().all(|&b| b == frame[0]), "a frame was torn");
        out.push(frame[0]);
        bytes = &bytes[4 + len..];
    }
    assert!(bytes.is_empty(), "a frame was cut");
    out
}

fn run(first: u8, count: u8, len: usize) -> Arc<EventRun> {
    EventRun::new(frames(first, count, len), count as usize, Vec::new())
}

async fn read_some(server: &mut tokio::io::DuplexStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut out))
        .await
        .expect("the frames never came")
        .unwrap();
    out
}

/// A member's connection with an outbox of `limit` frames: only members are
/// written by the shards.
fn member(limit: usize) -> Arc<Peer> {
    let peer = Arc::new(Peer::new(limit));
    peer.outbox.set_member();
    peer
}

/// A connection with an outbox of `limit` frames, its writer started on a
/// shard of its own, writing into a pipe of `pipe` bytes; the other end of
/// the pipe is returned.
fn connect(
    limit: usize,
    pipe: usize,
    write_timeout: Option<Duration>,
) -> (
    Arc<Peer>,
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Result<(), WriteError>>,
) {
    let peer = member(limit);
    let (client, server) = tokio::io::duplex(pipe);
    let writer = tokio::spawn(run_sharded_writer(
        peer.clone(),
        ByteSink(client),
        write_timeout,
        Shards::start(1),
    ));
    (peer, server, writer)
}

#[tokio::test]
async fn the_shard_writes_without_the_task_and_the_task_finishes_the_close() {
    let (peer, mut server, writer) = connect(1024, 64 * 1024, None);
    for pass in 0..10 {
        peer.outbox.push_events(&run(pass * 3, 3, 10), false);
        tokio::task::yield_now().await;
    }
    let written = read_some(&mut server, 30 * 14).await;
    assert_eq!(numbers(&written), (0..30).collect::<Vec<u8>>());
    peer.outbox.close(&[frames(200, 1, 1)], false);
    writer.await.unwrap().unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert_eq!(numbers(&rest), [200], "the last frame, then the end");
}

#[tokio::test]
async fn a_full_socket_goes_to_the_task_in_order_and_comes_back() {
    let (peer, mut server, writer) = connect(100_000, 100, Some(Duration::from_secs(5)));
    peer.outbox.push_events(&run(0, 50, 6), false);
    tokio::task::yield_now().await;
    peer.outbox.push_events(&run(50, 50, 6), false);
    let written = read_some(&mut server, 100 * 10).await;
    assert_eq!(numbers(&written), (0..100).collect::<Vec<u8>>());
    // Caught up: the shard writes again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(peer.outbox.is_shards());
    peer.outbox.push_events(&run(100, 2, 6), false);
    let written = read_some(&mut server, 2 * 10).await;
    assert_eq!(numbers(&written), [100, 101]);
    peer.outbox.close(&[], false);
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_discarding_close_cuts_a_run_after_the_frame_begun() {
    let (peer, mut server, writer) = connect(100_000, 7, None);
    peer.outbox.push_events(&run(0, 100, 6), false);
    let mut out = read_some(&mut server, 15).await;
    peer.outbox.close(&[frames(200, 1, 6)], true);
    server.read_to_end(&mut out).await.unwrap();
    writer.await.unwrap().unwrap();
    let seen = numbers(&out);
    assert!(seen.len() < 10, "the run was not cut: {seen:?}");
    assert_eq!(seen.last(), Some(&200));
    let before: Vec<u8> = (0..seen.len() as u8 - 1).collect();
    assert_eq!(&seen[..seen.len() - 1], before);
}

#[tokio::test]
async fn a_dropped_writer_leaves_the_outbox_nothing_to_wake() {
    let (peer, _server, writer) = connect(1024, 1024, None);
    tokio::task::yield_now().await;
    writer.abort();
    let _ = writer.await;
    // The write side is gone with its task: pushing finds no shard to wake,
    // and holds no reference that would keep the connection alive.
    peer.outbox.push_events(&run(0, 1, 1), false);
    assert_eq!(Arc::strong_count(&peer), 1);
}

#[tokio::test]
async fn an_idle_sharded_writer_stays_small() {
    // Every connection holds its writer task for its whole life.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (_read, write) = stream.into_split();
    let writer = run_sharded_writer(
        Arc::new(Peer::new(16)),
        ByteSink(write),
        Some(Duration::from_secs(1)),
        Shards::start(1),
    );
    let size = std::mem::size_of_val(&writer);
    assert!(size < 512, "the writer's future is {size} bytes");
}

#[tokio::test]
async fn caught_up_returns_once_the_frames_pushed_before_it_are_written() {
    let shards = Shards::start(1);
    let peer = member(1024);
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let _writer = tokio::spawn(run_sharded_writer(
        peer.clone(),
        ByteSink(client),
        None,
        shards.clone(),
    ));
    tokio::task::yield_now().await;
    peer.outbox.push_events(&run(0, 3, 10), false);
    shards.caught_up().await;
    // Written already: readable without giving the shard another turn.
    let mut out = vec![0; 3 * 14];
    let read = futures_util::FutureExt::now_or_never(server.read_exact(&mut out));
    assert!(read.is_some(), "caught_up returned before the write");
    assert_eq!(numbers(&out), [0, 1, 2]);
    // Nothing dirty: it returns at once.
    assert!(futures_util::FutureExt::now_or_never(shards.caught_up()).is_some());
}

#[tokio::test]
async fn a_queued_clients_position_updates_are_written_by_its_own_task() {
    let shards = Shards::start(1);
    let peer = Arc::new(Peer::new(16));
    let (client, mut server) = tokio::io::duplex(1024);
    let _writer = tokio::spawn(run_sharded_writer(
        peer.clone(),
        ByteSink(client),
        None,
        shards.clone(),
    ));
    tokio::task::yield_now().await;
    assert!(peer.outbox.set_position(frames(7, 1, 1)));
    // Nothing for the shard to wait for: the task writes it.
    assert!(futures_util::FutureExt::now_or_never(shards.caught_up()).is_some());
    assert_eq!(numbers(&read_some(&mut server, 5).await), [7]);
}
