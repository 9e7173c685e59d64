//! Filling the room on each broker: S members, each with the lean reader
//! and counted only once its subscription is in place, and P publishers.
//! In anteroom the publishers are members (they receive their own
//! messages); on Redis and NATS they are connections of their own.
//!
//! Anteroom's members connect over the run's transport; the reader then
//! takes the decrypted stream (TLS) or the QUIC stream as it takes a TCP
//! socket's reading half, the same code over any `AsyncRead`. Over
//! WebSocket a member joins on raw frames (see [`crate::ws`]) and its
//! reader parses the frames of the TCP socket.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::Args;
use super::members::{Inbox, Reader, ReaderStats};
use super::publishers::Publisher;
use super::room::Room;
use super::wire::{NATS_PUBLISHER_CONNECT, Wire};
use crate::progress;
use crate::server::Broker;
use crate::transport::{Dialer, HANDSHAKE_TIMEOUT, Stream, Transport};
use anteroom_client::transport::BoxWrite;
use anteroom_client::{Admission, Connection};

/// Members joining at once while the room fills. Over QUIC fewer: every
/// handshake's packets land in the server's one UDP socket, whose receive
/// buffer a burst of hundreds overflows (the losses then cost seconds of
/// retransmission timers, and Retry tokens expire). How anteroom takes such
/// a burst is `connections`' to measure; here the room only has to fill.
fn joining_at_once(transport: Transport) -> usize {
    match transport {
        Transport::Tcp | Transport::Tls | Transport::Ws => 256,
        Transport::Quic => 32,
    }
}

/// How long a member may take to be subscribed once connected.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects S members and P publishers to `broker` at `server`.
pub(super) async fn connect_room(
    args: &Args,
    broker: Broker,
    transport: Transport,
    dialer: Arc<Dialer>,
) -> anyhow::Result<Room> {
    anyhow::ensure!(args.payload >= 24, "--payload must be at least 24 bytes");
    anyhow::ensure!(
        args.publishers >= 1 && args.publishers <= args.members,
        "--publishers must be 1..=members"
    );
    let epoch = Instant::now();
    let bar = progress(args.members as u64, "subscribing");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(joining_at_once(transport)));
    let mut joins = Vec::new();
    for i in 0..args.members {
        let permit = semaphore.clone().acquire_owned().await?;
        let stats = Arc::new(Mutex::new(ReaderStats::new()));
        let bar = bar.clone();
        let task_stats = stats.clone();
        let dialer = dialer.clone();
        joins.push((
            stats,
            tokio::spawn(async move {
                let joined = join(broker, &dialer, i, task_stats, epoch).await;
                drop(permit);
                bar.inc(1);
                joined.with_context(|| format!("{} member {i}", broker.name()))
            }),
        ));
    }
    let mut readers = Vec::new();
    let mut publishers = Vec::new();
    let mut keep = Vec::new();
    for (i, (stats, join)) in joins.into_iter().enumerate() {
        let own_writer = join.await??;
        readers.push(stats);
        if let Some(writer) = own_writer {
            if i < args.publishers {
                publishers.push(writer);
            } else {
                // Dropping a write half sends FIN, which the server reads
                // as the member leaving; keep it for the life of the room.
                keep.push(Box::new(writer) as Box<dyn std::any::Any + Send>);
            }
        }
    }
    if broker != Broker::Anteroom {
        for p in 0..args.publishers {
            let publisher = publisher(broker, &dialer, args.members + p, epoch)
                .await
                .with_context(|| format!("{} publisher {p}", broker.name()))?;
            publishers.push(publisher);
        }
    }
    bar.finish_and_clear();
    // The QUIC endpoints (their sockets) stay for the life of the room.
    keep.push(Box::new(dialer));
    Ok(Room::new(
        args, broker, transport, epoch, readers, publishers, keep,
    ))
}

/// Attempts at a member's connection and join over QUIC. While the room
/// fills, the server's one UDP socket also takes the acknowledgements of
/// every member for every `joined`, and drops what its receive buffer
/// cannot hold; a handshake unlucky enough to lose its packets again and
/// again outlasts its timeout or its Retry token. The room is what is
/// measured here, so such a member tries again (and says so); over TCP and
/// TLS a failure ends the run.
const QUIC_JOIN_ATTEMPTS: usize = 3;

/// Connects member `i` and starts its reader; returns once the member is
/// subscribed, with its sending side on anteroom (where a member may
/// publish).
async fn join(
    broker: Broker,
    dialer: &Dialer,
    i: usize,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) -> anyhow::Result<Option<Publisher>> {
    let attempts = match dialer.transport() {
        Transport::Quic => QUIC_JOIN_ATTEMPTS,
        Transport::Tcp | Transport::Tls | Transport::Ws => 1,
    };
    let mut attempt = 1;
    loop {
        match join_once(broker, dialer, i, stats.clone(), epoch).await {
            Err(error) if attempt < attempts => {
                eprintln!(
                    "member {i}: attempt {attempt} of {attempts} over {} failed, trying again: {error:#}",
                    dialer.transport().name()
                );
                attempt += 1;
            }
            joined => return joined,
        }
    }
}

async fn join_once(
    broker: Broker,
    dialer: &Dialer,
    i: usize,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) -> anyhow::Result<Option<Publisher>> {
    let stream = dialer.connect(i).await?;
    let wire = match broker {
        Broker::Anteroom => {
            let writer = match stream {
                Stream::Tcp(stream) => {
                    let (read, write) = stream.into_split();
                    join_anteroom(read, write, i, stats, epoch).await?
                }
                Stream::Tls(tls) => {
                    let (read, write) = tokio::io::split(*tls);
                    join_anteroom(read, write, i, stats, epoch).await?
                }
                Stream::Quic(send, recv) => join_anteroom(recv, send, i, stats, epoch).await?,
                Stream::Ws(stream, read) => {
                    return Ok(Some(join_ws(stream, read, i, stats, epoch).await?));
                }
            };
            return Ok(Some(Publisher::Anteroom(writer)));
        }
        Broker::Redis => Wire::Resp,
        Broker::Nats => Wire::Nats,
    };
    let (read, mut write) = tcp(stream)?.into_split();
    write.write_all(wire.subscribe_first()).await?;
    let (ready, subscribed) = oneshot::channel();
    Reader {
        wire,
        read,
        write: Some(Arc::new(tokio::sync::Mutex::new(write))),
        on_greeting: wire.subscribe_on_greeting(),
        ready: Some(ready),
        stats: Some(stats),
        epoch,
    }
    .spawn(Inbox::new(b""));
    wait_until_ready(subscribed).await?;
    Ok(None)
}

/// Joins anteroom as member `i` over a stream's two halves and starts its
/// reader; returns the sending half. The join itself (hello, welcome) goes
/// through the client library; the reader takes over the stream and
/// whatever the library had read past the welcome.
async fn join_anteroom<R, W>(
    read: R,
    write: W,
    i: usize,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) -> anyhow::Result<BoxWrite>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = Connection::builder()
        .join_timeout(HANDSHAKE_TIMEOUT)
        .from_halves(read, write);
    let admission = connection.join(&format!("m{i:05}")).await?;
    anyhow::ensure!(
        matches!(admission, Admission::Welcome { .. }),
        "queued: the room is smaller than --members"
    );
    let (frames, writer) = connection.split_frames();
    let inbox = Inbox::new(frames.read_buffer());
    Reader::<R, W> {
        wire: Wire::Anteroom,
        read: frames.into_inner(),
        write: None,
        on_greeting: b"",
        ready: None,
        stats: Some(stats),
        epoch,
    }
    .spawn(inbox);
    Ok(Box::new(writer))
}

/// Joins anteroom as member `i` over an upgraded WebSocket connection
/// whose first bytes read are `read`, on raw frames, and starts its reader
/// on the socket's reading half; returns the writing half, shared with the
/// reader (which answers `ping` maps).
async fn join_ws(
    mut stream: TcpStream,
    read: Vec<u8>,
    i: usize,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) -> anyhow::Result<Publisher> {
    let (welcomed, read) = crate::ws::join(&mut stream, read, &format!("m{i:05}")).await?;
    anyhow::ensure!(welcomed, "queued: the room is smaller than --members");
    let (read_half, write_half) = stream.into_split();
    let write = Arc::new(tokio::sync::Mutex::new(write_half));
    Reader {
        wire: Wire::Ws,
        read: read_half,
        write: Some(write.clone()),
        on_greeting: b"",
        ready: None,
        stats: Some(stats),
        epoch,
    }
    .spawn(Inbox::new(&read));
    Ok(Publisher::Ws(write, Vec::new()))
}

/// A publisher's own connection to Redis or NATS, its reader draining the
/// replies (and, on NATS, answering pings); ready to publish once NATS has
/// read its `CONNECT`.
async fn publisher(
    broker: Broker,
    dialer: &Dialer,
    index: usize,
    epoch: Instant,
) -> anyhow::Result<Publisher> {
    let (read, write) = tcp(dialer.connect(index).await?)?.into_split();
    let reader = |wire, write, on_greeting, ready| Reader {
        wire,
        read,
        write,
        on_greeting,
        ready,
        stats: None,
        epoch,
    };
    match broker {
        Broker::Redis => {
            reader(Wire::Resp, None, b"", None).spawn(Inbox::new(b""));
            Ok(Publisher::Redis(write, Vec::new()))
        }
        Broker::Nats => {
            let write = Arc::new(tokio::sync::Mutex::new(write));
            let (ready, connected) = oneshot::channel();
            reader(
                Wire::Nats,
                Some(write.clone()),
                NATS_PUBLISHER_CONNECT,
                Some(ready),
            )
            .spawn(Inbox::new(b""));
            wait_until_ready(connected).await?;
            Ok(Publisher::Nats(write, Vec::new()))
        }
        Broker::Anteroom => bail!("anteroom's publishers are members"),
    }
}

/// The TCP socket of a Redis or NATS connection (the dialer's TCP
/// connections have Nagle's algorithm off, as every client library does: a
/// NATS publisher gets no reply to piggyback the server's ACKs on, and its
/// next `PUB` would wait for a delayed ACK).
fn tcp(stream: Stream) -> anyhow::Result<TcpStream> {
    match stream {
        Stream::Tcp(stream) => Ok(stream),
        _ => bail!("Redis and NATS are reached over plain TCP only"),
    }
}

async fn wait_until_ready(ready: oneshot::Receiver<Result<(), String>>) -> anyhow::Result<()> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(reason))) => bail!("{reason}"),
        Ok(Err(_)) => bail!("the reader ended without a word"),
        Err(_) => bail!("not subscribed within {SUBSCRIBE_TIMEOUT:?}"),
    }
}
