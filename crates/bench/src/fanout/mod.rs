//! Fan-out: S members, P of them publishing B-byte messages at an offered
//! rate R for D seconds, paced open loop: each message is due at a fixed
//! time and carries that time, so a sender falling behind shows up as
//! latency instead of hiding it (no coordinated omission).

mod connect;
mod members;
mod publishers;
mod room;
mod sweep;
mod wire;

pub(crate) use wire::{WsFrame, ws_frame};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cpu::{PinArgs, Pinning};
use crate::ms;
use crate::server::{Broker, ServerUnderTest};
use crate::transport::{Dialer, HANDSHAKE_TIMEOUT, TestCertificate, Transport, plan};
use connect::connect_room;
use sweep::{sweep, sweep_summary};

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
    /// Raise R to find the highest sustainable rate (>= 99.9% delivered, p99
    /// <= 50 ms) and the highest within capacity (p99 <= 250 ms).
    #[arg(long)]
    pub sweep: bool,
    /// Stop a sweep at this rate even if it is still sustainable.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Use a running anteroom instead of starting one.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// Which broker to measure; `all` runs anteroom, Redis and NATS one
    /// after the other (needs the system's redis-server and nats-server).
    #[arg(long, default_value = "anteroom")]
    pub broker: BrokerChoice,
    /// How the clients reach anteroom: tcp, tls, quic or ws, or several
    /// separated by commas, run in turn (Redis and NATS: tcp only).
    #[arg(long, value_delimiter = ',', default_value = "tcp")]
    pub transport: Vec<Transport>,
    /// anteroom's chat log: memory or sqlite, or both separated by a comma,
    /// run in turn (sqlite in a new temporary data directory each run).
    #[arg(long, value_delimiter = ',', default_value = "memory")]
    pub store: Vec<Store>,
    /// `store_sync` for the sqlite store.
    #[arg(long, default_value = "normal")]
    pub store_sync: String,
    /// anteroom nodes serving the room: above 1, a cluster over a
    /// `redis-server` the bench starts, with the members spread over the
    /// nodes in turn (TCP, memory store).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    #[command(flatten)]
    pub cpu: PinArgs,
}

/// Where a started anteroom keeps its chat log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    Memory,
    Sqlite,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite => "sqlite",
        }
    }
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

/// A data directory of its own for one run, removed after it.
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "anteroom-bench-data-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Server settings for a fan-out run: a room big enough, no rate limit,
/// no heartbeats during the measurement.
pub(crate) fn server_settings(members: usize, payload: usize) -> Vec<(&'static str, String)> {
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
        (
            "ANTEROOM_HANDSHAKE_TIMEOUT",
            format!("{}s", HANDSHAKE_TIMEOUT.as_secs()),
        ),
    ]
}

/// Runs the fan-out workload on each chosen broker and transport.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let runs = plan(args.broker, &args.transport, args.server.is_some())?;
    let pinning = args.cpu.apply()?;
    for (broker, transport) in runs {
        // The store is anteroom's alone: other brokers run once.
        let stores = match broker {
            Broker::Anteroom => args.store.clone(),
            _ => vec![Store::Memory],
        };
        for store in stores {
            run_broker(&args, broker, transport, store, pinning).await?;
        }
    }
    Ok(())
}

async fn run_broker(
    args: &Args,
    broker: Broker,
    transport: Transport,
    store: Store,
    pinning: Option<Pinning>,
) -> anyhow::Result<()> {
    // Removed after the server, which holds it.
    let data_dir = DataDir::new()?;
    // Declared before the server, so that it goes after it.
    let certificate = transport
        .encrypted()
        .then(TestCertificate::new)
        .transpose()?;
    let server = match broker {
        Broker::Anteroom => {
            let mut settings = server_settings(args.members, args.payload);
            if let Some(certificate) = &certificate {
                settings.extend(certificate.server_settings(transport));
            }
            settings.extend(transport.plain_settings());
            settings.push(("ANTEROOM_STORE", store.name().into()));
            settings.push(("ANTEROOM_STORE_SYNC", args.store_sync.clone()));
            settings.push(("ANTEROOM_DATA_DIR", data_dir.path()));
            if args.nodes > 1 {
                anyhow::ensure!(
                    transport == Transport::Tcp && store == Store::Memory && args.server.is_none(),
                    "--nodes above 1 runs over TCP with the memory store, on servers the bench starts"
                );
                ServerUnderTest::start_cluster(args.nodes, &settings)?
            } else {
                ServerUnderTest::start(args.server, &settings, pinning)?
            }
        }
        other => ServerUnderTest::start_external(other, pinning)?,
    };
    let addr = server.addr_of(transport)?;
    let dialer = Dialer::new(
        transport,
        addr,
        certificate.as_ref(),
        args.members + args.publishers,
    )?;
    let dialer = Arc::new(dialer.spread_over(server.nodes()));
    let filling = std::time::Instant::now();
    let mut room = connect_room(args, broker, transport, dialer.clone())
        .await
        .context("filling the room")?;
    let filled = filling.elapsed().as_secs_f64();
    println!(
        "room filled: {} members in {filled:.2} s ({:.0} joins/s)",
        args.members,
        args.members as f64 / filled
    );
    let args = args.clone();
    let store_shown = match (broker, store) {
        (Broker::Anteroom, Store::Sqlite) => format!(", store sqlite ({})", args.store_sync),
        (Broker::Anteroom, Store::Memory) => ", store memory".to_string(),
        _ => String::new(),
    };
    println!(
        "fanout on {}{}{store_shown} over {}{}: {} members, {} publishing, {}-byte messages, {:?} per rate, server {}, {}{}",
        broker.name(),
        if args.nodes > 1 && broker == Broker::Anteroom {
            format!(" ({} nodes over Redis)", args.nodes)
        } else {
            String::new()
        },
        transport.name(),
        dialer
            .protection()
            .map_or_else(String::new, |p| format!(" ({p})")),
        args.members,
        args.publishers,
        args.payload,
        args.duration,
        addr,
        Pinning::describe(pinning),
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
        let found = sweep(&mut room, &args, &server).await;
        for (what, best) in [
            ("sustainable (p99 <= 50 ms)", &found.strict),
            ("within capacity (p99 <= 250 ms)", &found.capacity),
        ] {
            match best {
                Some(best) => println!(
                    "highest rate {what}: {:.0} msg/s ({:.0} deliveries/s, p99 {} ms)",
                    best.offered_rate,
                    best.deliveries_per_s,
                    ms((best.p99_ms * 1000.0) as u64)
                ),
                None => println!("no rate {what} at or above {:.0} msg/s", args.rate),
            }
        }
        println!(
            "{}",
            sweep_summary(
                &args,
                broker,
                transport,
                (broker == Broker::Anteroom).then(|| store.name()),
                server.pinned,
                &found
            )
        );
    }
    drop(room);
    server.stop()
}
