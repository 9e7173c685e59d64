//! Rooms on Redis Pub/Sub and NATS, measured side by side with anteroom:
//! one subscriber per member and the publishers on their own connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;

use super::Args;
use super::members::{ReaderStats, record};
use super::publishers::Publisher;
use super::room::Room;
use crate::progress;
use crate::server::Broker;

pub(super) async fn connect_external_room(
    args: &Args,
    broker: Broker,
    server: SocketAddr,
) -> anyhow::Result<Room> {
    let epoch = Instant::now();
    let bar = progress(args.members as u64, "subscribing");
    let mut readers = Vec::new();
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut publishers = Vec::new();
    let url = format!("redis://{server}/");
    for _ in 0..args.members {
        let stats = Arc::new(Mutex::new(ReaderStats::new()));
        readers.push(stats.clone());
        match broker {
            Broker::Redis => {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe("room").await?;
                let mut messages = pubsub.into_on_message();
                tokio::spawn(async move {
                    while let Some(message) = messages.next().await {
                        record(&stats, message.get_payload_bytes(), epoch);
                    }
                });
            }
            Broker::Nats => {
                let client = async_nats::connect(server.to_string()).await?;
                let mut subscriber = client.subscribe("room").await?;
                client.flush().await?;
                keep.push(Box::new(client));
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        record(&stats, &message.payload, epoch);
                    }
                });
            }
            Broker::Anteroom => unreachable!("anteroom rooms are joined by connect_room"),
        }
        bar.inc(1);
    }
    for _ in 0..args.publishers {
        match broker {
            Broker::Redis => {
                let (mut replies, writer) =
                    tokio::net::TcpStream::connect(server).await?.into_split();
                // Drain the integer replies; their content does not matter.
                tokio::spawn(async move {
                    let mut sink = vec![0u8; 64 * 1024];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut replies, &mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
                publishers.push(Publisher::Redis(writer));
            }
            Broker::Nats => publishers.push(Publisher::Nats(
                async_nats::connect(server.to_string()).await?,
            )),
            Broker::Anteroom => unreachable!(),
        }
    }
    bar.finish_and_clear();
    Ok(Room::new(args, broker, epoch, readers, publishers, keep))
}
