//! Churn: a full room of M members, W clients queued behind it, and members
//! leaving at L per second. Each departed member reconnects at the back of
//! the queue, so the queue stays W long. Every queued client checks its own
//! positions: never going up, and never more than one second stale. The
//! position a client should have is exact: its position on entry minus the
//! promotions seen since (nobody ahead of it leaves the queue).
//!
//! Each mode (`--modes`) is one run against a fresh server, side by side:
//! `v1` clients ask for nothing, so every member gets a `joined` and a
//! `left` per departure; `batch` clients ask for `presence_batch` and
//! `eta`, and the bench also measures how good the wait estimates were:
//! for each client promoted during the measured part, the first `eta_s` it
//! was told against the time it then actually waited. `--bursty` makes the
//! departures come in bursts of the same mean rate.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use super::cpu::{PinArgs, Pinning};
use super::server::ServerUnderTest;
use super::{connect_spread, lock, progress};
use anteroom_client::protocol::{ClientMessage, Feature, Features};
use anteroom_client::{Admission, Connection, Event};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often a member, which does not read the server's pings, sends a
/// `ping` of its own: well inside the default `idle_timeout` of 45 s.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Churn workload settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Room capacity (M), all taken.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Clients waiting (W).
    #[arg(long, default_value_t = 18_000)]
    pub queued: usize,
    /// Members leaving per second (L).
    #[arg(long, default_value_t = 1000.0)]
    pub departures: f64,
    /// How long to churn.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Use a running broker instead of starting one.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// What the clients ask for, one run per mode, side by side.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "v1")]
    pub modes: Vec<Mode>,
    /// Departures in bursts: 5 s at twice the rate, then 5 s without, the
    /// same mean rate.
    #[arg(long)]
    pub bursty: bool,
    /// Churn before measuring: the wait estimates need a history, and the
    /// room a steady state.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// anteroom nodes serving the room: above 1, a cluster over a
    /// `redis-server` the bench starts, clients spread over the nodes in
    /// turn (a departure then mostly promotes a client of another node).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    #[command(flatten)]
    pub cpu: PinArgs,
}

/// What the bench's clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Nothing: version-1 clients.
    V1,
    /// `presence_batch` and `eta`.
    Batch,
}

impl Mode {
    fn features(self) -> Features {
        match self {
            Mode::V1 => Features::NONE,
            Mode::Batch => Features::NONE
                .with(Feature::PresenceBatch)
                .with(Feature::Eta),
        }
    }
}

/// Relative errors of the wait estimates: |told - waited| / waited.
#[derive(Debug, Default)]
struct EtaErrors(Vec<f64>);

impl EtaErrors {
    fn quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied()
    }
}

/// One churn run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub broker: &'static str,
    pub mode: Mode,
    pub bursty: bool,
    pub warmup_s: f64,
    pub members: usize,
    pub queued: usize,
    pub departure_rate: f64,
    pub duration_s: f64,
    pub departures: u64,
    pub promotions: u64,
    pub positions_checked: u64,
    pub position_went_up: u64,
    pub position_stale: u64,
    /// Checks of a client that had heard nothing for over a second since
    /// the queue moved: the rule without the bench's counting lag.
    pub position_unheard: u64,
    pub promotion_p50_ms: f64,
    pub promotion_p99_ms: f64,
    pub promotion_max_ms: f64,
    pub server_cpu_s: f64,
    pub server_cpu_share: f64,
    pub cpu_us_per_departure: f64,
    /// Promoted clients measured for the wait estimate's accuracy.
    pub eta_samples: usize,
    /// Median and 90th percentile of |estimate - waited| / waited.
    pub eta_error_p50: Option<f64>,
    pub eta_error_p90: Option<f64>,
    /// Server and load generator on a CPU each (`--pin`).
    pub pinned: bool,
    /// anteroom nodes serving the room (above 1: a cluster over Redis,
    /// whose CPU counts in `server_cpu_s`).
    pub nodes: usize,
}

/// What one client knows about itself, shared with the checker.
#[derive(Debug, Default)]
struct Waiting {
    active: bool,
    entry_position: u64,
    promotions_at_entry: u64,
    latest: u64,
    /// The first estimate this client was told, and when.
    eta: Option<(u64, Instant)>,
    /// Promotions the bench had counted when this client last heard its
    /// position (or entered).
    promotions_at_update: u64,
}

struct Shared {
    promotions: AtomicU64,
    departures: AtomicU64,
    went_up: AtomicU64,
    /// Departure times not yet matched with a promotion (FIFO both ways).
    departed_at: Mutex<VecDeque<Instant>>,
    promotion_ms: Mutex<Histogram<u64>>,
    /// Members ready to be told to leave.
    members: Mutex<VecDeque<mpsc::Sender<()>>>,
    next_name: AtomicU64,
    /// Every node's chat address; client `n` goes to node `n % len`.
    servers: Vec<SocketAddr>,
    features: Features,
    /// Estimates told from here on are measured.
    measure_from: Mutex<Option<Instant>>,
    eta_errors: Mutex<EtaErrors>,
}

/// Runs the churn workload, once per mode.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for &mode in &args.modes {
        reports.push(run_mode(&args, mode).await?);
    }
    if let (Some(v1), Some(batch)) = (
        reports.iter().find(|r| r.mode == Mode::V1),
        reports.iter().find(|r| r.mode == Mode::Batch),
    ) {
        println!(
            "churn: server CPU per departure, batch / v1 = {:.3} ({:.1} µs / {:.1} µs)",
            batch.cpu_us_per_departure / v1.cpu_us_per_departure,
            batch.cpu_us_per_departure,
            v1.cpu_us_per_departure
        );
    }
    Ok(())
}

async fn run_mode(args: &Args, mode: Mode) -> anyhow::Result<Report> {
    let limit = super::raise_fd_limit() as usize;
    anyhow::ensure!(
        args.members + args.queued + 256 <= limit,
        "{} connections need more descriptors than this process may hold ({limit})",
        args.members + args.queued
    );
    let pinning = args.cpu.apply()?;
    let settings = [
        ("ANTEROOM_MAX_ACTIVE", args.members.to_string()),
        (
            "ANTEROOM_MAX_WAITING",
            (args.queued + args.members).to_string(),
        ),
        ("ANTEROOM_HEARTBEAT_INTERVAL", "1h".into()),
        ("ANTEROOM_IDLE_TIMEOUT", "2h".into()),
    ];
    let server = if args.nodes > 1 {
        anyhow::ensure!(
            args.server.is_none(),
            "--nodes above 1 runs on servers the bench starts"
        );
        ServerUnderTest::start_cluster(args.nodes, &settings)?
    } else {
        ServerUnderTest::start(args.server, &settings, pinning)?
    };
    let shared = Arc::new(Shared {
        promotions: AtomicU64::new(0),
        departures: AtomicU64::new(0),
        went_up: AtomicU64::new(0),
        departed_at: Mutex::new(VecDeque::new()),
        promotion_ms: Mutex::new(Histogram::new_with_bounds(1, 600_000, 3)?),
        members: Mutex::new(VecDeque::new()),
        next_name: AtomicU64::new(0),
        servers: server.nodes(),
        features: mode.features(),
        measure_from: Mutex::new(None),
        eta_errors: Mutex::new(EtaErrors::default()),
    });
    let waiting: Arc<Mutex<Vec<Arc<Mutex<Waiting>>>>> = Arc::new(Mutex::new(Vec::new()));

    // Fill the room, then the queue, in order.
    let total = args.members + args.queued;
    let bar = progress(total as u64, "filling room and queue");
    for i in 0..total {
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        spawn_client(shared.clone(), waiting.clone(), Some(joined_tx));
        // Sequential joins keep the queue order equal to the loop order.
        let _ = joined_rx.await;
        if i % 64 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    println!(
        "churn ({mode:?}{}): {} members, {} queued, {:.0} departures/s for {:?} after {:?}, server {}, {}",
        if args.bursty { ", bursty" } else { "" },
        args.members,
        args.queued,
        args.departures,
        args.duration,
        args.warmup,
        server.addr,
        Pinning::describe(pinning)
    );

    // Sample the promotion count every 100 ms, so "one second ago" is known.
    let samples: Arc<Mutex<VecDeque<(Instant, u64)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let warm_start = Instant::now();
    let end = warm_start + args.warmup + args.duration;
    let bursty = args.bursty;
    // In bursts: twice the rate for half of each period.
    let interval = Duration::from_secs_f64(1.0 / args.departures / if bursty { 2.0 } else { 1.0 });
    let driver = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut due = Instant::now();
            while due < end {
                if bursty {
                    let phase = due.duration_since(warm_start).as_secs_f64() % BURST_PERIOD_S;
                    if phase >= BURST_PERIOD_S / 2.0 {
                        due += Duration::from_secs_f64(BURST_PERIOD_S - phase);
                        continue;
                    }
                }
                tokio::time::sleep_until(due.into()).await;
                let member = lock(&shared.members).pop_front();
                if let Some(member) = member {
                    let _ = member.try_send(());
                }
                due += interval;
            }
        })
    };
    if !args.warmup.is_zero() {
        let bar = progress(args.warmup.as_secs().max(1), "warming up");
        while warm_start.elapsed() < args.warmup {
            tokio::time::sleep(Duration::from_millis(500)).await;
            bar.set_position(warm_start.elapsed().as_secs());
        }
        bar.finish_and_clear();
    }
    let before = server.usage();
    let departures_before = shared.departures.load(Ordering::Relaxed);
    let promotions_before = shared.promotions.load(Ordering::Relaxed);
    let started = Instant::now();
    *lock(&shared.measure_from) = Some(started);
    let mut checked = 0u64;
    let mut stale = 0u64;
    let mut unheard = 0u64;
    let bar = progress(args.duration.as_secs().max(1), "churning");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next_check = started + Duration::from_secs(1);
    while Instant::now() < end {
        tick.tick().await;
        let now = Instant::now();
        let promotions = shared.promotions.load(Ordering::Relaxed);
        let mut samples_guard = lock(&samples);
        samples_guard.push_back((now, promotions));
        while samples_guard
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_millis(1100))
        {
            samples_guard.pop_front();
        }
        // Once a second: every waiting client's latest position must be at
        // least as good as the truth one second ago.
        let second_ago = samples_guard
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= Duration::from_secs(1))
            .map(|(_, p)| *p);
        drop(samples_guard);
        if now >= next_check {
            next_check += Duration::from_secs(1);
            bar.set_position(now.duration_since(started).as_secs());
            if let Some(then) =
                second_ago.filter(|_| now.duration_since(started) > Duration::from_secs(1))
            {
                for client in lock(&waiting).iter() {
                    let w = lock(client);
                    if !w.active || w.promotions_at_entry > then {
                        continue;
                    }
                    let ahead_gone = then - w.promotions_at_entry;
                    let truth = w.entry_position.saturating_sub(ahead_gone).max(1);
                    checked += 1;
                    // One position of slack: promotions are counted when
                    // the bench sees the welcome, a little after the server.
                    if w.latest > truth + 1 {
                        stale += 1;
                    }
                    // The same rule, free of the bench's own lag in counting
                    // promotions (which varies with the rate): a client that
                    // has heard nothing since a promotion counted more than a
                    // second ago was not told in time.
                    if then > w.promotions_at_update {
                        unheard += 1;
                    }
                }
            }
        }
    }
    let _ = driver.await;
    bar.finish_and_clear();
    let after = server.usage();
    let elapsed = started.elapsed().as_secs_f64();
    let departures = shared.departures.load(Ordering::Relaxed) - departures_before;
    let cpu = after.cpu_seconds - before.cpu_seconds;
    let hist = lock(&shared.promotion_ms).clone();
    let errors = std::mem::take(&mut *lock(&shared.eta_errors));
    let report = Report {
        workload: "churn",
        broker: "anteroom",
        mode,
        bursty: args.bursty,
        warmup_s: args.warmup.as_secs_f64(),
        members: args.members,
        queued: args.queued,
        departure_rate: args.departures,
        duration_s: elapsed,
        departures,
        promotions: shared.promotions.load(Ordering::Relaxed) - promotions_before,
        positions_checked: checked,
        position_went_up: shared.went_up.load(Ordering::Relaxed),
        position_stale: stale,
        position_unheard: unheard,
        promotion_p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        promotion_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        promotion_max_ms: hist.max() as f64 / 1000.0,
        server_cpu_s: cpu,
        server_cpu_share: cpu / elapsed,
        cpu_us_per_departure: if departures == 0 {
            0.0
        } else {
            cpu * 1e6 / departures as f64
        },
        eta_samples: errors.0.len(),
        eta_error_p50: errors.quantile(0.5),
        eta_error_p90: errors.quantile(0.9),
        pinned: server.pinned,
        nodes: server.nodes().len(),
    };
    println!(
        "churn: {} departures, {} promotions; {} position checks, {} went up, {} stale, {} unheard for over 1 s; promotion p50 {:.2} ms p99 {:.2} ms max {:.2} ms; server CPU {:.2} s ({:.0}% of a core), {:.1} µs per departure",
        report.departures,
        report.promotions,
        report.positions_checked,
        report.position_went_up,
        report.position_stale,
        report.position_unheard,
        report.promotion_p50_ms,
        report.promotion_p99_ms,
        report.promotion_max_ms,
        report.server_cpu_s,
        report.server_cpu_share * 100.0,
        report.cpu_us_per_departure
    );
    if let (Some(p50), Some(p90)) = (report.eta_error_p50, report.eta_error_p90) {
        println!(
            "churn: wait estimates of {} promoted clients: |estimate - waited| / waited p50 {:.3}, p90 {:.3}",
            report.eta_samples, p50, p90
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    server.stop()?;
    Ok(report)
}

/// The length of one burst and the pause after it, with `--bursty`.
const BURST_PERIOD_S: f64 = 10.0;

/// A client that joins, waits if queued, and when told to leave as a member
/// says bye and comes back at the end of the queue under a new name.
fn spawn_client(
    shared: Arc<Shared>,
    waiting: Arc<Mutex<Vec<Arc<Mutex<Waiting>>>>>,
    mut joined: Option<tokio::sync::oneshot::Sender<()>>,
) {
    tokio::spawn(async move {
        let state = Arc::new(Mutex::new(Waiting::default()));
        lock(&waiting).push(state.clone());
        loop {
            let n = shared.next_name.fetch_add(1, Ordering::Relaxed);
            let Ok(stream) = connect_spread(
                shared.servers[n as usize % shared.servers.len()],
                n as usize,
            )
            .await
            else {
                return;
            };
            let mut connection = Connection::builder()
                .features(shared.features)
                .from_stream(stream);
            let Ok(admission) = connection.join(&format!("u{n:07}")).await else {
                return;
            };
            let (leave_tx, mut leave_rx) = mpsc::channel(1);
            match admission {
                Admission::Welcome { .. } => {
                    lock(&shared.members).push_back(leave_tx.clone());
                }
                Admission::Queued {
                    position, eta_s, ..
                } => {
                    let mut w = lock(&state);
                    *w = Waiting {
                        active: true,
                        entry_position: position,
                        promotions_at_entry: shared.promotions.load(Ordering::Relaxed),
                        latest: position,
                        eta: eta_s.map(|eta| (eta, Instant::now())),
                        promotions_at_update: shared.promotions.load(Ordering::Relaxed),
                    };
                }
            }
            if let Some(joined) = joined.take() {
                let _ = joined.send(());
            }
            // Wait in the queue, decoding position updates, then in the room
            // until told to leave.
            let member = matches!(admission, Admission::Welcome { .. });
            let (mut frames, mut write) = connection.split_frames();
            if !member {
                loop {
                    let Some(Ok(payload)) = frames.next().await else {
                        return;
                    };
                    match Event::decode(&payload) {
                        Ok(Event::Queued {
                            position, eta_s, ..
                        }) => {
                            let mut w = lock(&state);
                            if position > w.latest {
                                shared.went_up.fetch_add(1, Ordering::Relaxed);
                            }
                            w.latest = position;
                            w.promotions_at_update = shared.promotions.load(Ordering::Relaxed);
                            if w.eta.is_none() {
                                w.eta = eta_s.map(|eta| (eta, Instant::now()));
                            }
                        }
                        Ok(Event::Welcome { .. }) => {
                            let told = {
                                let mut w = lock(&state);
                                w.active = false;
                                w.eta.take()
                            };
                            let measured = *lock(&shared.measure_from);
                            if let (Some((eta, at)), Some(from)) = (told, measured)
                                && at >= from
                            {
                                let waited = at.elapsed().as_secs_f64();
                                if waited > 0.0 {
                                    let error = (eta as f64 - waited).abs() / waited;
                                    lock(&shared.eta_errors).0.push(error);
                                }
                            }
                            shared.promotions.fetch_add(1, Ordering::Relaxed);
                            let departed = lock(&shared.departed_at).pop_front();
                            if let Some(departed) = departed {
                                let us = departed.elapsed().as_micros() as u64;
                                let _ = lock(&shared.promotion_ms).record(us.max(1));
                            }
                            lock(&shared.members).push_back(leave_tx.clone());
                            break;
                        }
                        // Against a server with heartbeats on, a long wait
                        // must not end in `idle_timeout`.
                        Ok(ping @ Event::Ping { .. }) => {
                            let Some(pong) = ping.answer() else { continue };
                            if write.write_all(&pong.to_frame()).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
            // A member only has to keep up with the room's presence events
            // (two per departure to each of the M members): it drains the
            // bytes without decoding them, so the load generator is not what
            // falls behind. Anything still buffered by the frame reader is
            // dropped with it. It never sees the server's pings, so it sends
            // one of its own now and then: any frame counts as activity.
            let mut read = frames.into_inner();
            let mut sink = vec![0u8; 16 * 1024];
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            keepalive.tick().await;
            let ping = ClientMessage::Ping { id: None }.to_frame();
            loop {
                tokio::select! {
                    n = read.read(&mut sink) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = keepalive.tick() => {
                        if write.write_all(&ping).await.is_err() {
                            return;
                        }
                    }
                    _ = leave_rx.recv() => break,
                }
            }
            lock(&shared.departed_at).push_back(Instant::now());
            shared.departures.fetch_add(1, Ordering::Relaxed);
            let _ = write.write_all(&ClientMessage::Bye.to_frame()).await;
            drop((read, write));
        }
    });
}
