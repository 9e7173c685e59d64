//! Fan-out: S members, P of them publishing B-byte messages at an offered
//! rate R for D seconds, paced open loop: each message is due at a fixed
//! time and carries that time, so a sender falling behind shows up as
//! latency instead of hiding it (no coordinated omission).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::server::{Broker, ServerUnderTest};
use super::{connect_spread, lock, ms, progress};
use anteroom_client::{Connection, Request};
use anteroom_protocol::codec::encode_frame;

/// Fan-out workload settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Members in the room (S).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Members that publish (P), among the S.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Message size in bytes (B), at least 24.
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Offered rate, messages per second over all publishers (R).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to publish (D).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Raise R until delivery drops below 99.9% or p99 exceeds 50 ms; report
    /// the highest sustainable rate.
    #[arg(long)]
    pub sweep: bool,
    /// Stop a sweep at this rate even if it is still sustainable.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Use a running anteroom instead of starting one.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// Which broker to measure; `all` runs anteroom, Redis and NATS one
    /// after the other (needs the `compare` feature and the system's
    /// redis-server and nats-server).
    #[arg(long, default_value = "anteroom")]
    pub broker: BrokerChoice,
}

/// A broker, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerChoice {
    Anteroom,
    Redis,
    Nats,
    All,
}

impl BrokerChoice {
    pub fn brokers(self) -> Vec<Broker> {
        match self {
            BrokerChoice::Anteroom => vec![Broker::Anteroom],
            BrokerChoice::Redis => vec![Broker::Redis],
            BrokerChoice::Nats => vec![Broker::Nats],
            BrokerChoice::All => vec![Broker::Anteroom, Broker::Redis, Broker::Nats],
        }
    }
}

/// One measured run at one rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub workload: &'static str,
    pub broker: &'static str,
    pub members: usize,
    pub publishers: usize,
    pub payload: usize,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub delivered_ratio: f64,
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub server_cpu_s: f64,
    pub server_peak_rss_mb: f64,
}

impl RunReport {
    /// Whether this rate is sustainable: >= 99.9% delivered, p99 <= 50 ms.
    pub fn sustainable(&self) -> bool {
        self.delivered_ratio >= 0.999 && self.p99_ms <= 50.0
    }

    fn print(&self) {
        println!(
            "{:>9.0} msg/s offered  {:>6} sent  {:>6.2}% delivered  {:>11.0} deliveries/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  cpu {:>5.1} s  rss {:>6.1} MB",
            self.offered_rate,
            self.sent,
            self.delivered_ratio * 100.0,
            self.deliveries_per_s,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.server_cpu_s,
            self.server_peak_rss_mb
        );
        println!("{}", serde_json::to_string(self).unwrap_or_default());
    }
}

/// What each member's reader has seen in the current round.
///
/// Latencies are appended to a plain vector and merged into one histogram
/// after the round: a histogram per member (hundreds of KiB each, touched at
/// random) cost the load generator a cache miss per delivery, CPU taken from
/// the broker it measures on the same machine.
struct ReaderStats {
    round: u32,
    latency_us: Vec<u32>,
    count: u64,
}

impl ReaderStats {
    fn new() -> Self {
        Self {
            round: u32::MAX,
            latency_us: Vec::new(),
            count: 0,
        }
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    text: Option<&'a str>,
}

/// A connection that publishes.
enum Publisher {
    Anteroom(OwnedWriteHalf),
    /// Redis: pre-encoded PUBLISH commands on a raw socket; a task drains
    /// the replies, so publishing never waits for one (pipelined).
    #[cfg(feature = "compare")]
    Redis(OwnedWriteHalf),
    #[cfg(feature = "compare")]
    Nats(async_nats::Client),
}

impl Publisher {
    async fn send(&mut self, text: &str) -> bool {
        match self {
            Publisher::Anteroom(writer) => match encode_frame(&Request::Say { text }) {
                Ok(frame) => writer.write_all(&frame).await.is_ok(),
                Err(_) => false,
            },
            #[cfg(feature = "compare")]
            Publisher::Redis(writer) => {
                let command = redis::cmd("PUBLISH")
                    .arg("room")
                    .arg(text)
                    .get_packed_command();
                writer.write_all(&command).await.is_ok()
            }
            #[cfg(feature = "compare")]
            Publisher::Nats(client) => client
                .publish("room", text.to_string().into())
                .await
                .is_ok(),
        }
    }
}

/// The connected room: readers running, publishers ready.
struct Room {
    broker: Broker,
    epoch: Instant,
    readers: Vec<Arc<Mutex<ReaderStats>>>,
    publishers: Vec<Publisher>,
    /// Connections that must stay open for the room to exist.
    _keep: Vec<Box<dyn std::any::Any + Send>>,
    members: usize,
    payload: usize,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

async fn connect_room(args: &Args, server: SocketAddr) -> anyhow::Result<Room> {
    anyhow::ensure!(args.payload >= 24, "--payload must be at least 24 bytes");
    anyhow::ensure!(
        args.publishers >= 1 && args.publishers <= args.members,
        "--publishers must be 1..=members"
    );
    let epoch = Instant::now();
    let bar = progress(args.members as u64, "joining");
    let mut readers = Vec::new();
    let mut publishers = Vec::new();
    let mut idle_writers = Vec::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(256));
    let mut joins = Vec::new();
    for i in 0..args.members {
        let permit = semaphore.clone().acquire_owned().await?;
        joins.push(tokio::spawn(async move {
            let stream = connect_spread(server, i).await?;
            let mut connection = Connection::from_stream(stream);
            let admission = connection.join(&format!("m{i:05}")).await?;
            drop(permit);
            anyhow::ensure!(
                matches!(admission, anteroom_client::Admission::Welcome { .. }),
                "member {i} was queued: the room is smaller than --members"
            );
            Ok::<_, anyhow::Error>(connection)
        }));
    }
    for (i, join) in joins.into_iter().enumerate() {
        let connection = join.await??;
        bar.inc(1);
        let (reader, writer) = connection.split_frames();
        let stats = Arc::new(Mutex::new(ReaderStats::new()));
        readers.push(stats.clone());
        tokio::spawn(read_member(reader, stats, epoch));
        if i < args.publishers {
            publishers.push(Publisher::Anteroom(writer));
        } else {
            // Dropping a write half sends FIN, which the server reads as
            // the member leaving; keep it for the life of the room.
            idle_writers.push(Box::new(writer) as Box<dyn std::any::Any + Send>);
        }
    }
    bar.finish_and_clear();
    Ok(Room {
        broker: Broker::Anteroom,
        epoch,
        readers,
        publishers,
        _keep: idle_writers,
        members: args.members,
        payload: args.payload,
    })
}

/// Reads everything a member receives, timing the messages of the round.
async fn read_member(
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) {
    while let Some(Ok(frame)) = frames.next().await {
        let Ok(frame) = rmp_serde::from_slice::<Frame<'_>>(&frame) else {
            continue;
        };
        if let ("message", Some(text)) = (frame.kind, frame.text) {
            record(&stats, text.as_bytes(), epoch);
        }
    }
}

/// Counts a received message of the current round and its latency.
fn record(stats: &Mutex<ReaderStats>, payload: &[u8], epoch: Instant) {
    let Some((round, due_ns)) = parse_stamp(payload) else {
        return;
    };
    let now_ns = epoch.elapsed().as_nanos() as u64;
    let latency_us = now_ns.saturating_sub(due_ns) / 1000;
    let mut stats = lock(stats);
    if stats.round == round {
        stats.count += 1;
        stats
            .latency_us
            .push(u32::try_from(latency_us.max(1)).unwrap_or(u32::MAX));
    }
}

fn stamp(round: u32, due_ns: u64, payload: usize) -> String {
    let mut text = format!("{round:08x}{due_ns:016x}");
    text.extend(std::iter::repeat_n('x', payload.saturating_sub(text.len())));
    text
}

fn parse_stamp(payload: &[u8]) -> Option<(u32, u64)> {
    let head = std::str::from_utf8(payload.get(..24)?).ok()?;
    let round = u32::from_str_radix(&head[..8], 16).ok()?;
    let due = u64::from_str_radix(&head[8..24], 16).ok()?;
    Some((round, due))
}

impl Room {
    async fn round(
        &mut self,
        round: u32,
        rate: f64,
        duration: Duration,
        server: &ServerUnderTest,
    ) -> RunReport {
        for stats in &self.readers {
            let mut s = lock(stats);
            s.round = round;
            s.count = 0;
            // Room for the round up front: growing the vector would copy
            // it on the receive path.
            s.latency_us.clear();
            s.latency_us
                .reserve((rate * duration.as_secs_f64() * 1.1) as usize);
        }
        let before = server.usage();
        let publishers = self.publishers.len();
        let interval = Duration::from_secs_f64(publishers as f64 / rate);
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + duration;
        let bar = progress(duration.as_secs().max(1), &format!("{rate:.0} msg/s"));
        let mut tasks = Vec::new();
        for (p, mut writer) in std::mem::take(&mut self.publishers).into_iter().enumerate() {
            let epoch = self.epoch;
            let payload = self.payload;
            // Stagger publishers evenly within one interval.
            let offset = interval.mul_f64(p as f64 / publishers as f64);
            tasks.push(tokio::spawn(async move {
                let mut sent = 0u64;
                let mut due = start + offset;
                while due < end {
                    tokio::time::sleep_until(due.into()).await;
                    let text = stamp(round, due.duration_since(epoch).as_nanos() as u64, payload);
                    if !writer.send(&text).await {
                        break;
                    }
                    sent += 1;
                    due += interval;
                }
                (writer, sent)
            }));
        }
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    bar.inc(1);
                }
            })
        };
        let mut sent = 0;
        for task in tasks {
            if let Ok((writer, n)) = task.await {
                self.publishers.push(writer);
                sent += n;
            }
        }
        ticker.abort();
        bar.finish_and_clear();
        let expected = sent * self.members as u64;
        // Wait for what is in flight, up to a grace period.
        let grace_end = Instant::now() + Duration::from_secs(3);
        let mut delivered = 0;
        while Instant::now() < grace_end {
            delivered = self.delivered();
            if delivered >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let after = server.usage();
        let mut merged = histogram();
        for stats in &self.readers {
            let mut s = lock(stats);
            for &us in &s.latency_us {
                let _ = merged.record(u64::from(us));
            }
            // Merged: free it rather than hold every member's peak between
            // rounds.
            s.latency_us = Vec::new();
        }
        let q = |p: f64| merged.value_at_quantile(p) as f64 / 1000.0;
        RunReport {
            workload: "fanout",
            broker: self.broker.name(),
            members: self.members,
            publishers,
            payload: self.payload,
            offered_rate: rate,
            duration_s: duration.as_secs_f64(),
            sent,
            expected,
            delivered,
            delivered_ratio: if expected == 0 {
                0.0
            } else {
                delivered as f64 / expected as f64
            },
            deliveries_per_s: delivered as f64 / elapsed.max(duration.as_secs_f64()),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: merged.max() as f64 / 1000.0,
            server_cpu_s: after.cpu_seconds - before.cpu_seconds,
            server_peak_rss_mb: after.peak_rss_bytes as f64 / 1e6,
        }
    }

    fn delivered(&self) -> u64 {
        self.readers.iter().map(|s| lock(s).count).sum()
    }
}

/// Server settings for a fan-out run: a room big enough, no rate limit,
/// no heartbeats during the measurement.
pub fn server_settings(members: usize, payload: usize) -> Vec<(&'static str, String)> {
    vec![
        ("ANTEROOM_MAX_ACTIVE", members.to_string()),
        ("ANTEROOM_MAX_MESSAGE_BYTES", payload.max(4096).to_string()),
        (
            "ANTEROOM_MAX_FRAME_BYTES",
            (payload + 1024).max(65_536).to_string(),
        ),
        ("ANTEROOM_MAX_WAITING", "0".into()),
        ("ANTEROOM_RATE_LIMIT", "1000000000".into()),
        ("ANTEROOM_RATE_BURST", "1000000000".into()),
        ("ANTEROOM_HEARTBEAT_INTERVAL", "1h".into()),
        ("ANTEROOM_IDLE_TIMEOUT", "2h".into()),
    ]
}

/// Runs the fan-out workload on each chosen broker.
pub async fn run(args: Args) -> anyhow::Result<()> {
    for broker in args.broker.brokers() {
        run_broker(&args, broker).await?;
    }
    Ok(())
}

async fn run_broker(args: &Args, broker: Broker) -> anyhow::Result<()> {
    let (server, mut room) = match broker {
        Broker::Anteroom => {
            let server =
                ServerUnderTest::start(args.server, &server_settings(args.members, args.payload))?;
            let room = connect_room(args, server.addr)
                .await
                .context("joining the room")?;
            (server, room)
        }
        #[cfg(feature = "compare")]
        other => {
            let server = ServerUnderTest::start_external(other)?;
            let room = connect_external_room(args, other, server.addr).await?;
            (server, room)
        }
        #[cfg(not(feature = "compare"))]
        other => anyhow::bail!(
            "measuring {} needs a build with the compare feature: cargo run --release --features compare -- bench ...",
            other.name()
        ),
    };
    let args = args.clone();
    println!(
        "fanout on {}: {} members, {} publishing, {}-byte messages, {:?} per rate, server {}{}",
        broker.name(),
        args.members,
        args.publishers,
        args.payload,
        args.duration,
        server.addr,
        if server.measurable() {
            ""
        } else {
            " (external: no CPU/RSS figures)"
        }
    );
    if !args.sweep {
        room.round(0, args.rate, args.duration, &server)
            .await
            .print();
    } else {
        let best = sweep(&mut room, &args, &server).await;
        match &best {
            Some(best) => println!(
                "highest sustainable rate: {:.0} msg/s ({:.0} deliveries/s, p99 {} ms)",
                best.offered_rate,
                best.deliveries_per_s,
                ms((best.p99_ms * 1000.0) as u64)
            ),
            None => println!("no sustainable rate at or above {:.0} msg/s", args.rate),
        }
        println!("{}", sweep_summary(&args, broker, best.as_ref()));
    }
    drop(room);
    server.stop()
}

/// The sweep's JSON line; `sustainable_rate` is null when even the
/// starting rate failed, and `capped` says `--max-rate` stopped the sweep.
fn sweep_summary(args: &Args, broker: Broker, best: Option<&RunReport>) -> String {
    let capped = best.is_some_and(|b| args.max_rate.is_some_and(|max| b.offered_rate * 2.0 > max));
    serde_json::json!({
        "workload": "fanout-sweep",
        "broker": broker.name(),
        "members": args.members,
        "publishers": args.publishers,
        "payload": args.payload,
        "start_rate": args.rate,
        "sustainable_rate": best.map(|b| b.offered_rate),
        "deliveries_per_s": best.map(|b| b.deliveries_per_s),
        "p99_ms": best.map(|b| b.p99_ms),
        "server_peak_rss_mb": best.map(|b| b.server_peak_rss_mb),
        "capped": capped,
    })
    .to_string()
}

/// Doubles the rate until it fails, then bisects three times.
async fn sweep(room: &mut Room, args: &Args, server: &ServerUnderTest) -> Option<RunReport> {
    let mut round = 0;
    let mut best: Option<RunReport> = None;
    let mut rate = args.rate;
    let mut failed: Option<f64> = None;
    while failed.is_none() {
        let report = room.round(round, rate, args.duration, server).await;
        round += 1;
        report.print();
        if report.sustainable() {
            best = Some(report);
            rate *= 2.0;
            if args.max_rate.is_some_and(|max| rate > max) {
                return best;
            }
        } else {
            failed = Some(rate);
        }
        settle().await;
    }
    let mut low = best.as_ref().map_or(0.0, |b| b.offered_rate);
    let mut high = failed.unwrap_or(rate);
    for _ in 0..3 {
        if low == 0.0 {
            break;
        }
        let mid = (low + high) / 2.0;
        let report = room.round(round, mid, args.duration, server).await;
        round += 1;
        report.print();
        if report.sustainable() {
            low = mid;
            best = Some(report);
        } else {
            high = mid;
        }
        settle().await;
    }
    best
}

/// Lets queues drain between rates.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(feature = "compare")]
async fn connect_external_room(
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
    Ok(Room {
        broker,
        epoch,
        readers,
        publishers,
        _keep: keep,
        members: args.members,
        payload: args.payload,
    })
}
