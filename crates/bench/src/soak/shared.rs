//! What every client of a soak adds to: counters, findings, latencies, and
//! the records the whole-run checks need.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::Args;
use super::checks::{Kind, Stamp, Stretch};
use crate::lock;

/// Timeouts of the server under test, when the soak set them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) handshake: Duration,
    pub(super) idle: Duration,
}

/// What the clients did, counted.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) sessions: AtomicU64,
    pub(super) connect_failed: AtomicU64,
    pub(super) joins: AtomicU64,
    pub(super) direct: AtomicU64,
    pub(super) promotions: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) server_full: AtomicU64,
    pub(super) said: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    pub(super) who: AtomicU64,
    pub(super) gaps: AtomicU64,
    /// Cut off as slow consumers while reading normally (they fell behind).
    pub(super) cut_off_reading: AtomicU64,
    /// The longest a timeout fired after its value, as seen by the client.
    pub(super) timeout_late_us: AtomicU64,
}

/// Violations by kind, and the first few described.
#[derive(Default)]
pub(super) struct Findings {
    pub(super) counts: BTreeMap<Kind, u64>,
    pub(super) examples: Vec<String>,
}

/// Misbehaviour carried out and goodbyes received, by name.
#[derive(Default)]
pub(super) struct Tallies {
    pub(super) acts: BTreeMap<&'static str, u64>,
    pub(super) goodbyes: BTreeMap<String, u64>,
}

/// State shared by every client.
pub(super) struct Shared {
    pub(super) args: Args,
    pub(super) server: SocketAddr,
    pub(super) timeouts: Option<Timeouts>,
    pub(super) epoch: Instant,
    pub(super) cancel: CancellationToken,
    pub(super) next_uid: AtomicU64,
    pub(super) clock: AtomicU64,
    pub(super) counters: Counters,
    pub(super) members_now: AtomicI64,
    pub(super) queued_now: AtomicI64,
    pub(super) findings: Mutex<Findings>,
    pub(super) latency_us: Mutex<Histogram<u64>>,
    pub(super) stretches: Mutex<Vec<Stretch>>,
    pub(super) stamps: Mutex<HashMap<String, Stamp>>,
    /// The name each client holds now, for attempts at taking it.
    pub(super) held: Mutex<HashMap<usize, String>>,
    pub(super) tallies: Mutex<Tallies>,
}

impl Shared {
    pub(super) fn new(
        args: Args,
        server: SocketAddr,
        timeouts: Option<Timeouts>,
    ) -> anyhow::Result<Self> {
        Ok(Shared {
            args,
            server,
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
        })
    }

    pub(super) fn report(&self, kind: Kind, what: String) {
        let mut findings = lock(&self.findings);
        *findings.counts.entry(kind).or_default() += 1;
        if findings.examples.len() < 10 {
            findings.examples.push(format!("{}: {what}", kind.name()));
        }
    }

    pub(super) fn tally_act(&self, act: &'static str) {
        *lock(&self.tallies).acts.entry(act).or_default() += 1;
    }

    pub(super) fn tally_goodbye(&self, reason: &str) {
        *lock(&self.tallies)
            .goodbyes
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub(super) fn violations(&self) -> u64 {
        lock(&self.findings).counts.values().sum()
    }

    pub(super) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    pub(super) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}
