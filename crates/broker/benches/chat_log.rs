//! The chat log's two costs, measured in one run:
//!
//! * the sustained commit rate of each store: batches of messages appended
//!   back to back for a few seconds, as the committer does when the room
//!   says more than one batch per `store_flush` (4,096 messages per
//!   transaction), and in small batches (64), as at a quiet room's pace;
//!   SQLite with `store_sync` `normal` and `full`, and memory as the
//!   baseline;
//! * history on join: members granted `history` joining a room whose log
//!   holds 20,000 messages, through room delivery, with a store that counts
//!   its reads: the recent window comes from memory, so the count must stay
//!   at zero.
//!
//! Run with `cargo bench -p anteroom-broker --bench chat_log`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anteroom_broker::bus::RoomEvent;
use anteroom_broker::chat_log::store::{LogStore, Pruned, Retention, StoreResult};
use anteroom_broker::chat_log::{ChatLog, Logged, StoredFile, memory, sqlite};
use anteroom_broker::config::{Config, StoreKind, StoreSync};
use anteroom_broker::conn::handle::{Grant, Peer};
use anteroom_broker::room::delivery::RoomDelivery;
use anteroom_protocol::{Feature, Features};
use futures_util::future::BoxFuture;

const RUN: Duration = Duration::from_secs(3);

fn message(id: u64) -> Logged {
    Logged {
        id,
        from: Arc::from("member0"),
        text: Arc::from("x".repeat(128)),
        ts: anteroom_protocol::unix_millis(),
        attachment: None,
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "anteroom-chat-log-bench-{}-{}",
            std::process::id(),
            fastrand_seed()
        ));
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_seed() -> u64 {
    Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()) << 32
}

/// Appends batches of `batch` back to back for [`RUN`]; messages per
/// second and the median and worst commit.
async fn commit_rate(store: &dyn LogStore, batch: usize) -> (f64, Duration, Duration) {
    let mut next = 1u64;
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < RUN {
        let messages: Vec<Logged> = (next..next + batch as u64).map(message).collect();
        next += batch as u64;
        let t = Instant::now();
        store.append(&messages).await.expect("append");
        times.push(t.elapsed());
    }
    let rate = (next - 1) as f64 / started.elapsed().as_secs_f64();
    times.sort();
    (rate, times[times.len() / 2], times[times.len() - 1])
}

fn sqlite_config(dir: &TempDir, sync: StoreSync) -> Config {
    Config {
        store: Some(StoreKind::Sqlite),
        store_sync: sync,
        data_dir: dir.0.clone(),
        ..Config::default()
    }
}

/// A store that counts the pages it is asked for.
struct Counting {
    inner: Arc<dyn LogStore>,
    pages: AtomicU64,
}

impl LogStore for Counting {
    fn append<'a>(&'a self, batch: &'a [Logged]) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.append(batch)
    }
    fn page(&self, before: u64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Logged>>> {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.inner.page(before, limit)
    }
    fn add_file(&self, file: StoredFile) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.add_file(file)
    }
    fn prune(&self, rule: Retention) -> BoxFuture<'_, StoreResult<Pruned>> {
        self.inner.prune(rule)
    }
    fn close(&self, last_id: u64) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.close(last_id)
    }
}

/// Joins through room delivery, each with its `history`; returns joins per
/// second and the store pages read.
async fn joins_with_history(joins: usize) -> (f64, u64) {
    let dir = TempDir::new();
    let config = sqlite_config(&dir, StoreSync::Normal);
    // A log of 20,000 messages, reopened so that memory starts from the store.
    {
        let opened = sqlite::open(&config).await.expect("open");
        for start in (1..=20_000u64).step_by(4096) {
            let batch: Vec<Logged> = (start..(start + 4096).min(20_001)).map(message).collect();
            opened.store.append(&batch).await.expect("append");
        }
        opened.store.close(20_000).await.expect("close");
    }
    let mut opened = sqlite::open(&config).await.expect("reopen");
    let counting = Arc::new(Counting {
        inner: opened.store.clone(),
        pages: AtomicU64::new(0),
    });
    opened.store = counting.clone();
    let log = Arc::new(ChatLog::new(&config, &mut opened));
    let mut delivery = RoomDelivery::new(joins + 1, false).with_log(log, opened.last_id, 0);
    let history = Features::NONE.with(Feature::History);
    let started = Instant::now();
    for i in 0..joins {
        let peer = Arc::new(Peer::new(1024));
        peer.set_grant(Grant {
            features: history,
            upload_token: None,
            resume: None,
            resumed: None,
        });
        delivery.handle(RoomEvent::MemberJoined {
            peer: peer.clone(),
            name: format!("member{i}").into(),
            from_queue: false,
            ts: 0,
        });
        delivery.handle(RoomEvent::MemberLeft {
            id: peer.id,
            name: format!("member{i}").into(),
            reason: anteroom_protocol::LeftReason::Bye,
            ts: 0,
        });
        // A message between joins now and then: the cached frame is rebuilt.
        if i % 10 == 0 {
            delivery.handle(RoomEvent::MessagePosted {
                from: "member0".into(),
                text: "x".repeat(128).into(),
                ts: 0,
                attachment: None,
                read_at: Instant::now(),
                id: None,
                logged: true,
            });
        }
        delivery.flush();
    }
    let rate = joins as f64 / started.elapsed().as_secs_f64();
    (rate, counting.pages.load(Ordering::Relaxed))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("chat log commit rate, 128-byte messages, {RUN:?} per line:");
        let baseline = memory::open();
        let (memory_rate, _, _) = commit_rate(&*baseline.store, 4096).await;
        println!(
            "  memory            batch 4096: {memory_rate:>10.0} msg/s (baseline)"
        );
        for (name, sync) in [("normal", StoreSync::Normal), ("full", StoreSync::Full)] {
            for batch in [4096, 64] {
                let dir = TempDir::new();
                let opened = sqlite::open(&sqlite_config(&dir, sync))
                    .await
                    .expect("open");
                let (rate, p50, worst) = commit_rate(&*opened.store, batch).await;
                println!(
                    "  sqlite {name:<6}     batch {batch:>4}: {rate:>10.0} msg/s ({:.3} of memory), commit p50 {:.2} ms, worst {:.2} ms",
                    rate / memory_rate,
                    p50.as_secs_f64() * 1e3,
                    worst.as_secs_f64() * 1e3
                );
            }
        }
        let (joins, pages) = joins_with_history(10_000).await;
        println!(
            "history on join (50 messages each, log of 20,000 in sqlite): {joins:.0} joins/s through room delivery, {pages} store reads"
        );
    });
}
