//! Connections: C idle connections held open, most of them queued when
//! `--max-active` is far below C. Reports the connect rate and the server's
//! memory per connection (resident set growth divided by C).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cpu::{PinArgs, Pinning};
use super::server::{Broker, ServerUnderTest};
use super::{connect_spread, progress};
use anteroom_client::{Admission, Connection};

/// Connections workload settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to hold (C).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Room capacity; the rest wait in the queue.
    #[arg(long, default_value_t = 1000)]
    pub max_active: usize,
    /// How long to hold them once all are connected.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Use a running anteroom instead of starting one.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// Which broker to measure (`all`: anteroom, Redis and NATS in turn).
    #[arg(long, default_value = "anteroom")]
    pub broker: super::fanout::BrokerChoice,
    #[command(flatten)]
    pub cpu: PinArgs,
}

/// One connections run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub broker: &'static str,
    pub connections: usize,
    pub in_room: usize,
    pub queued: usize,
    pub connect_per_s: f64,
    pub server_rss_before_mb: f64,
    pub server_rss_after_mb: f64,
    pub bytes_per_connection: f64,
    /// Server and load generator on a CPU each (`--pin`).
    pub pinned: bool,
}

/// Runs the connections workload on each chosen broker.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let pinning = args.cpu.apply()?;
    for broker in args.broker.brokers() {
        run_broker(&args, broker, pinning).await?;
    }
    Ok(())
}

/// An established idle connection to any of the brokers.
enum Held {
    Anteroom(#[allow(dead_code)] Connection),
    Raw(#[allow(dead_code)] tokio::net::TcpStream),
}

/// Opens one connection and completes the broker's handshake, so that the
/// server holds a real client: `hello` for anteroom, `PING` for Redis,
/// `CONNECT` and `PING` for NATS (answered by `PONG`).
async fn open(broker: Broker, addr: SocketAddr, i: usize) -> anyhow::Result<(Held, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_spread(addr, i).await?;
    match broker {
        Broker::Anteroom => {
            let mut connection = Connection::from_stream(stream);
            let admission = connection.join(&format!("c{i:06}")).await?;
            Ok((
                Held::Anteroom(connection),
                matches!(admission, Admission::Welcome { .. }),
            ))
        }
        Broker::Redis | Broker::Nats => {
            let probe: &[u8] = if broker == Broker::Redis {
                b"PING\r\n"
            } else {
                b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n"
            };
            stream.write_all(probe).await?;
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            while !seen.windows(4).any(|w| w == b"PONG") {
                let n = stream.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "{} closed connection {i}", broker.name());
                seen.extend_from_slice(&buf[..n]);
            }
            Ok((Held::Raw(stream), true))
        }
    }
}

async fn run_broker(args: &Args, broker: Broker, pinning: Option<Pinning>) -> anyhow::Result<()> {
    let limit = super::raise_fd_limit() as usize;
    anyhow::ensure!(
        args.connections + 64 <= limit,
        "{} connections need more descriptors than this process may hold ({limit})",
        args.connections
    );
    let server = match broker {
        Broker::Anteroom => ServerUnderTest::start(
            args.server,
            &[
                ("ANTEROOM_MAX_ACTIVE", args.max_active.to_string()),
                ("ANTEROOM_MAX_WAITING", args.connections.to_string()),
                ("ANTEROOM_HEARTBEAT_INTERVAL", "1h".into()),
                ("ANTEROOM_IDLE_TIMEOUT", "2h".into()),
            ],
            pinning,
        )?,
        other => ServerUnderTest::start_external(other, pinning)?,
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.usage();
    let bar = progress(args.connections as u64, "connecting");
    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = Vec::with_capacity(args.connections);
    let addr = server.addr;
    for i in 0..args.connections {
        let permit = semaphore.clone().acquire_owned().await?;
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let held = open(broker, addr, i).await;
            drop(permit);
            bar.inc(1);
            held
        }));
    }
    let mut held = Vec::with_capacity(args.connections);
    let mut in_room = 0;
    for task in tasks {
        let (connection, welcomed) = task.await??;
        in_room += usize::from(welcomed);
        held.push(connection);
    }
    let connect_time = started.elapsed();
    bar.finish_and_clear();
    tokio::time::sleep(args.hold).await;
    let after = server.usage();
    let report = Report {
        workload: "connections",
        broker: broker.name(),
        connections: args.connections,
        in_room,
        queued: args.connections - in_room,
        connect_per_s: args.connections as f64 / connect_time.as_secs_f64(),
        server_rss_before_mb: before.rss_bytes as f64 / 1e6,
        server_rss_after_mb: after.rss_bytes as f64 / 1e6,
        bytes_per_connection: after.rss_bytes.saturating_sub(before.rss_bytes) as f64
            / args.connections as f64,
        pinned: server.pinned,
    };
    println!(
        "connections on {} ({}): {} held ({} in the room, {} queued), {:.0} connects/s, server RSS {:.1} MB -> {:.1} MB, {:.0} bytes per connection{}",
        report.broker,
        Pinning::describe(pinning),
        report.connections,
        report.in_room,
        report.queued,
        report.connect_per_s,
        report.server_rss_before_mb,
        report.server_rss_after_mb,
        report.bytes_per_connection,
        if server.measurable() {
            ""
        } else {
            " (external server: memory not measured)"
        }
    );
    println!("{}", serde_json::to_string(&report)?);
    drop(held);
    server.stop()
}
