//! Soak: hundreds of clients joining, chatting, queueing, leaving and
//! misbehaving at random for a given time against one server, which must
//! come out of it with flat memory, its descriptors back, and no client
//! having seen the protocol broken.
//!
//! Each client checks, as it goes, what it can know exactly: message ids
//! strictly increasing (nothing duplicated, nothing reordered), each
//! sender's messages in the order they were said, nothing from a user who
//! is not in the room, its own messages echoed or refused, queue positions
//! never going up, timeouts never firing early, and no error or goodbye it
//! did not provoke. Two rules need the whole run and are checked at its
//! end: a member that received ids a and b received every id between them
//! that anyone received (nothing lost), and a client already queued when
//! another sent its `hello` enters the room before it (first in, first
//! out), as seen by an observer that stays in the room throughout.

mod checks;
mod client;
mod hostile;
mod plan;
mod report;
mod sampler;
mod session;
mod shared;
mod storm;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::server::ServerUnderTest;
use report::Report;
use sampler::Sampler;
use shared::{Shared, Timeouts};

/// Soak workload settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Simulated clients, each connecting again and again.
    #[arg(long, default_value_t = 300)]
    pub clients: usize,
    /// Room capacity of the server the soak starts (the observer takes one
    /// seat); well below --clients, so that there is always a queue.
    #[arg(long, default_value_t = 100)]
    pub max_active: usize,
    /// How long the clients run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Seed of the clients' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Interval between two samples of the server's memory and descriptors.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub sample: Duration,
    /// Messages per second of a talking member, on average.
    #[arg(long, default_value_t = 0.5)]
    pub say_rate: f64,
    /// Average time a client stays in the room.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub stay: Duration,
    /// Share of sessions that misbehave, from 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    pub misbehave: f64,
    /// Use a running anteroom instead of starting one; its memory,
    /// descriptors and timeouts are then not judged.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// The metrics listener of the server given by --server.
    #[arg(long, requires = "server")]
    pub metrics: Option<SocketAddr>,
    /// Print the report but exit 0 even when a check failed.
    #[arg(long)]
    pub report_only: bool,
    /// A join/leave storm from one host beside the clients, in cycles per
    /// second (connect, `hello`, `bye`); 0: none.
    #[arg(long, default_value_t = 0.0)]
    pub storm: f64,
}

// Settings of the server the soak starts: short timeouts and a small
// outbox, so that silent, stalled and slow clients are dealt with within
// seconds and those paths run many times in a short soak.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
const OUTBOX_LIMIT: usize = 256;

/// The settings above as `ANTEROOM_*` variables, for a room of
/// `max_active` seats and a queue that holds every client.
fn server_settings(args: &Args) -> Vec<(&'static str, String)> {
    vec![
        ("ANTEROOM_MAX_ACTIVE", args.max_active.to_string()),
        (
            "ANTEROOM_MAX_WAITING",
            (args.clients + 16 + storm::STORM_IN_FLIGHT).to_string(),
        ),
        (
            "ANTEROOM_HANDSHAKE_TIMEOUT",
            humantime::format_duration(HANDSHAKE_TIMEOUT).to_string(),
        ),
        (
            "ANTEROOM_HEARTBEAT_INTERVAL",
            humantime::format_duration(HEARTBEAT_INTERVAL).to_string(),
        ),
        (
            "ANTEROOM_IDLE_TIMEOUT",
            humantime::format_duration(IDLE_TIMEOUT).to_string(),
        ),
        (
            "ANTEROOM_WRITE_TIMEOUT",
            humantime::format_duration(WRITE_TIMEOUT).to_string(),
        ),
        ("ANTEROOM_OUTBOX_LIMIT", OUTBOX_LIMIT.to_string()),
    ]
}

/// Runs the soak workload.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.max_active >= 2, "--max-active must be at least 2");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.misbehave),
        "--misbehave must be between 0 and 1"
    );
    anyhow::ensure!(!args.sample.is_zero(), "--sample must be longer than 0");
    anyhow::ensure!(
        args.storm.is_finite() && args.storm >= 0.0,
        "--storm must be a rate of at least 0"
    );
    let limit = crate::raise_fd_limit() as usize;
    anyhow::ensure!(
        args.clients + 256 <= limit,
        "{} clients need more descriptors than this process may hold ({limit})",
        args.clients
    );
    let server = ServerUnderTest::start(args.server, &server_settings(&args), None)?;
    let timeouts = server.measurable().then_some(Timeouts {
        handshake: HANDSHAKE_TIMEOUT,
        idle: IDLE_TIMEOUT,
    });
    let mut sampler = Sampler::baseline(&server, server.metrics_addr.or(args.metrics)).await;
    let shared = Arc::new(Shared::new(args.clone(), server.addr, timeouts)?);

    // The observer enters the empty room first and stays to the end.
    let observer_stop = CancellationToken::new();
    let observer = client::spawn_observer(shared.clone(), observer_stop.clone()).await?;

    println!(
        "soak: {} clients, max_active {}, {:?}, seed {}, server {}",
        args.clients, args.max_active, args.duration, args.seed, server.addr
    );
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        clients.spawn(client::client(shared.clone(), index));
    }
    let storm_tally = Arc::new(storm::StormTally::default());
    if args.storm > 0.0 {
        clients.spawn(storm::storm(
            server.addr,
            args.storm,
            shared.cancel.clone(),
            storm_tally.clone(),
        ));
    }
    sampler
        .watch(&shared, started, args.sample, args.duration)
        .await;
    let ran_for = started.elapsed().as_secs_f64();

    // Everyone leaves: the clients first, then the observer.
    shared.cancel.cancel();
    let all_left = tokio::time::timeout(Duration::from_secs(20), async {
        while clients.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    anyhow::ensure!(all_left, "clients did not stop within 20 s");
    observer_stop.cancel();
    let (joins, observer_cut) = observer.await?;
    if observer_cut {
        println!("note: the observer was cut off; first-in first-out was checked until then");
    }

    let coverage = checks::check_whole_run(&shared, &joins);
    let figures = sampler.settle(&server, args.duration).await;
    let mut report = Report::new(&args, &shared, ran_for, coverage, &figures);
    report.storm = (args.storm > 0.0).then(|| storm_tally.figures());
    report.print(figures.measurable);
    println!("{}", serde_json::to_string(&report)?);
    server.stop()?;
    if !report.ok && !args.report_only {
        anyhow::bail!("{}", report.failure(figures.measurable));
    }
    Ok(())
}
