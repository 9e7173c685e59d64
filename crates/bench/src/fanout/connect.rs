//! Filling the room on each broker: S members, each with the lean reader
//! and counted only once its subscription is in place, and P publishers.
//! In anteroom the publishers are members (they receive their own
//! messages); on Redis and NATS they are connections of their own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

use super::Args;
use super::members::{Inbox, Reader, ReaderStats};
use super::publishers::Publisher;
use super::room::Room;
use super::wire::{NATS_PUBLISHER_CONNECT, Wire};
use crate::server::Broker;
use crate::{connect_spread, progress};
use anteroom_client::{Admission, Connection};

/// How long a member may take to be subscribed once connected.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects S members and P publishers to `broker` at `server`.
pub(super) async fn connect_room(
    args: &Args,
    broker: Broker,
    server: SocketAddr,
) -> anyhow::Result<Room> {
    anyhow::ensure!(args.payload >= 24, "--payload must be at least 24 bytes");
    anyhow::ensure!(
        args.publishers >= 1 && args.publishers <= args.members,
        "--publishers must be 1..=members"
    );
    let epoch = Instant::now();
    let bar = progress(args.members as u64, "subscribing");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(256));
    let mut joins = Vec::new();
    for i in 0..args.members {
        let permit = semaphore.clone().acquire_owned().await?;
        let stats = Arc::new(Mutex::new(ReaderStats::new()));
        let bar = bar.clone();
        let task_stats = stats.clone();
        joins.push((
            stats,
            tokio::spawn(async move {
                let joined = join(broker, server, i, task_stats, epoch).await;
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
                publishers.push(Publisher::Anteroom(writer));
            } else {
                // Dropping a write half sends FIN, which the server reads
                // as the member leaving; keep it for the life of the room.
                keep.push(Box::new(writer) as Box<dyn std::any::Any + Send>);
            }
        }
    }
    if broker != Broker::Anteroom {
        for p in 0..args.publishers {
            let publisher = publisher(broker, server, args.members + p, epoch)
                .await
                .with_context(|| format!("{} publisher {p}", broker.name()))?;
            publishers.push(publisher);
        }
    }
    bar.finish_and_clear();
    Ok(Room::new(args, broker, epoch, readers, publishers, keep))
}

/// Connects member `i` and starts its reader; returns once the member is
/// subscribed, with its sending side on anteroom (where a member may
/// publish).
async fn join(
    broker: Broker,
    server: SocketAddr,
    i: usize,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) -> anyhow::Result<Option<OwnedWriteHalf>> {
    let stream = connect(server, i).await?;
    let wire = match broker {
        Broker::Anteroom => {
            // The join itself (hello, welcome) goes through the client
            // library; the reader takes over the socket and whatever the
            // library had read past the welcome.
            let mut connection = Connection::from_stream(stream);
            let admission = connection.join(&format!("m{i:05}")).await?;
            anyhow::ensure!(
                matches!(admission, Admission::Welcome { .. }),
                "queued: the room is smaller than --members"
            );
            let (frames, writer) = connection.split_frames();
            let inbox = Inbox::new(frames.read_buffer());
            Reader {
                wire: Wire::Anteroom,
                read: frames.into_inner(),
                write: None,
                on_greeting: b"",
                ready: None,
                stats: Some(stats),
                epoch,
            }
            .spawn(inbox);
            return Ok(Some(writer));
        }
        Broker::Redis => Wire::Resp,
        Broker::Nats => Wire::Nats,
    };
    let (read, mut write) = stream.into_split();
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

/// A publisher's own connection to Redis or NATS, its reader draining the
/// replies (and, on NATS, answering pings); ready to publish once NATS has
/// read its `CONNECT`.
async fn publisher(
    broker: Broker,
    server: SocketAddr,
    index: usize,
    epoch: Instant,
) -> anyhow::Result<Publisher> {
    let (read, write) = connect(server, index).await?.into_split();
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

/// Connection `index` to the server, with Nagle's algorithm off as every
/// client library does: a NATS publisher gets no reply to piggyback the
/// server's ACKs on, and its next `PUB` would wait for a delayed ACK.
async fn connect(server: SocketAddr, index: usize) -> std::io::Result<tokio::net::TcpStream> {
    let stream = connect_spread(server, index).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn wait_until_ready(ready: oneshot::Receiver<Result<(), String>>) -> anyhow::Result<()> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(reason))) => bail!("{reason}"),
        Ok(Err(_)) => bail!("the reader ended without a word"),
        Err(_) => bail!("not subscribed within {SUBSCRIBE_TIMEOUT:?}"),
    }
}
