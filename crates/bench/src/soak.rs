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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::server::{ServerUnderTest, read_usage};
use super::{connect_spread, lock};
use anteroom_client::{Connection, Event, Request};
use anteroom_protocol::codec::encode_frame;

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
}

// Settings of the server the soak starts: short timeouts and a small
// outbox, so that silent, stalled and slow clients are dealt with within
// seconds and those paths run many times in a short soak.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
const OUTBOX_LIMIT: usize = 256;
/// The default `max_message_bytes`; a longer `say` is refused.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Share of the run taken as warm-up before memory is judged.
const WARM_UP: f64 = 0.2;
/// Memory is flat when it grew by at most this much after the warm-up, or
/// by 10% of what it was then if that is more.
const FLAT_MB: f64 = 5.0;
const FLAT_SHARE: f64 = 0.10;

const WELCOME_DIRECT: &str = "Welcome to anteroom! You are now connected to the chat.";
const WELCOME_FROM_QUEUE: &str = "A spot has opened up! You are now connected to the chat.";
const LEFT_REASONS: [&str; 6] = [
    "bye",
    "disconnected",
    "idle_timeout",
    "slow_consumer",
    "protocol_error",
    "shutdown",
];

/// What a client saw that the protocol forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A member missed a message others received while it was in the room.
    Lost,
    /// The same message twice.
    Duplicate,
    /// Message ids going down, or a sender's messages out of order.
    Order,
    /// A queue position that went up.
    PositionIncreased,
    /// A client admitted ahead of one queued before it.
    Fifo,
    /// A message from, or the departure of, a user not in the room.
    Presence,
    /// An error frame the client did not provoke.
    UnexpectedError,
    /// A goodbye the client did not provoke.
    UnexpectedBye,
    /// The connection closed under a client that did nothing to deserve it.
    UnexpectedClose,
    /// A frame that is not a valid event.
    Decode,
    /// Anything else the protocol rules out (texts, sequence of frames).
    Protocol,
    /// A timeout that fired before its configured value.
    Timing,
    /// The server process went away.
    ServerExit,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Lost,
        Kind::Duplicate,
        Kind::Order,
        Kind::PositionIncreased,
        Kind::Fifo,
        Kind::Presence,
        Kind::UnexpectedError,
        Kind::UnexpectedBye,
        Kind::UnexpectedClose,
        Kind::Decode,
        Kind::Protocol,
        Kind::Timing,
        Kind::ServerExit,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Duplicate => "duplicate",
            Kind::Order => "order",
            Kind::PositionIncreased => "position_increased",
            Kind::Fifo => "fifo",
            Kind::Presence => "presence",
            Kind::UnexpectedError => "unexpected_error",
            Kind::UnexpectedBye => "unexpected_bye",
            Kind::UnexpectedClose => "unexpected_close",
            Kind::Decode => "decode",
            Kind::Protocol => "protocol",
            Kind::Timing => "timing",
            Kind::ServerExit => "server_exit",
        }
    }
}

type Finding = (Kind, String);

/// The room as one member sees it, and the rules it can check alone.
#[derive(Debug, Default)]
struct RoomView {
    /// Users in the room, counted (a name can briefly belong to a user who
    /// left and one who came in, in either order).
    roster: HashMap<String, u32>,
    last_id: u64,
    /// Ids received since the welcome or the last `gap`, as runs.
    runs: Vec<(u64, u64)>,
    /// Runs of earlier stretches, closed by a `gap`.
    closed: Vec<Vec<(u64, u64)>>,
    /// Last sequence number seen from each other sender.
    senders: HashMap<u64, u64>,
}

impl RoomView {
    fn new(users: &[String]) -> Self {
        let mut view = Self::default();
        for user in users {
            view.joined(user);
        }
        view
    }

    fn joined(&mut self, name: &str) {
        *self.roster.entry(name.to_string()).or_default() += 1;
    }

    fn left(&mut self, name: &str) -> Option<Finding> {
        match self.roster.get_mut(name) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.roster.remove(name);
            }
            None => {
                return Some((
                    Kind::Presence,
                    format!("`left` for {name}, not in the room"),
                ));
            }
        }
        None
    }

    /// A `message`; `sender` is the other client's connection and sequence
    /// number (none for one's own messages, checked by [`Echoes`]).
    fn message(&mut self, id: u64, from: &str, sender: Option<(u64, u64)>) -> Vec<Finding> {
        let mut findings = Vec::new();
        if !self.roster.contains_key(from) {
            findings.push((
                Kind::Presence,
                format!("message {id} from {from}, not in the room"),
            ));
        }
        if id <= self.last_id {
            let seen = self
                .runs
                .iter()
                .chain(self.closed.iter().flatten())
                .any(|&(a, b)| a <= id && id <= b);
            findings.push(if seen {
                (Kind::Duplicate, format!("message {id} again"))
            } else {
                (
                    Kind::Order,
                    format!("message {id} after message {}", self.last_id),
                )
            });
            return findings;
        }
        self.last_id = id;
        match self.runs.last_mut() {
            Some(run) if run.1 + 1 == id => run.1 = id,
            _ => self.runs.push((id, id)),
        }
        if let Some((uid, seq)) = sender {
            match self.senders.insert(uid, seq) {
                Some(last) if last == seq => findings.push((
                    Kind::Duplicate,
                    format!("message {seq} of connection {uid} again (id {id})"),
                )),
                Some(last) if last > seq => findings.push((
                    Kind::Order,
                    format!("message {seq} of connection {uid} after its message {last} (id {id})"),
                )),
                _ => {}
            }
        }
        findings
    }

    /// Frames were skipped (`skip` policy): ids jump legitimately here.
    fn gap(&mut self) {
        let runs = std::mem::take(&mut self.runs);
        if !runs.is_empty() {
            self.closed.push(runs);
        }
    }

    /// The stretches of ids received without a break in membership.
    fn stretches(mut self) -> Vec<Vec<(u64, u64)>> {
        self.gap();
        self.closed
    }
}

/// A client's own messages: each `say` is echoed back to it, in order, or
/// refused with an error. Replies and room frames leave the server through
/// one queue per connection, so by the time the echo of message s arrives,
/// every earlier `say` that was not echoed has had its refusal delivered.
#[derive(Debug, Default)]
struct Echoes {
    last: u64,
    /// Refusals (`rate_limited`, `not_admitted`) not yet matched to a `say`.
    refusals: u64,
}

impl Echoes {
    fn refused(&mut self) {
        self.refusals += 1;
    }

    fn echoed(&mut self, seq: u64) -> Option<Finding> {
        if seq <= self.last {
            return Some(if seq == self.last {
                (Kind::Duplicate, format!("own message {seq} echoed twice"))
            } else {
                (
                    Kind::Order,
                    format!("own message {seq} echoed after {}", self.last),
                )
            });
        }
        let skipped = seq - self.last - 1;
        let explained = skipped.min(self.refusals);
        self.refusals -= explained;
        self.last = seq;
        (skipped > explained).then(|| {
            (
                Kind::Lost,
                format!(
                    "{} own message(s) before {seq} neither echoed nor refused",
                    skipped - explained
                ),
            )
        })
    }
}

/// A queued client's positions.
#[derive(Debug, Default)]
struct QueueTrack {
    last: Option<u64>,
    welcomed: bool,
}

impl QueueTrack {
    fn queued(&mut self, position: u64, text: &str) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.welcomed {
            findings.push((Kind::Protocol, "`queued` after `welcome`".to_string()));
        }
        if position == 0 {
            findings.push((Kind::Protocol, "queue position 0".to_string()));
        }
        if let Some(last) = self.last.filter(|&last| position > last) {
            findings.push((
                Kind::PositionIncreased,
                format!("position {last} then {position}"),
            ));
        }
        let expected = format!(
            "We are dealing with a large amount of users and you are at {position} in queue"
        );
        if text != expected {
            findings.push((Kind::Protocol, format!("queued text {text:?}")));
        }
        self.last = Some(position);
        findings
    }
}

/// One member's stretch of received ids, for the end-of-run check.
#[derive(Debug)]
struct Stretch {
    member: String,
    runs: Vec<(u64, u64)>,
}

/// Ids missing inside a stretch that some member received: lost for that
/// member, which was in the room before and after them.
fn lost_messages(stretches: &[Stretch]) -> Vec<(usize, u64)> {
    let top = stretches
        .iter()
        .flat_map(|s| s.runs.iter().map(|r| r.1))
        .max()
        .unwrap_or(0);
    let mut received = vec![0u64; top as usize / 64 + 1];
    for run in stretches.iter().flat_map(|s| &s.runs) {
        for id in run.0..=run.1 {
            received[id as usize / 64] |= 1 << (id % 64);
        }
    }
    let mut lost = Vec::new();
    for (index, stretch) in stretches.iter().enumerate() {
        for pair in stretch.runs.windows(2) {
            for id in pair[0].1 + 1..pair[1].0 {
                if received[id as usize / 64] & (1 << (id % 64)) != 0 {
                    lost.push((index, id));
                }
            }
        }
    }
    lost
}

/// When a client sent the `hello` that got it in, and when it learned it
/// was queued, on one clock shared by all clients.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    hello: u64,
    queued: Option<u64>,
}

/// Clients admitted ahead of one that was already queued when they sent
/// their `hello`, given the order in which the observer saw them join.
fn fifo_violations(joined: &[String], stamps: &HashMap<String, Stamp>) -> Vec<String> {
    let mut latest: Option<(u64, &str)> = None;
    let mut found = Vec::new();
    for name in joined {
        let Some(stamp) = stamps.get(name) else {
            continue;
        };
        if let (Some(queued), Some((hello, other))) = (stamp.queued, latest)
            && hello > queued
        {
            found.push(format!(
                "{other} entered before {name}, though {name} was queued before {other} said hello"
            ));
        }
        if latest.is_none_or(|(hello, _)| stamp.hello > hello) {
            latest = Some((stamp.hello, name));
        }
    }
    found
}

/// How the server's memory moved after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Growth {
    warm_mb: f64,
    last_mb: f64,
    max_mb: f64,
    growth_mb: f64,
    slope_mb_per_min: f64,
    fit_growth_mb: f64,
    limit_mb: f64,
    flat: bool,
}

/// Judges `(seconds, MB)` samples: memory is flat when neither the last
/// sample nor the straight line fitted through the samples after
/// `warm_until` rises by more than the limit over that span.
fn growth(samples: &[(f64, f64)], warm_until: f64) -> Growth {
    let after: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm_until)
        .collect();
    let after = if after.len() >= 2 {
        after
    } else {
        samples.to_vec()
    };
    let max_mb = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        return Growth {
            warm_mb: 0.0,
            last_mb: 0.0,
            max_mb,
            growth_mb: 0.0,
            slope_mb_per_min: 0.0,
            fit_growth_mb: 0.0,
            limit_mb: FLAT_MB,
            flat: true,
        };
    };
    let n = after.len() as f64;
    let mean_t = after.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_m = after.iter().map(|s| s.1).sum::<f64>() / n;
    let var = after.iter().map(|s| (s.0 - mean_t).powi(2)).sum::<f64>();
    let cov = after
        .iter()
        .map(|s| (s.0 - mean_t) * (s.1 - mean_m))
        .sum::<f64>();
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    let growth_mb = last.1 - first.1;
    let fit_growth_mb = slope * (last.0 - first.0);
    let limit_mb = FLAT_MB.max(first.1 * FLAT_SHARE);
    Growth {
        warm_mb: first.1,
        last_mb: last.1,
        max_mb,
        growth_mb,
        slope_mb_per_min: slope * 60.0,
        fit_growth_mb,
        limit_mb,
        flat: growth_mb <= limit_mb && fit_growth_mb <= limit_mb,
    }
}

/// A client's `say` text: who said it (connection and name), its number,
/// and when (microseconds since the run's epoch), padded at random.
fn say_text(uid: u64, seq: u64, sent_us: u64, name: &str, pad: usize) -> String {
    format!("{uid} {seq} {sent_us} {name} {}", "x".repeat(pad))
}

struct Said<'a> {
    uid: u64,
    seq: u64,
    sent_us: u64,
    name: &'a str,
}

fn parse_text(text: &str) -> Option<Said<'_>> {
    let mut parts = text.split(' ');
    Some(Said {
        uid: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        sent_us: parts.next()?.parse().ok()?,
        name: parts.next()?,
    })
}

/// What a session does before `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pre {
    Nothing,
    /// Says nothing: `handshake_timeout`.
    Silent,
    /// Half a length prefix, then closes.
    HalfFrame,
    /// A length over `max_frame_bytes`: `frame_too_large`.
    Oversized,
    /// A `say` first: `handshake_required`, then joins.
    SayFirst,
}

/// What a member does once, at a random moment of its stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Nothing,
    /// 60 messages at once: some are `rate_limited`.
    Flood,
    /// A payload that is not MessagePack: `bad_frame`.
    BadPayload,
    UnknownType,
    /// A `say` without text: `bad_request`.
    BadRequest,
    /// `hello` again: `bad_request`.
    SecondHello,
    TooLong,
    /// Stops reading for a while, on a small receive buffer, but pings
    /// every second to stay active: may be cut off as a slow consumer.
    StopReading(Duration),
    /// Asks `who` 10,000 times without reading the answers: cut off as a
    /// slow consumer once the lists pile up beyond the socket's buffers
    /// (megabytes on loopback).
    WhoFlood,
    /// Reads but neither talks nor answers pings: `idle_timeout`.
    Silent,
    /// Half a frame, then silence: `idle_timeout`.
    HalfFrame,
    Oversized,
    /// A zero-length frame: `bad_frame`, then closed.
    ZeroLength,
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Nothing => "nothing",
            Act::Flood => "flood",
            Act::BadPayload => "bad_payload",
            Act::UnknownType => "unknown_type",
            Act::BadRequest => "bad_request",
            Act::SecondHello => "second_hello",
            Act::TooLong => "too_long",
            Act::StopReading(_) => "stop_reading",
            Act::WhoFlood => "who_flood",
            Act::Silent => "silent",
            Act::HalfFrame => "half_frame",
            Act::Oversized => "oversized",
            Act::ZeroLength => "zero_length",
        }
    }
}

/// How a session ends when nothing ended it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Bye,
    Close,
    /// Closes with a reset (SO_LINGER 0).
    Reset,
}

/// Everything a session will do, drawn before it connects.
#[derive(Debug, Clone)]
struct Plan {
    pre: Pre,
    bad_name: bool,
    duplicate: bool,
    /// How long to wait in the queue before giving up (none: until let in).
    patience: Option<Duration>,
    say_while_queued: bool,
    talker: bool,
    stay: Duration,
    act: Act,
    act_at: Duration,
    end: End,
    pause: Duration,
}

fn exponential(rng: &mut fastrand::Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.f64()).ln()
}

fn uniform(rng: &mut fastrand::Rng, from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(from + rng.f64() * (to - from))
}

impl Plan {
    fn draw(rng: &mut fastrand::Rng, args: &Args) -> Self {
        let mean_stay = args.stay.as_secs_f64().max(0.1);
        let stay = Duration::from_secs_f64(exponential(rng, mean_stay).clamp(0.5, 6.0 * mean_stay));
        let misbehave = rng.f64() < args.misbehave;
        let pre = if misbehave && rng.f64() < 0.25 {
            [Pre::Silent, Pre::HalfFrame, Pre::Oversized, Pre::SayFirst][rng.usize(..4)]
        } else {
            Pre::Nothing
        };
        let act = if misbehave && matches!(pre, Pre::Nothing | Pre::SayFirst) {
            match rng.usize(..12) {
                0 => Act::Flood,
                1 => Act::BadPayload,
                2 => Act::UnknownType,
                3 => Act::BadRequest,
                4 => Act::SecondHello,
                5 => Act::TooLong,
                6 | 7 => Act::StopReading(uniform(rng, 1.0, 20.0)),
                8 => Act::Silent,
                9 => Act::HalfFrame,
                10 => Act::WhoFlood,
                _ => {
                    if rng.bool() {
                        Act::Oversized
                    } else {
                        Act::ZeroLength
                    }
                }
            }
        } else {
            Act::Nothing
        };
        Plan {
            pre,
            bad_name: rng.f64() < 0.04,
            duplicate: rng.f64() < 0.04,
            patience: rng.bool().then(|| uniform(rng, 1.0, 30.0)),
            say_while_queued: rng.f64() < 0.1,
            talker: rng.f64() < 0.7,
            stay,
            act,
            act_at: stay.mul_f64(rng.f64()),
            end: match rng.usize(..10) {
                0..=5 => End::Bye,
                6 | 7 => End::Close,
                _ => End::Reset,
            },
            pause: if rng.f64() < 0.7 {
                uniform(rng, 0.0, 1.0)
            } else {
                uniform(rng, 1.0, 5.0)
            },
        }
    }
}

/// Timeouts of the server under test, when the soak set them.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    handshake: Duration,
    idle: Duration,
}

#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    connect_failed: AtomicU64,
    joins: AtomicU64,
    direct: AtomicU64,
    promotions: AtomicU64,
    queued: AtomicU64,
    server_full: AtomicU64,
    said: AtomicU64,
    delivered: AtomicU64,
    rate_limited: AtomicU64,
    who: AtomicU64,
    gaps: AtomicU64,
    /// Cut off as slow consumers while reading normally (they fell behind).
    cut_off_reading: AtomicU64,
    /// The longest a timeout fired after its value, as seen by the client.
    timeout_late_us: AtomicU64,
}

#[derive(Default)]
struct Findings {
    counts: BTreeMap<Kind, u64>,
    examples: Vec<String>,
}

#[derive(Default)]
struct Tallies {
    acts: BTreeMap<&'static str, u64>,
    goodbyes: BTreeMap<String, u64>,
}

/// State shared by every client.
struct Shared {
    args: Args,
    server: SocketAddr,
    timeouts: Option<Timeouts>,
    epoch: Instant,
    cancel: CancellationToken,
    next_uid: AtomicU64,
    clock: AtomicU64,
    counters: Counters,
    members_now: AtomicI64,
    queued_now: AtomicI64,
    findings: Mutex<Findings>,
    latency_us: Mutex<Histogram<u64>>,
    stretches: Mutex<Vec<Stretch>>,
    stamps: Mutex<HashMap<String, Stamp>>,
    /// The name each client holds now, for attempts at taking it.
    held: Mutex<HashMap<usize, String>>,
    tallies: Mutex<Tallies>,
}

impl Shared {
    fn report(&self, kind: Kind, what: String) {
        let mut findings = lock(&self.findings);
        *findings.counts.entry(kind).or_default() += 1;
        if findings.examples.len() < 10 {
            findings.examples.push(format!("{}: {what}", kind.name()));
        }
    }

    fn violations(&self) -> u64 {
        lock(&self.findings).counts.values().sum()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// What reading the next frame gave.
enum Got {
    Other,
    Welcome,
    Queued,
    Refused(String),
    Bye(String),
    Closed,
}

/// How a connection ended, when the session waited for it.
enum Over {
    Bye(String),
    Closed,
    TimedOut,
}

/// Where the session stands, for the live gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Outside,
    Queued,
    Member,
}

/// One connection of one client.
struct Session {
    shared: Arc<Shared>,
    index: usize,
    uid: u64,
    name: String,
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: OwnedWriteHalf,
    /// Taken before connecting, so that it precedes the server's accept.
    connecting_at: Instant,
    /// When the last complete frame was sent (taken before the write).
    last_frame_sent: Instant,
    stage: Stage,
    /// False once the client did something that may get it cut off.
    behaved: bool,
    /// Neither talks nor answers pings.
    silent: bool,
    /// Goodbyes the client provoked.
    expect_bye: Vec<&'static str>,
    /// Errors the client provoked and not yet received, by code.
    allowed: Vec<(&'static str, u32)>,
    view: Option<RoomView>,
    queue: QueueTrack,
    echoes: Echoes,
    seq: u64,
    was_queued: bool,
    /// Whether this session's name is its own (not taken from another).
    own_name: bool,
    /// The observer records every join it sees.
    joins: Option<Vec<String>>,
    latency: Vec<u64>,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        index: usize,
        name: String,
        stream: TcpStream,
        connecting_at: Instant,
    ) -> Self {
        let (frames, writer) = Connection::from_stream(stream).split_frames();
        let now = Instant::now();
        shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
        Self {
            uid: shared.next_uid.fetch_add(1, Ordering::Relaxed),
            shared,
            index,
            name,
            frames,
            writer,
            connecting_at,
            last_frame_sent: now,
            stage: Stage::Outside,
            behaved: true,
            silent: false,
            expect_bye: Vec::new(),
            allowed: Vec::new(),
            view: None,
            queue: QueueTrack::default(),
            echoes: Echoes::default(),
            seq: 0,
            was_queued: false,
            own_name: true,
            joins: None,
            latency: Vec::new(),
        }
    }

    fn report(&self, kind: Kind, what: impl std::fmt::Display) {
        let who = if self.joins.is_some() {
            "the observer".to_string()
        } else {
            format!("client {} ({})", self.index, self.name)
        };
        self.shared.report(kind, format!("{who}: {what}"));
    }

    fn allow(&mut self, code: &'static str) {
        match self.allowed.iter_mut().find(|(c, _)| *c == code) {
            Some(entry) => entry.1 += 1,
            None => self.allowed.push((code, 1)),
        }
    }

    fn set_stage(&mut self, stage: Stage) {
        let gauge = |s: Stage| match s {
            Stage::Queued => Some(&self.shared.queued_now),
            Stage::Member => Some(&self.shared.members_now),
            Stage::Outside => None,
        };
        if let Some(g) = gauge(self.stage) {
            g.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(g) = gauge(stage) {
            g.fetch_add(1, Ordering::Relaxed);
        }
        self.stage = stage;
    }

    /// Sends a complete frame; false if the connection is gone.
    async fn send(&mut self, request: &Request<'_>) -> bool {
        match encode_frame(request) {
            Ok(frame) => self.send_frame(&frame).await,
            Err(_) => false,
        }
    }

    async fn send_frame(&mut self, frame: &[u8]) -> bool {
        self.last_frame_sent = Instant::now();
        self.writer.write_all(frame).await.is_ok()
    }

    /// Sends bytes that are not a complete frame.
    async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok()
    }

    async fn say(&mut self, pad: usize) -> bool {
        self.seq += 1;
        let text = say_text(self.uid, self.seq, self.shared.now_us(), &self.name, pad);
        self.shared.counters.said.fetch_add(1, Ordering::Relaxed);
        self.send(&Request::Say { text: &text }).await
    }

    /// Reads and checks the next frame.
    async fn recv(&mut self) -> Got {
        let payload = match self.frames.next().await {
            None => return Got::Closed,
            Some(Err(error)) => {
                if error.kind() == std::io::ErrorKind::InvalidData {
                    self.report(Kind::Decode, format!("unreadable frame: {error}"));
                }
                return Got::Closed;
            }
            Some(Ok(payload)) => payload,
        };
        match rmp_serde::from_slice::<Event>(&payload) {
            Ok(event) => self.on_event(event).await,
            Err(error) => {
                self.report(Kind::Decode, format!("frame is not an event: {error}"));
                Got::Closed
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Got {
        let counters = &self.shared.counters;
        match event {
            Event::Welcome {
                name, users, text, ..
            } => {
                if self.view.is_some() {
                    self.report(Kind::Protocol, "a second `welcome`");
                }
                let expected = if self.was_queued {
                    WELCOME_FROM_QUEUE
                } else {
                    WELCOME_DIRECT
                };
                if text != expected {
                    self.report(Kind::Protocol, format!("welcome text {text:?}"));
                }
                if name != self.name || users.last() != Some(&self.name) {
                    self.report(
                        Kind::Protocol,
                        format!("welcome as {name:?} with users ending {:?}", users.last()),
                    );
                }
                counters.joins.fetch_add(1, Ordering::Relaxed);
                if self.was_queued {
                    counters.promotions.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.direct.fetch_add(1, Ordering::Relaxed);
                }
                self.queue.welcomed = true;
                self.view = Some(RoomView::new(&users));
                self.set_stage(Stage::Member);
                Got::Welcome
            }
            Event::Queued { position, text, .. } => {
                for (kind, what) in self.queue.queued(position, &text) {
                    self.report(kind, what);
                }
                if self.was_queued {
                    return Got::Other;
                }
                self.was_queued = true;
                counters.queued.fetch_add(1, Ordering::Relaxed);
                let stamp = self.shared.tick();
                if self.own_name
                    && let Some(entry) = lock(&self.shared.stamps).get_mut(&self.name)
                {
                    entry.queued = Some(stamp);
                }
                self.set_stage(Stage::Queued);
                Got::Queued
            }
            Event::Message { id, from, text, .. } => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                let Some(view) = self.view.as_mut() else {
                    self.report(Kind::Protocol, format!("message {id} before `welcome`"));
                    return Got::Other;
                };
                let mut findings = Vec::new();
                let sender = match parse_text(&text) {
                    Some(said) => {
                        // A client that stopped reading measures itself.
                        if self.behaved {
                            let now = self.shared.now_us();
                            self.latency.push(now.saturating_sub(said.sent_us).max(1));
                        }
                        if said.name != from {
                            findings.push((
                                Kind::Protocol,
                                format!("message {id} from {from} said by {}", said.name),
                            ));
                        }
                        if said.uid == self.uid {
                            findings.extend(self.echoes.echoed(said.seq));
                            None
                        } else {
                            Some((said.uid, said.seq))
                        }
                    }
                    None => None,
                };
                findings.extend(view.message(id, &from, sender));
                for (kind, what) in findings {
                    self.report(kind, what);
                }
                if self.latency.len() >= 256 {
                    self.flush_latency();
                }
                Got::Other
            }
            Event::Joined { name, .. } => {
                match self.view.as_mut() {
                    Some(view) => view.joined(&name),
                    None => {
                        self.report(Kind::Protocol, format!("`joined` {name} before `welcome`"))
                    }
                }
                if let Some(joins) = self.joins.as_mut() {
                    joins.push(name);
                }
                Got::Other
            }
            Event::Left { name, reason, .. } => {
                if !LEFT_REASONS.contains(&reason.as_str()) {
                    self.report(Kind::Protocol, format!("left reason {reason:?}"));
                }
                match self.view.as_mut() {
                    Some(view) => {
                        if let Some((kind, what)) = view.left(&name) {
                            self.report(kind, what);
                        }
                    }
                    None => self.report(Kind::Protocol, format!("`left` {name} before `welcome`")),
                }
                Got::Other
            }
            Event::Gap { .. } => {
                counters.gaps.fetch_add(1, Ordering::Relaxed);
                if let Some(view) = self.view.as_mut() {
                    view.gap();
                }
                Got::Other
            }
            Event::Error { code, text } => {
                if code == "rate_limited" {
                    counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.echoes.refused();
                    return Got::Refused(code);
                }
                match self.allowed.iter_mut().find(|(c, n)| *c == code && *n > 0) {
                    Some(entry) => entry.1 -= 1,
                    None => self.report(Kind::UnexpectedError, format!("{code}: {text}")),
                }
                if code == "not_admitted" {
                    self.echoes.refused();
                }
                Got::Refused(code)
            }
            Event::Ping { id } => {
                if !self.silent {
                    self.send(&Request::Pong { id }).await;
                }
                Got::Other
            }
            Event::Users { .. } | Event::Pong { .. } => Got::Other,
            Event::Bye { reason, .. } => Got::Bye(reason),
            Event::Unknown => {
                self.report(Kind::Protocol, "a frame of unknown type");
                Got::Other
            }
        }
    }

    /// Reads until the server says goodbye or closes, for at most `limit`.
    async fn wait_over(&mut self, limit: Duration) -> Over {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => return Over::TimedOut,
                Ok(Got::Bye(reason)) => return Over::Bye(reason),
                Ok(Got::Closed) => return Over::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Judges how the server ended the connection.
    fn judge(&mut self, over: &Over, waiting_for: &str) {
        match over {
            Over::Bye(reason) => {
                *lock(&self.shared.tallies)
                    .goodbyes
                    .entry(reason.clone())
                    .or_default() += 1;
                // Only a client that kept reading and sent nothing since
                // knows that the goodbye was sent after its last frame.
                let t = self.shared.timeouts.filter(|_| self.silent);
                let timing = match reason.as_str() {
                    "idle_timeout" => t.map(|t| (self.last_frame_sent.elapsed(), t.idle)),
                    "handshake_timeout" => t.map(|t| (self.connecting_at.elapsed(), t.handshake)),
                    _ => None,
                };
                if let Some((waited, timeout)) = timing {
                    if waited < timeout {
                        self.report(
                            Kind::Timing,
                            format!("{reason} after {waited:?} (configured {timeout:?})"),
                        );
                    } else {
                        let late = (waited - timeout).as_micros() as u64;
                        self.shared
                            .counters
                            .timeout_late_us
                            .fetch_max(late, Ordering::Relaxed);
                    }
                }
                if self.expect_bye.contains(&reason.as_str()) {
                    return;
                }
                match reason.as_str() {
                    "slow_consumer" => {
                        self.shared
                            .counters
                            .cut_off_reading
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    "server_full" => {
                        self.shared
                            .counters
                            .server_full
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => self.report(Kind::UnexpectedBye, format!("bye {reason} {waiting_for}")),
                }
            }
            Over::Closed => {
                *lock(&self.shared.tallies)
                    .goodbyes
                    .entry("closed without bye".into())
                    .or_default() += 1;
                if self.behaved {
                    self.report(
                        Kind::UnexpectedClose,
                        format!("closed without a goodbye {waiting_for}"),
                    );
                }
            }
            Over::TimedOut => self.report(Kind::Protocol, format!("no goodbye {waiting_for}")),
        }
    }

    /// The longest the server may take to end a connection on its own.
    fn patience_for(&self, timeout: fn(Timeouts) -> Duration, default: Duration) -> Duration {
        self.shared.timeouts.map_or(default, timeout) + Duration::from_secs(10)
    }

    /// One connection from start to end, as planned; returns once the
    /// connection is over (or, for the observer, never on its own).
    async fn run(&mut self, plan: &Plan, rng: &mut fastrand::Rng) {
        if plan.pre != Pre::Nothing {
            let name = match plan.pre {
                Pre::Silent => "pre_silent",
                Pre::HalfFrame => "pre_half_frame",
                Pre::Oversized => "pre_oversized",
                _ => "pre_say_first",
            };
            *lock(&self.shared.tallies).acts.entry(name).or_default() += 1;
        }
        match plan.pre {
            Pre::Nothing => {}
            Pre::Silent => {
                self.behaved = false;
                self.silent = true;
                self.expect_bye.push("handshake_timeout");
                let limit = self.patience_for(|t| t.handshake, Duration::from_secs(10));
                let over = self.wait_over(limit).await;
                self.judge(&over, "after saying nothing");
                return;
            }
            Pre::HalfFrame => {
                self.send_raw(&[0, 0]).await;
                return;
            }
            Pre::Oversized => {
                self.behaved = false;
                self.expect_bye.push("protocol_error");
                self.allow("frame_too_large");
                self.send_raw(&0x7fff_ffffu32.to_be_bytes()).await;
                let over = self.wait_over(Duration::from_secs(10)).await;
                self.judge(&over, "after an oversized length");
                return;
            }
            Pre::SayFirst => {
                self.allow("handshake_required");
                self.send(&Request::Say { text: "early" }).await;
            }
        }
        if plan.bad_name {
            const BAD: [&str; 5] = [
                "",
                "   ",
                "a\u{7}b",
                "x\u{85}y",
                "abcdefghijklmnopqrstuvwxyz0123456",
            ];
            let bad = BAD[rng.usize(..BAD.len())];
            self.allow("name_invalid");
            self.send(&Request::Hello { name: bad }).await;
            match self.admission().await {
                Some(Got::Refused(_)) => {}
                Some(_) => self.report(Kind::Protocol, format!("name {bad:?} accepted")),
                None => return,
            }
        }
        if self.stage == Stage::Outside && plan.duplicate {
            let other = {
                let held = lock(&self.shared.held);
                held.get(&rng.usize(..self.shared.args.clients.max(1)))
                    .cloned()
            };
            if let Some(other) = other.filter(|o| *o != self.name) {
                // Names are compared after lower-casing: this is the same name.
                // If its holder has just left, the name is free and becomes
                // this session's, outside the first-in first-out check.
                let own = std::mem::replace(&mut self.name, other.to_uppercase());
                self.own_name = false;
                self.allow("name_taken");
                let taken = self.name.clone();
                self.send(&Request::Hello { name: &taken }).await;
                match self.admission().await {
                    Some(Got::Refused(_)) => {
                        self.name = own;
                        self.own_name = true;
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        }
        if self.stage == Stage::Outside {
            let hello = self.shared.tick();
            lock(&self.shared.stamps).insert(
                self.name.clone(),
                Stamp {
                    hello,
                    queued: None,
                },
            );
            let name = self.name.clone();
            self.send(&Request::Hello { name: &name }).await;
            match self.admission().await {
                Some(Got::Welcome | Got::Queued) => {}
                Some(Got::Refused(code)) => {
                    self.report(Kind::UnexpectedError, format!("hello refused: {code}"));
                    return;
                }
                _ => return,
            }
        }
        if self.own_name {
            lock(&self.shared.held).insert(self.index, self.name.clone());
        }
        if self.stage == Stage::Queued && !self.wait_in_queue(plan, rng).await {
            return;
        }
        self.in_room(plan, rng).await;
    }

    /// Waits for the answer to a `hello`; `None` once the connection ended.
    async fn admission(&mut self) -> Option<Got> {
        let limit = Duration::from_secs(30);
        loop {
            let got = match tokio::time::timeout(limit, self.recv()).await {
                Ok(got) => got,
                Err(_) => {
                    self.report(Kind::Protocol, "no answer to hello within 30 s");
                    return None;
                }
            };
            match got {
                Got::Welcome | Got::Queued => return Some(got),
                Got::Refused(code) if matches!(code.as_str(), "name_invalid" | "name_taken") => {
                    return Some(Got::Refused(code));
                }
                Got::Bye(reason) => {
                    self.judge(&Over::Bye(reason), "after hello");
                    return None;
                }
                Got::Closed => {
                    self.judge(&Over::Closed, "after hello");
                    return None;
                }
                _ => {}
            }
        }
    }

    /// Waits in the queue; false once the session is over.
    async fn wait_in_queue(&mut self, plan: &Plan, rng: &mut fastrand::Rng) -> bool {
        let start = tokio::time::Instant::now();
        let give_up = plan.patience.map(|p| start + p);
        let mut say_at = plan.say_while_queued.then(|| {
            start
                + plan
                    .patience
                    .unwrap_or(Duration::from_secs(10))
                    .mul_f64(rng.f64())
        });
        loop {
            tokio::select! {
                got = self.recv() => match got {
                    Got::Welcome => return true,
                    Got::Bye(reason) => {
                        self.judge(&Over::Bye(reason), "in the queue");
                        return false;
                    }
                    Got::Closed => {
                        self.judge(&Over::Closed, "in the queue");
                        return false;
                    }
                    _ => {}
                },
                _ = sleep_until(say_at) => {
                    say_at = None;
                    *lock(&self.shared.tallies).acts.entry("say_while_queued").or_default() += 1;
                    // Refused, or delivered if the client was let in meanwhile.
                    self.allow("not_admitted");
                    self.say(0).await;
                }
                _ = sleep_until(give_up) => {
                    *lock(&self.shared.tallies).acts.entry("left_queue").or_default() += 1;
                    self.leave(plan.end).await;
                    return false;
                }
            }
        }
    }

    async fn in_room(&mut self, plan: &Plan, rng: &mut fastrand::Rng) {
        let start = tokio::time::Instant::now();
        let rate = self.shared.args.say_rate.max(0.001);
        let mut next_say = (plan.talker && self.joins.is_none())
            .then(|| start + Duration::from_secs_f64(exponential(rng, 1.0 / rate)));
        let mut act_at = (plan.act != Act::Nothing).then(|| start + plan.act_at);
        let leave_at = if self.joins.is_some() {
            None
        } else {
            Some(start + plan.stay)
        };
        loop {
            tokio::select! {
                got = self.recv() => match got {
                    Got::Bye(reason) => {
                        self.judge(&Over::Bye(reason), "in the room");
                        return;
                    }
                    Got::Closed => {
                        self.judge(&Over::Closed, "in the room");
                        return;
                    }
                    _ => {}
                },
                _ = sleep_until(next_say) => {
                    self.say(rng.usize(..120)).await;
                    if rng.f64() < 0.05 {
                        self.shared.counters.who.fetch_add(1, Ordering::Relaxed);
                        self.send(&Request::Who).await;
                    }
                    next_say = Some(tokio::time::Instant::now()
                        + Duration::from_secs_f64(exponential(rng, 1.0 / rate)));
                }
                _ = sleep_until(act_at) => {
                    act_at = None;
                    *lock(&self.shared.tallies).acts.entry(plan.act.name()).or_default() += 1;
                    if self.act(plan.act).await {
                        let limit = if self.silent {
                            self.patience_for(|t| t.idle, Duration::from_secs(45))
                        } else {
                            Duration::from_secs(10)
                        };
                        let over = self.wait_over(limit).await;
                        self.judge(&over, &format!("after {}", plan.act.name()));
                        return;
                    }
                }
                _ = sleep_until(leave_at) => {
                    self.leave(plan.end).await;
                    return;
                }
            }
        }
    }

    /// Misbehaves once; true when the server must now end the connection.
    async fn act(&mut self, act: Act) -> bool {
        match act {
            Act::Nothing => false,
            Act::Flood => {
                for _ in 0..60 {
                    if !self.say(0).await {
                        break;
                    }
                }
                false
            }
            Act::BadPayload => {
                self.allow("bad_frame");
                self.send_frame(&[0, 0, 0, 2, 0xc1, 0xc1]).await;
                false
            }
            Act::UnknownType => {
                self.allow("unknown_type");
                let mut map = BTreeMap::new();
                map.insert("type", "dance");
                if let Ok(frame) = encode_frame(&map) {
                    self.send_frame(&frame).await;
                }
                false
            }
            Act::BadRequest => {
                self.allow("bad_request");
                let mut map = BTreeMap::new();
                map.insert("type", "say");
                if let Ok(frame) = encode_frame(&map) {
                    self.send_frame(&frame).await;
                }
                false
            }
            Act::SecondHello => {
                self.allow("bad_request");
                let name = self.name.clone();
                self.send(&Request::Hello { name: &name }).await;
                false
            }
            Act::TooLong => {
                self.allow("message_too_long");
                let text = "x".repeat(MAX_MESSAGE_BYTES + 1);
                self.send(&Request::Say { text: &text }).await;
                false
            }
            Act::StopReading(pause) => {
                self.behaved = false;
                self.expect_bye.push("slow_consumer");
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    if !self.send(&Request::Ping { id: None }).await {
                        break;
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(Duration::from_secs(1))).await;
                }
                false
            }
            Act::WhoFlood => {
                self.behaved = false;
                self.expect_bye.push("slow_consumer");
                let who = encode_frame(&Request::Who).unwrap_or_default();
                let burst = who.repeat(1000);
                for _ in 0..10 {
                    if !self.send_frame(&burst).await {
                        break;
                    }
                }
                false
            }
            Act::Silent => {
                self.behaved = false;
                self.silent = true;
                self.expect_bye.push("idle_timeout");
                true
            }
            Act::HalfFrame => {
                self.behaved = false;
                self.silent = true;
                self.expect_bye.push("idle_timeout");
                self.send_raw(&[0, 0, 0, 40, 0x82]).await;
                true
            }
            Act::Oversized => {
                self.behaved = false;
                self.expect_bye.push("protocol_error");
                self.allow("frame_too_large");
                self.send_raw(&0x7fff_ffffu32.to_be_bytes()).await;
                true
            }
            Act::ZeroLength => {
                self.behaved = false;
                self.expect_bye.push("protocol_error");
                self.allow("bad_frame");
                self.send_raw(&[0, 0, 0, 0]).await;
                true
            }
        }
    }

    /// Leaves on the client's own initiative.
    async fn leave(&mut self, end: End) {
        match end {
            End::Bye => {
                self.send(&Request::Bye).await;
                self.expect_bye.push("bye");
                let over = self.wait_over(Duration::from_secs(10)).await;
                self.judge(&over, "after bye");
            }
            // The socket is closed when the session is dropped; a reset if
            // it was set up with SO_LINGER 0.
            End::Close | End::Reset => {}
        }
    }

    fn flush_latency(&mut self) {
        let mut hist = lock(&self.shared.latency_us);
        for us in self.latency.drain(..) {
            hist.saturating_record(us);
        }
    }

    /// Hands what the session saw to the end-of-run checks.
    fn finish(mut self) {
        self.flush_latency();
        self.set_stage(Stage::Outside);
        if let Some(view) = self.view.take() {
            let mut stretches = lock(&self.shared.stretches);
            for runs in view.stretches() {
                stretches.push(Stretch {
                    member: self.name.clone(),
                    runs,
                });
            }
        }
        let mut held = lock(&self.shared.held);
        if held.get(&self.index) == Some(&self.name) {
            held.remove(&self.index);
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Connects like [`connect_spread`], optionally with a small receive buffer,
/// so that less of what a client does not read is absorbed on its side.
async fn connect(server: SocketAddr, index: usize, small: bool) -> std::io::Result<TcpStream> {
    if !small || !server.is_ipv4() {
        return connect_spread(server, index).await;
    }
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    if server.ip().is_loopback() {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % 16) as u8);
        socket.bind(SocketAddr::from((source, 0)))?;
    }
    socket.connect(server).await
}

/// One simulated client: sessions one after the other until the run ends.
async fn client(shared: Arc<Shared>, index: usize) {
    let mut rng = fastrand::Rng::with_seed(
        shared
            .args
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index as u64),
    );
    let start = Duration::from_secs_f64(rng.f64() * 2.0);
    tokio::select! {
        _ = shared.cancel.cancelled() => return,
        _ = tokio::time::sleep(start) => {}
    }
    let mut generation = 0u64;
    while !shared.cancel.is_cancelled() {
        let plan = Plan::draw(&mut rng, &shared.args);
        generation += 1;
        let uid_hint = shared.next_uid.load(Ordering::Relaxed) as usize;
        let connecting_at = Instant::now();
        let small_buffer = matches!(plan.act, Act::StopReading(_) | Act::WhoFlood);
        let stream = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            stream = connect(shared.server, uid_hint, small_buffer) => stream,
        };
        match stream {
            Ok(stream) => {
                if plan.end == End::Reset {
                    let _ = stream.set_zero_linger();
                }
                let name = format!("s{index}-{generation}");
                let mut session = Session::new(shared.clone(), index, name, stream, connecting_at);
                tokio::select! {
                    _ = shared.cancel.cancelled() => {}
                    _ = session.run(&plan, &mut rng) => {}
                }
                session.finish();
            }
            Err(_) => {
                shared
                    .counters
                    .connect_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(plan.pause) => {}
        }
    }
}

/// Open connections by state, from the server's metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Connections {
    handshake: u64,
    active: u64,
    waiting: u64,
}

impl Connections {
    fn total(self) -> u64 {
        self.handshake + self.active + self.waiting
    }
}

async fn scrape(metrics: SocketAddr) -> Option<Connections> {
    let fetch = async {
        let mut stream = TcpStream::connect(metrics).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: anteroom\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()??;
    let mut found = Connections::default();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("anteroom_connections{state=\"") else {
            continue;
        };
        let Some((state, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let value = value.trim().parse::<f64>().ok()? as u64;
        match state {
            "handshake" => found.handshake = value,
            "active" => found.active = value,
            "waiting" => found.waiting = value,
            _ => {}
        }
    }
    Some(found)
}

fn open_fds(pid: Option<u32>) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{}/fd", pid?)).ok()?;
    Some(dir.count() as u64)
}

/// One soak run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub broker: &'static str,
    pub clients: usize,
    pub max_active: usize,
    pub seed: u64,
    pub duration_s: f64,
    pub sessions: u64,
    pub connect_failed: u64,
    pub joins: u64,
    pub joins_direct: u64,
    pub promotions: u64,
    pub queued: u64,
    pub server_full: u64,
    pub messages_said: u64,
    pub messages_delivered: u64,
    pub rate_limited: u64,
    pub who: u64,
    pub gaps: u64,
    pub slow_consumer_cut_offs_while_reading: u64,
    pub acts: BTreeMap<&'static str, u64>,
    pub goodbyes: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub timeout_late_max_ms: f64,
    pub stretches_checked: u64,
    pub stretch_ids: u64,
    pub fifo_promotions_checked: u64,
    pub violations: u64,
    pub violations_by_kind: BTreeMap<&'static str, u64>,
    pub violation_examples: Vec<String>,
    pub rss_first_mb: f64,
    pub rss_warm_mb: f64,
    pub rss_last_mb: f64,
    pub rss_max_mb: f64,
    pub rss_after_mb: f64,
    pub rss_growth_mb: f64,
    pub rss_slope_mb_per_min: f64,
    pub rss_fit_growth_mb: f64,
    pub rss_limit_mb: f64,
    pub memory_flat: bool,
    pub fds_baseline: u64,
    pub fds_max: u64,
    pub fds_end: u64,
    pub connections_end: Option<u64>,
    pub back_to_baseline: bool,
    pub server_cpu_s: f64,
    pub server_errors: u64,
    pub ok: bool,
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
    let limit = super::raise_fd_limit() as usize;
    anyhow::ensure!(
        args.clients + 256 <= limit,
        "{} clients need more descriptors than this process may hold ({limit})",
        args.clients
    );
    let server = ServerUnderTest::start(
        args.server,
        &[
            ("ANTEROOM_MAX_ACTIVE", args.max_active.to_string()),
            ("ANTEROOM_MAX_WAITING", (args.clients + 16).to_string()),
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
        ],
    )?;
    let metrics = server.metrics_addr.or(args.metrics);
    let pid = server.pid();
    let timeouts = server.measurable().then_some(Timeouts {
        handshake: HANDSHAKE_TIMEOUT,
        idle: IDLE_TIMEOUT,
    });

    // The baseline: a settled server that has answered one scrape.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(metrics) = metrics {
        scrape(metrics).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_baseline = open_fds(pid).unwrap_or(0);
    let first = server.usage();

    let shared = Arc::new(Shared {
        args: args.clone(),
        server: server.addr,
        timeouts,
        epoch: Instant::now(),
        cancel: CancellationToken::new(),
        next_uid: AtomicU64::new(1),
        clock: AtomicU64::new(1),
        counters: Counters::default(),
        members_now: AtomicI64::new(0),
        queued_now: AtomicI64::new(0),
        findings: Mutex::new(Findings::default()),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        stretches: Mutex::new(Vec::new()),
        stamps: Mutex::new(HashMap::new()),
        held: Mutex::new(HashMap::new()),
        tallies: Mutex::new(Tallies::default()),
    });

    // The observer enters the empty room first and stays to the end.
    let observer_stop = CancellationToken::new();
    let observer = {
        let connecting_at = Instant::now();
        let stream = connect_spread(server.addr, 0).await?;
        let mut session = Session::new(
            shared.clone(),
            usize::MAX,
            "observer".into(),
            stream,
            connecting_at,
        );
        session.joins = Some(Vec::new());
        session.name = "observer".into();
        let stop = observer_stop.clone();
        tokio::spawn(async move {
            let plan = Plan {
                pre: Pre::Nothing,
                bad_name: false,
                duplicate: false,
                patience: None,
                say_while_queued: false,
                talker: false,
                stay: Duration::MAX,
                act: Act::Nothing,
                act_at: Duration::ZERO,
                end: End::Bye,
                pause: Duration::ZERO,
            };
            let mut rng = fastrand::Rng::with_seed(0);
            let cut = tokio::select! {
                _ = stop.cancelled() => false,
                _ = session.run(&plan, &mut rng) => true,
            };
            if !cut {
                session.leave(End::Bye).await;
            }
            let joins = session.joins.take().unwrap_or_default();
            session.finish();
            (joins, cut)
        })
    };

    println!(
        "soak: {} clients, max_active {}, {:?}, seed {}, server {}",
        args.clients, args.max_active, args.duration, args.seed, server.addr
    );
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        clients.spawn(client(shared.clone(), index));
    }

    let mut rss_samples: Vec<(f64, f64)> = Vec::new();
    let mut fds_max = fds_baseline;
    let mut server_gone = false;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + args.sample, args.sample);
    let end = tokio::time::Instant::now() + args.duration;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(end) => break,
        }
        let t = started.elapsed().as_secs_f64();
        let usage = pid.and_then(read_usage);
        if pid.is_some() && usage.is_none() && !server_gone {
            server_gone = true;
            shared.report(
                Kind::ServerExit,
                format!("the server exited after {t:.1} s"),
            );
        }
        let fds = open_fds(pid);
        let conns = match metrics {
            Some(m) => scrape(m).await,
            None => None,
        };
        let rss_mb = usage.map_or(0.0, |u| u.rss_bytes as f64 / 1e6);
        if usage.is_some() {
            rss_samples.push((t, rss_mb));
        }
        fds_max = fds_max.max(fds.unwrap_or(0));
        let c = &shared.counters;
        println!(
            "{t:>7.1} s  rss {:>6} MB  fds {:>5}  conns {}  clients {} in room, {} queued  said {}  delivered {}  violations {}",
            usage.map_or("-".into(), |_| format!("{rss_mb:.1}")),
            fds.map_or("-".into(), |f| f.to_string()),
            conns.map_or("-".into(), |c| format!(
                "{:>4} ({} active, {} waiting, {} handshake)",
                c.total(),
                c.active,
                c.waiting,
                c.handshake
            )),
            shared.members_now.load(Ordering::Relaxed),
            shared.queued_now.load(Ordering::Relaxed),
            c.said.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
            shared.violations()
        );
    }
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

    // The rules that need the whole run.
    let stretches = std::mem::take(&mut *lock(&shared.stretches));
    for (index, id) in lost_messages(&stretches) {
        shared.report(
            Kind::Lost,
            format!("{} missed message {id}", stretches[index].member),
        );
    }
    for what in fifo_violations(&joins, &lock(&shared.stamps)) {
        shared.report(Kind::Fifo, what);
    }
    // How much those two rules covered.
    let stretch_ids: u64 = stretches
        .iter()
        .filter_map(|s| Some(s.runs.last()?.1 - s.runs.first()?.0 + 1))
        .sum();
    let fifo_checked = {
        let stamps = lock(&shared.stamps);
        joins
            .iter()
            .filter(|n| stamps.get(*n).is_some_and(|s| s.queued.is_some()))
            .count() as u64
    };

    // With everyone gone, the server must be back where it started.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut fds_end, mut connections_end);
    loop {
        connections_end = match metrics {
            Some(m) => scrape(m).await.map(Connections::total),
            None => None,
        };
        fds_end = open_fds(pid).unwrap_or(0);
        let back = fds_end <= fds_baseline && connections_end.unwrap_or(0) == 0;
        if back || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back_to_baseline = fds_end <= fds_baseline && connections_end.unwrap_or(0) == 0;
    let last = server.usage();
    let log_errors = lock(&server.log_errors).clone();
    let server_errors = log_errors.count;
    for line in log_errors.first {
        println!("server error: {line}");
    }

    let memory = growth(&rss_samples, args.duration.as_secs_f64() * WARM_UP);
    let measurable = server.measurable();
    let hist = lock(&shared.latency_us).clone();
    let findings = lock(&shared.findings);
    let violations: u64 = findings.counts.values().sum();
    let c = &shared.counters;
    let tallies = lock(&shared.tallies);
    let ok =
        violations == 0 && (!measurable || (memory.flat && back_to_baseline && server_errors == 0));
    let quantile = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        workload: "soak",
        broker: "anteroom",
        clients: args.clients,
        max_active: args.max_active,
        seed: args.seed,
        duration_s: ran_for,
        sessions: c.sessions.load(Ordering::Relaxed),
        connect_failed: c.connect_failed.load(Ordering::Relaxed),
        joins: c.joins.load(Ordering::Relaxed),
        joins_direct: c.direct.load(Ordering::Relaxed),
        promotions: c.promotions.load(Ordering::Relaxed),
        queued: c.queued.load(Ordering::Relaxed),
        server_full: c.server_full.load(Ordering::Relaxed),
        messages_said: c.said.load(Ordering::Relaxed),
        messages_delivered: c.delivered.load(Ordering::Relaxed),
        rate_limited: c.rate_limited.load(Ordering::Relaxed),
        who: c.who.load(Ordering::Relaxed),
        gaps: c.gaps.load(Ordering::Relaxed),
        slow_consumer_cut_offs_while_reading: c.cut_off_reading.load(Ordering::Relaxed),
        acts: tallies.acts.clone(),
        goodbyes: tallies.goodbyes.clone(),
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        timeout_late_max_ms: c.timeout_late_us.load(Ordering::Relaxed) as f64 / 1000.0,
        stretches_checked: stretches.len() as u64,
        stretch_ids,
        fifo_promotions_checked: fifo_checked,
        violations,
        violations_by_kind: Kind::ALL
            .iter()
            .map(|k| (k.name(), findings.counts.get(k).copied().unwrap_or(0)))
            .collect(),
        violation_examples: findings.examples.clone(),
        rss_first_mb: first.rss_bytes as f64 / 1e6,
        rss_warm_mb: memory.warm_mb,
        rss_last_mb: memory.last_mb,
        rss_max_mb: memory.max_mb,
        rss_after_mb: last.rss_bytes as f64 / 1e6,
        rss_growth_mb: memory.growth_mb,
        rss_slope_mb_per_min: memory.slope_mb_per_min,
        rss_fit_growth_mb: memory.fit_growth_mb,
        rss_limit_mb: memory.limit_mb,
        memory_flat: memory.flat,
        fds_baseline,
        fds_max,
        fds_end,
        connections_end,
        back_to_baseline,
        server_cpu_s: last.cpu_seconds - first.cpu_seconds,
        server_errors,
        ok,
    };
    drop(findings);
    drop(tallies);
    print_report(&report, measurable);
    println!("{}", serde_json::to_string(&report)?);
    server.stop()?;
    if !ok && !args.report_only {
        let mut reasons = Vec::new();
        if violations > 0 {
            reasons.push(format!("{violations} violation(s)"));
        }
        if measurable && !memory.flat {
            reasons.push(format!(
                "memory grew by {:.1} MB after the warm-up (limit {:.1} MB)",
                memory.growth_mb.max(memory.fit_growth_mb),
                memory.limit_mb
            ));
        }
        if measurable && !back_to_baseline {
            reasons.push(format!(
                "the server did not return to its baseline ({fds_end} descriptors for {fds_baseline}, {} connections)",
                connections_end.map_or("?".into(), |c| c.to_string())
            ));
        }
        if server_errors > 0 {
            reasons.push(format!("{server_errors} error line(s) in the server's log"));
        }
        anyhow::bail!("soak failed: {}", reasons.join("; "));
    }
    Ok(())
}

fn print_report(r: &Report, measurable: bool) {
    let join = |pairs: Vec<(String, u64)>| -> String {
        if pairs.is_empty() {
            "none".into()
        } else {
            pairs
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!(
        "sessions      {} ({} joins: {} direct, {} promoted; {} queued; {} server_full; {} failed to connect)",
        r.sessions,
        r.joins,
        r.joins_direct,
        r.promotions,
        r.queued,
        r.server_full,
        r.connect_failed
    );
    println!(
        "messages      {} said, {} delivered, {} rate-limited, {} who, {} gaps",
        r.messages_said, r.messages_delivered, r.rate_limited, r.who, r.gaps
    );
    println!(
        "latency       p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms
    );
    println!(
        "misbehaviour  {}",
        join(r.acts.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    );
    println!(
        "goodbyes      {}; {} cut off while reading; timeouts at most {:.0} ms late",
        join(r.goodbyes.iter().map(|(k, v)| (k.clone(), *v)).collect()),
        r.slow_consumer_cut_offs_while_reading,
        r.timeout_late_max_ms
    );
    if measurable {
        println!(
            "memory        rss {:.1} MB at start, {:.1} MB after warm-up, {:.1} MB last, {:.1} MB max, {:.1} MB with everyone gone; growth {:+.2} MB, fit {:+.2} MB ({:+.3} MB/min), limit {:.1} MB: {}",
            r.rss_first_mb,
            r.rss_warm_mb,
            r.rss_last_mb,
            r.rss_max_mb,
            r.rss_after_mb,
            r.rss_growth_mb,
            r.rss_fit_growth_mb,
            r.rss_slope_mb_per_min,
            r.rss_limit_mb,
            if r.memory_flat { "flat" } else { "GROWING" }
        );
        println!(
            "descriptors   {} at start, {} max, {} at the end; connections at the end {}: {}",
            r.fds_baseline,
            r.fds_max,
            r.fds_end,
            r.connections_end.map_or("?".into(), |c| c.to_string()),
            if r.back_to_baseline {
                "back to baseline"
            } else {
                "NOT BACK"
            }
        );
        println!(
            "server        {:.1} s CPU, {} error line(s) logged",
            r.server_cpu_s, r.server_errors
        );
    } else {
        println!(
            "server        not started by the soak: memory, descriptors and timing not judged"
        );
    }
    println!(
        "checked       {} stretches of membership spanning {} message ids; {} promotions seen by the observer",
        r.stretches_checked, r.stretch_ids, r.fifo_promotions_checked
    );
    println!(
        "violations    {}{}",
        r.violations,
        if r.violations == 0 {
            String::new()
        } else {
            format!(
                " ({})",
                join(
                    r.violations_by_kind
                        .iter()
                        .filter(|(_, v)| **v > 0)
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect()
                )
            )
        }
    );
    for example in &r.violation_examples {
        println!("  {example}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(findings: &[Finding]) -> Vec<Kind> {
        findings.iter().map(|f| f.0).collect()
    }

    fn room(users: &[&str]) -> RoomView {
        RoomView::new(&users.iter().map(|u| u.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ids_must_increase_without_repeats() {
        let mut view = room(&["ann", "bob"]);
        assert!(view.message(3, "ann", Some((1, 1))).is_empty());
        assert!(view.message(4, "bob", Some((2, 1))).is_empty());
        assert_eq!(
            kinds(&view.message(4, "bob", Some((2, 1)))),
            [Kind::Duplicate]
        );
        assert_eq!(
            kinds(&view.message(3, "ann", Some((1, 1)))),
            [Kind::Duplicate]
        );
        // Never received, yet older than the last one: out of order.
        assert_eq!(kinds(&view.message(2, "ann", Some((1, 0)))), [Kind::Order]);
        assert!(view.message(9, "ann", Some((1, 2))).is_empty());
    }

    #[test]
    fn each_senders_messages_stay_in_order() {
        let mut view = room(&["ann"]);
        assert!(view.message(1, "ann", Some((7, 5))).is_empty());
        assert_eq!(kinds(&view.message(2, "ann", Some((7, 4)))), [Kind::Order]);
        assert_eq!(
            kinds(&view.message(3, "ann", Some((7, 4)))),
            [Kind::Duplicate]
        );
        // Another connection under the same name has its own numbering.
        assert!(view.message(4, "ann", Some((8, 1))).is_empty());
    }

    #[test]
    fn messages_only_from_users_in_the_room() {
        let mut view = room(&["me"]);
        assert_eq!(kinds(&view.message(1, "bob", None)), [Kind::Presence]);
        view.joined("bob");
        assert!(view.message(2, "bob", None).is_empty());
        assert!(view.left("bob").is_none());
        assert_eq!(kinds(&view.message(3, "bob", None)), [Kind::Presence]);
        assert_eq!(view.left("bob").map(|f| f.0), Some(Kind::Presence));
        // A name briefly held twice (the old holder's `left` comes late).
        view.joined("cid");
        view.joined("cid");
        assert!(view.left("cid").is_none());
        assert!(view.message(4, "cid", None).is_empty());
    }

    #[test]
    fn a_gap_closes_a_stretch() {
        let mut view = room(&["me"]);
        for id in [1, 2, 3, 5] {
            view.message(id, "me", None);
        }
        view.gap();
        for id in [9, 10] {
            view.message(id, "me", None);
        }
        assert_eq!(view.stretches(), [vec![(1, 3), (5, 5)], vec![(9, 10)]]);
    }

    #[test]
    fn own_messages_are_echoed_or_refused() {
        let mut echoes = Echoes::default();
        assert!(echoes.echoed(1).is_none());
        // 2 refused; its refusal arrives before 3's echo.
        echoes.refused();
        assert!(echoes.echoed(3).is_none());
        // 4 vanished: neither echoed nor refused.
        assert_eq!(echoes.echoed(5).map(|f| f.0), Some(Kind::Lost));
        assert_eq!(echoes.echoed(5).map(|f| f.0), Some(Kind::Duplicate));
        assert_eq!(echoes.echoed(4).map(|f| f.0), Some(Kind::Order));
    }

    #[test]
    fn refusals_of_later_messages_are_kept_for_them() {
        let mut echoes = Echoes::default();
        // 1 refused, 2 accepted, 3 refused: both refusals can arrive before
        // the echo of 2, since the echo goes through the room first.
        echoes.refused();
        echoes.refused();
        assert!(echoes.echoed(2).is_none());
        assert!(echoes.echoed(4).is_none());
        // Nothing left to explain 5.
        assert_eq!(echoes.echoed(6).map(|f| f.0), Some(Kind::Lost));
    }

    #[test]
    fn positions_never_go_up() {
        let text = |p: u64| {
            format!("We are dealing with a large amount of users and you are at {p} in queue")
        };
        let mut queue = QueueTrack::default();
        assert!(queue.queued(5, &text(5)).is_empty());
        assert!(queue.queued(3, &text(3)).is_empty());
        assert!(queue.queued(3, &text(3)).is_empty());
        assert_eq!(kinds(&queue.queued(4, &text(4))), [Kind::PositionIncreased]);
        assert_eq!(kinds(&queue.queued(2, "you are 2nd")), [Kind::Protocol]);
        queue.welcomed = true;
        assert_eq!(kinds(&queue.queued(1, &text(1))), [Kind::Protocol]);
    }

    #[test]
    fn lost_means_received_by_someone_else() {
        let stretch = |member: &str, runs: &[(u64, u64)]| Stretch {
            member: member.into(),
            runs: runs.to_vec(),
        };
        let stretches = [
            // ann misses 4, 7 and 8, bob 5 to 7; nobody received 7.
            stretch("ann", &[(1, 3), (5, 6), (9, 12)]),
            stretch("bob", &[(2, 4), (8, 8)]),
            // cid left after 3 and came back at 20: not a gap of its own.
            stretch("cid", &[(1, 3)]),
            stretch("cid", &[(20, 21)]),
        ];
        assert_eq!(lost_messages(&stretches), [(0, 4), (0, 8), (1, 5), (1, 6)]);
        assert!(lost_messages(&[]).is_empty());
    }

    #[test]
    fn fifo_is_judged_against_hello_times() {
        let stamps: HashMap<String, Stamp> = [
            // a queued at 2, before b said hello at 3.
            ("a", 1, Some(2)),
            ("b", 3, Some(4)),
            // c said hello at 5 and entered directly.
            ("c", 5, None),
            // d queued at 7, after e said hello at 6: either order is fine.
            ("d", 0, Some(7)),
            ("e", 6, Some(8)),
        ]
        .into_iter()
        .map(|(n, hello, queued)| (n.to_string(), Stamp { hello, queued }))
        .collect();
        let order = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(fifo_violations(&order(&["a", "b", "c", "d", "e"]), &stamps).is_empty());
        assert!(fifo_violations(&order(&["a", "b", "c", "e", "d"]), &stamps).is_empty());
        assert_eq!(fifo_violations(&order(&["b", "a"]), &stamps).len(), 1);
        // c jumped the queue that a was waiting in.
        assert_eq!(fifo_violations(&order(&["c", "a"]), &stamps).len(), 1);
        // Names the soak does not know (the observer, taken names) are skipped.
        assert!(fifo_violations(&order(&["x", "a", "y", "b"]), &stamps).is_empty());
    }

    #[test]
    fn memory_is_judged_after_the_warm_up() {
        // Steep during the warm-up, flat after it.
        let mut samples: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, t as f64 * 3.0)).collect();
        samples.extend((10..60).map(|t| (t as f64, 30.0 + (t % 2) as f64 * 0.5)));
        let g = growth(&samples, 12.0);
        assert!(g.flat, "{g:?}");
        assert_eq!(g.max_mb, 30.5);
        assert!(g.slope_mb_per_min.abs() < 0.5, "{g:?}");
        // A steady climb of 0.2 MB/s: 9.6 MB over the judged span.
        let climbing: Vec<(f64, f64)> =
            (0..60).map(|t| (t as f64, 20.0 + t as f64 * 0.2)).collect();
        let g = growth(&climbing, 12.0);
        assert!(!g.flat, "{g:?}");
        assert!((g.slope_mb_per_min - 12.0).abs() < 1e-6, "{g:?}");
        assert!((g.fit_growth_mb - 9.4).abs() < 1e-6, "{g:?}");
        // The limit is 10% of the memory after the warm-up when that is more.
        let big: Vec<(f64, f64)> = (0..60)
            .map(|t| (t as f64, 200.0 + t as f64 * 0.2))
            .collect();
        assert!(growth(&big, 12.0).flat);
        assert!(growth(&[], 0.0).flat);
    }

    #[test]
    fn texts_carry_sender_number_and_time() {
        let text = say_text(12, 3, 456, "s1-2", 5);
        let said = parse_text(&text).unwrap();
        assert_eq!(
            (said.uid, said.seq, said.sent_us, said.name),
            (12, 3, 456, "s1-2")
        );
        assert!(parse_text("hello there").is_none());
    }

    #[test]
    fn plans_are_reproducible() {
        let args = Args {
            clients: 10,
            max_active: 5,
            duration: Duration::from_secs(1),
            seed: 1,
            sample: Duration::from_secs(1),
            say_rate: 0.5,
            stay: Duration::from_secs(15),
            misbehave: 0.5,
            server: None,
            metrics: None,
            report_only: false,
        };
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50)
                .map(|_| format!("{:?}", Plan::draw(&mut rng, &args)))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
