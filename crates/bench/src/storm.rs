//! Reconnect storm: M members asking for `resume` and `history` drop their
//! connections within a few seconds and take their seats back, while a
//! talker keeps posting. It checks what the feature promises: nobody else
//! (version-1 members nor `presence_batch` ones) sees a `joined` or `left`,
//! nobody waiting in the queue is given a seat, every member comes back
//! with `resumed: true`, and every member ends with every message posted,
//! none twice. It reports the time from the first drop until all are back.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anteroom_client::protocol::{ClientMessage, Feature, Features};
use anteroom_client::{Admission, Connection, Event};
use hdrhistogram::Histogram;
use tokio::sync::watch;

use super::cpu::{PinArgs, Pinning};
use super::server::ServerUnderTest;
use super::{connect_spread, lock, progress};

/// Storm settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Members that drop and come back.
    #[arg(long, default_value_t = 5000)]
    pub members: usize,
    /// Members that stay and watch (half version 1, half `presence_batch`).
    #[arg(long, default_value_t = 20)]
    pub observers: usize,
    /// Clients waiting behind the full room, who must stay waiting.
    #[arg(long, default_value_t = 500)]
    pub queued: usize,
    /// The drops are spread over this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub spread: Duration,
    /// Each member reconnects at a random moment this long after its drop.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub reconnect_within: Duration,
    /// Messages per second the talker posts throughout.
    #[arg(long, default_value_t = 20.0)]
    pub talk_rate: f64,
    /// Use a running broker instead of starting one.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    #[command(flatten)]
    pub cpu: PinArgs,
}

/// One storm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub members: usize,
    pub observers: usize,
    pub queued: usize,
    pub resumed: u64,
    pub not_resumed: u64,
    /// `joined`, `left` or non-empty `presence` frames the observers saw
    /// during the storm.
    pub membership_frames_seen: u64,
    /// Queued clients given a seat during the storm.
    pub queued_promoted: u64,
    /// Members missing messages at the end, and members sent one twice.
    pub members_missing_messages: u64,
    pub members_with_duplicates: u64,
    pub messages_posted: u64,
    /// From the first drop until the last member was back.
    pub all_back_s: f64,
    /// From a member's new connection to its `welcome{resumed: true}`.
    pub reconnect_p50_ms: f64,
    pub reconnect_p99_ms: f64,
    pub reconnect_max_ms: f64,
    pub server_cpu_s: f64,
    pub pinned: bool,
}

struct Shared {
    server: SocketAddr,
    next_source: AtomicU64,
    resumed: AtomicU64,
    not_resumed: AtomicU64,
    membership_frames: AtomicU64,
    queued_promoted: AtomicU64,
    missing: AtomicU64,
    duplicates: AtomicU64,
    reconnect_us: Mutex<Histogram<u64>>,
    last_back: Mutex<Option<Instant>>,
    /// Set when the storm starts; membership frames count from then.
    storm: watch::Receiver<bool>,
    /// The id of the talker's last message, once it has stopped.
    last_posted: watch::Receiver<Option<u64>>,
}

/// Runs the storm.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let limit = super::raise_fd_limit() as usize;
    let clients = args.members + args.observers + args.queued + 1;
    anyhow::ensure!(
        clients + 256 <= limit,
        "{clients} connections need more descriptors than this process may hold ({limit})"
    );
    let pinning = args.cpu.apply()?;
    let seats = args.members + args.observers + 1;
    let server = ServerUnderTest::start(
        args.server,
        &[
            ("ANTEROOM_MAX_ACTIVE", seats.to_string()),
            ("ANTEROOM_MAX_WAITING", (args.queued + 16).to_string()),
            ("ANTEROOM_JOIN_RATE", "0".into()),
            ("ANTEROOM_RATE_LIMIT", "1000".into()),
            ("ANTEROOM_RATE_BURST", "1000".into()),
            ("ANTEROOM_RESUME_GRACE", "30s".into()),
            ("ANTEROOM_PRESENCE_INTERVAL", "1s".into()),
            ("ANTEROOM_HISTORY_PAGE_MAX", "1000".into()),
            ("ANTEROOM_HEARTBEAT_INTERVAL", "1h".into()),
            ("ANTEROOM_IDLE_TIMEOUT", "2h".into()),
        ],
        pinning,
    )?;
    let (storm_tx, storm) = watch::channel(false);
    let (posted_tx, last_posted) = watch::channel(None);
    let shared = Arc::new(Shared {
        server: server.addr,
        next_source: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        not_resumed: AtomicU64::new(0),
        membership_frames: AtomicU64::new(0),
        queued_promoted: AtomicU64::new(0),
        missing: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        reconnect_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        last_back: Mutex::new(None),
        storm,
        last_posted,
    });

    // The talker and the observers first, then the members, then the queue.
    let mut talker = join(&shared, "talker", Features::NONE).await?;
    let mut watchers = Vec::new();
    for i in 0..args.observers {
        let features = if i % 2 == 0 {
            Features::NONE
        } else {
            Features::NONE.with(Feature::PresenceBatch)
        };
        let (c, _) = join(&shared, &format!("watch{i}"), features).await?;
        watchers.push(tokio::spawn(observe(shared.clone(), c)));
    }
    let bar = progress(args.members as u64, "members joining");
    let mut drops = Vec::new();
    let mut members = Vec::new();
    for i in 0..args.members {
        let (drop_tx, drop_rx) = tokio::sync::oneshot::channel();
        let (c, admission) = join(
            &shared,
            &format!("m{i:05}"),
            Features::NONE.with(Feature::Resume).with(Feature::History),
        )
        .await?;
        let Admission::Welcome {
            resume: Some(resume),
            ..
        } = admission
        else {
            anyhow::bail!("member {i} was not seated with a resume token");
        };
        members.push(tokio::spawn(member(
            shared.clone(),
            format!("m{i:05}"),
            c,
            resume.token,
            drop_rx,
            args.reconnect_within,
        )));
        drops.push(drop_tx);
        if i % 64 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    let mut waiting = Vec::new();
    for i in 0..args.queued {
        let (c, admission) = join(&shared, &format!("q{i:05}"), Features::NONE).await?;
        anyhow::ensure!(
            matches!(admission, Admission::Queued { .. }),
            "queued client {i} was seated"
        );
        waiting.push(tokio::spawn(wait_in_queue(shared.clone(), c)));
    }
    println!(
        "storm: {} members drop within {:?} and come back within {:?} of their drop; {} observers, {} queued, {:.0} messages/s; server {}, {}",
        args.members,
        args.spread,
        args.reconnect_within,
        args.observers,
        args.queued,
        args.talk_rate,
        server.addr,
        Pinning::describe(pinning)
    );

    // The talker posts throughout; the storm starts a second in.
    let talk_every = Duration::from_secs_f64(1.0 / args.talk_rate);
    let (stop_talk_tx, mut stop_talk) = watch::channel(false);
    let talking = tokio::spawn(async move {
        let (connection, _) = &mut talker;
        let mut posted = 0u64;
        let mut last_id = None;
        let mut tick = tokio::time::interval(talk_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    posted += 1;
                    connection.send(&ClientMessage::say(format!("storm {posted}"))).await?;
                }
                _ = stop_talk.changed() => break,
            }
        }
        // The id of the last one, from its echo.
        while let Ok(event) = connection.next_event().await {
            if let Event::Message { id, text, .. } = event {
                last_id = Some(id);
                if text == format!("storm {posted}") {
                    break;
                }
            }
        }
        // The talker stays until the end: its leaving is not the storm's.
        anyhow::Ok((posted, last_id, talker))
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.usage();
    storm_tx.send_replace(true);
    let first_drop = Instant::now();
    let every = args.spread.div_f64(args.members.max(1) as f64);
    for (i, drop_tx) in drops.into_iter().enumerate() {
        tokio::time::sleep_until((first_drop + every * i as u32).into()).await;
        let _ = drop_tx.send(first_drop);
    }
    let bar = progress(args.members as u64, "coming back");
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.resumed.load(Ordering::Relaxed) + shared.not_resumed.load(Ordering::Relaxed)
        < args.members as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(shared.resumed.load(Ordering::Relaxed));
    }
    bar.finish_and_clear();
    let all_back = lock(&shared.last_back).map(|t| t.duration_since(first_drop));
    // A second more of talk, then every member checks what it has.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.usage();
    stop_talk_tx.send_replace(true);
    let (posted, last_id, talker) = talking.await??;
    posted_tx.send_replace(last_id);
    for m in members {
        m.await?;
    }
    storm_tx.send_replace(false);
    drop(talker);
    for w in watchers.into_iter().chain(waiting) {
        w.abort();
    }
    let hist = lock(&shared.reconnect_us).clone();
    let report = Report {
        workload: "storm",
        members: args.members,
        observers: args.observers,
        queued: args.queued,
        resumed: shared.resumed.load(Ordering::Relaxed),
        not_resumed: shared.not_resumed.load(Ordering::Relaxed),
        membership_frames_seen: shared.membership_frames.load(Ordering::Relaxed),
        queued_promoted: shared.queued_promoted.load(Ordering::Relaxed),
        members_missing_messages: shared.missing.load(Ordering::Relaxed),
        members_with_duplicates: shared.duplicates.load(Ordering::Relaxed),
        messages_posted: posted,
        all_back_s: all_back.map_or(f64::NAN, |d| d.as_secs_f64()),
        reconnect_p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        reconnect_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        reconnect_max_ms: hist.max() as f64 / 1000.0,
        server_cpu_s: after.cpu_seconds - before.cpu_seconds,
        pinned: server.pinned,
    };
    println!(
        "storm: {} resumed, {} not; all back {:.2} s after the first drop; reconnect p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {} joins/leaves seen by observers, {} queued promoted; {} of {} messages: {} members missing some, {} with duplicates; server CPU {:.2} s",
        report.resumed,
        report.not_resumed,
        report.all_back_s,
        report.reconnect_p50_ms,
        report.reconnect_p99_ms,
        report.reconnect_max_ms,
        report.membership_frames_seen,
        report.queued_promoted,
        report.messages_posted,
        report.messages_posted,
        report.members_missing_messages,
        report.members_with_duplicates,
        report.server_cpu_s
    );
    println!("{}", serde_json::to_string(&report)?);
    server.stop()
}

type Joined = (Connection, Admission);

async fn join(shared: &Shared, name: &str, features: Features) -> anyhow::Result<Joined> {
    let source = shared.next_source.fetch_add(1, Ordering::Relaxed) as usize;
    let stream = connect_spread(shared.server, source).await?;
    let mut c = Connection::builder().features(features).from_stream(stream);
    let admission = c.join(name).await?;
    Ok((c, admission))
}

/// Reads the room, counting any sign of someone leaving or joining while
/// the storm is on.
async fn observe(shared: Arc<Shared>, mut c: Connection) {
    while let Ok(event) = c.next_event().await {
        let membership = match &event {
            Event::Joined { .. } | Event::Left { .. } => true,
            Event::Presence { joined, left, .. } => !joined.is_empty() || !left.is_empty(),
            _ => false,
        };
        if membership && *shared.storm.borrow() {
            shared.membership_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits in the queue: a `welcome` during the storm is a seat given away.
async fn wait_in_queue(shared: Arc<Shared>, mut c: Connection) {
    while let Ok(event) = c.next_event().await {
        if let Event::Welcome { .. } = event {
            shared.queued_promoted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The message ids a member has been sent, live or in a `history` frame.
#[derive(Default)]
struct Seen {
    ids: BTreeSet<u64>,
    duplicate: bool,
}

impl Seen {
    fn take(&mut self, event: &Event) {
        match event {
            Event::Message { id, .. } => self.add(*id),
            Event::History { messages, .. } => {
                for m in messages {
                    if let Event::Message { id, .. } = m {
                        self.add(*id);
                    }
                }
            }
            _ => {}
        }
    }

    fn add(&mut self, id: u64) {
        if !self.ids.insert(id) {
            self.duplicate = true;
        }
    }

    fn last(&self) -> Option<u64> {
        self.ids.last().copied()
    }
}

/// A member: reads until told to drop, drops, comes back with its token
/// and the last id it saw, and reads on until the talker's last message.
async fn member(
    shared: Arc<Shared>,
    name: String,
    mut c: Connection,
    token: String,
    dropped: tokio::sync::oneshot::Receiver<Instant>,
    reconnect_within: Duration,
) {
    let mut seen = Seen::default();
    tokio::pin!(dropped);
    loop {
        tokio::select! {
            event = c.next_event() => match event {
                Ok(event) => seen.take(&event),
                Err(_) => return,
            },
            _ = &mut dropped => break,
        }
    }
    drop(c);
    // Spread over the window, in an order unrelated to the drops'.
    let spread = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b));
    let delay = reconnect_within.mul_f64((spread % 1000) as f64 / 1000.0);
    tokio::time::sleep(delay).await;
    // Timed from the new connection: the delay before it is the bench's.
    let dropped_at = Instant::now();
    let source = shared.next_source.fetch_add(1, Ordering::Relaxed) as usize;
    let Ok(stream) = connect_spread(shared.server, source).await else {
        shared.not_resumed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut c = Connection::builder()
        .features(Features::NONE.with(Feature::Resume).with(Feature::History))
        .from_stream(stream);
    match c.rejoin(&name, &token, seen.last()).await {
        Ok(Admission::Welcome { resumed: true, .. }) => {
            let now = Instant::now();
            let us = now.duration_since(dropped_at).as_micros() as u64;
            let _ = lock(&shared.reconnect_us).record(us.max(1));
            let mut last = lock(&shared.last_back);
            *last = Some(last.map_or(now, |t| t.max(now)));
            drop(last);
            shared.resumed.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            shared.not_resumed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    // Read on until the talker's last message is here.
    let mut last_posted = shared.last_posted.clone();
    loop {
        let target = *last_posted.borrow();
        if let Some(target) = target
            && seen.last() >= Some(target)
        {
            break;
        }
        tokio::select! {
            event = c.next_event() => match event {
                Ok(event) => seen.take(&event),
                Err(_) => break,
            },
            _ = last_posted.changed() => {}
        }
    }
    let first = seen.ids.first().copied().unwrap_or(0);
    let last = seen.last().unwrap_or(0);
    let complete = seen.ids.len() as u64 == last - first + 1 || seen.ids.is_empty();
    if !complete {
        shared.missing.fetch_add(1, Ordering::Relaxed);
    }
    if seen.duplicate {
        shared.duplicates.fetch_add(1, Ordering::Relaxed);
    }
}
