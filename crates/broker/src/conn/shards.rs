//! Writer shards: the write side of every connection, swept a core at a time.
//!
//! Room delivery hands one run of events to a thousand outboxes in a pass.
//! Waking a thousand writer tasks for it costs a thousand trips through the
//! scheduler; instead each connection belongs to one of a few shards (one per
//! worker thread), and an outbox that receives frames while idle puts its
//! connection on its shard's dirty list. The shard's task sweeps the list:
//! for each connection it takes everything queued and writes it with one
//! `writev`, without waiting. The more a pass carries, the fuller the writes,
//! never the more of them.
//!
//! A socket that does not take everything at once is handed to the
//! connection's own writer task, which waits for it under the progress
//! deadline exactly as before, keeps order, and gives the connection back to
//! the shard once it has caught up. The closing frames and the end of the
//! stream are always written by that task, which the session waits for. A
//! transport that cannot write without waiting (see
//! [`FrameSink::try_write`]) is simply always written by its task.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anteroom_protocol::LeftReason;
use tokio::sync::Notify;

use super::handle::Peer;
use super::outbox::Batch;
use super::writer::{FrameSink, Position, Tally, WriteError};
use crate::telemetry::metrics;

/// A connection a shard can sweep.
pub(crate) trait Sweep: Send + Sync {
    /// Puts the connection on its shard's dirty list.
    fn schedule(self: Arc<Self>);
    /// Writes what is queued if the socket takes it at once; otherwise
    /// hands the connection to its own task.
    fn sweep(&self, tally: &mut Tally);
    /// Gives up on the connection after its write panicked: closes it and
    /// lets its task end.
    fn abandon(&self);
}

/// The server's writer shards.
#[derive(Debug)]
pub struct Shards {
    shards: Box<[Shard]>,
}

#[derive(Debug, Default)]
struct Shard {
    dirty: Mutex<Vec<Arc<dyn Sweep>>>,
    wake: Notify,
    /// Rounds of sweeping started (counted as the dirty list is taken,
    /// under its lock) and finished.
    started: AtomicU64,
    finished: AtomicU64,
    /// Told at the end of every round.
    swept: Notify,
}

impl Shard {
    /// The round that will have written every connection dirty now.
    fn round_covering_now(&self) -> u64 {
        let dirty = lock(&self.dirty);
        let started = self.started.load(Ordering::Acquire);
        if dirty.is_empty() {
            started
        } else {
            started + 1
        }
    }
}

impl std::fmt::Debug for dyn Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a push or a swap: nothing to repair.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shards {
    /// Starts `count` shards (at least one) on the current runtime; they run
    /// as long as it does.
    pub fn start(count: usize) -> Arc<Self> {
        let shards = Arc::new(Self {
            shards: (0..count.max(1)).map(|_| Shard::default()).collect(),
        });
        for index in 0..shards.shards.len() {
            // Unconstrained: the sweep polls sockets once each and never
            // waits, so tokio's cooperative budget must not make a writable
            // socket look full. The task yields after every sweep instead.
            tokio::spawn(tokio::task::unconstrained(run_shard(shards.clone(), index)));
        }
        shards
    }

    /// Returns once every shard has swept the connections that were dirty
    /// when it was called: how room delivery keeps pace with its writes.
    /// Later pushes (replies, position updates) are not waited for, so a
    /// busy gateway cannot hold delivery up.
    pub async fn caught_up(&self) {
        for shard in self.shards.iter() {
            let round = shard.round_covering_now();
            loop {
                let swept = shard.swept.notified();
                let mut swept = std::pin::pin!(swept);
                // Registered before checking, so a round ending in between
                // is not missed.
                swept.as_mut().enable();
                if shard.finished.load(Ordering::Acquire) >= round {
                    break;
                }
                swept.await;
            }
        }
    }

    /// One shard per worker thread of the current runtime.
    pub fn for_current_runtime() -> Arc<Self> {
        Self::start(tokio::runtime::Handle::current().metrics().num_workers())
    }
}

/// Connections a shard writes before it lets the other tasks of its thread
/// run. A sweep of thousands of members takes tens of milliseconds; run in
/// one go, it would hold up room delivery and the publishers' sessions on
/// the same thread, and every message behind it would wait a whole sweep
/// longer. Between chunks, new events reach the outboxes still to be
/// written, which then go out in the same write.
const SWEEP_CHUNK: usize = 32;

/// A shard's task: sweeps its dirty connections whenever there are some.
async fn run_shard(shards: Arc<Shards>, index: usize) {
    let shard = &shards.shards[index];
    let mut sweeping: Vec<Arc<dyn Sweep>> = Vec::new();
    let mut tally = Tally::default();
    loop {
        shard.wake.notified().await;
        {
            let mut dirty = lock(&shard.dirty);
            shard.started.fetch_add(1, Ordering::AcqRel);
            std::mem::swap(&mut *dirty, &mut sweeping);
        }
        for chunk in sweeping.chunks(SWEEP_CHUNK) {
            for conn in chunk {
                // A bug in one connection's write must not stop the shard.
                if let Err(panic) =
                    std::panic::catch_unwind(AssertUnwindSafe(|| conn.sweep(&mut tally)))
                {
                    metrics().panicked("writer");
                    tracing::error!(
                        panic = crate::supervisor::panic_message(&*panic),
                        "writer panicked; closing the connection"
                    );
                    conn.abandon();
                }
            }
            tally.publish();
            tokio::task::yield_now().await;
        }
        sweeping.clear();
        shard.finished.fetch_add(1, Ordering::AcqRel);
        shard.swept.notify_waiters();
        // Give the list back its memory after a storm.
        if sweeping.capacity() > 4096 {
            sweeping = Vec::new();
        }
    }
}

/// A connection's write side, shared by its shard and its own task: the
/// sink and the batch in progress are parked here by whichever of the two
/// is not using them.
struct WriteSide<S> {
    peer: Arc<Peer>,
    shards: Arc<Shards>,
    shard: usize,
    parked: Mutex<Option<Parked<S>>>,
    /// A write panicked: the sink is gone and the task ends.
    abandoned: AtomicBool,
}

struct Parked<S> {
    sink: S,
    batch: Batch,
    /// How far into `batch` the writing has got.
    at: Position,
}

impl<S: FrameSink + 'static> Sweep for WriteSide<S> {
    fn schedule(self: Arc<Self>) {
        let shard = &self.shards.shards[self.shard];
        let mut dirty = lock(&shard.dirty);
        let first = dirty.is_empty();
        dirty.push(self.clone());
        drop(dirty);
        if first {
            shard.wake.notify_one();
        }
    }

    fn sweep(&self, tally: &mut Tally) {
        let outbox = &self.peer.outbox;
        let mut parked = lock(&self.parked);
        // The task may hold the sink while the shard owns the connection
        // (woken by a frame pushed before it was attached); it looks for
        // more after putting it back.
        let Some(p) = parked.as_mut() else { return };
        // A sweep scheduled before the connection went to its task finds it
        // there: the task has the batch, or is about to take it as it is.
        if outbox.take_for_shard(&mut p.batch) != Some(true) {
            return;
        }
        p.at = Position::default();
        if !p.batch.closing {
            let discarded = outbox.discarded(&p.batch);
            let done = p.sink.try_write(&p.batch.entries, &mut p.at, discarded);
            tally.count(&p.batch.entries[..p.at.index]);
            if let Ok(true) = done {
                outbox.written(&mut p.batch);
                return;
            }
            // A failed write is left to the task too: it fails again there
            // and ends the connection the way every writer error does.
        }
        drop(parked);
        outbox.hand_to_task();
    }

    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        // Dropping the sink closes the transport.
        lock(&self.parked).take();
        self.peer.kick(LeftReason::Disconnected, None);
        self.peer.outbox.hand_to_task();
    }
}

/// Runs a connection's writer in the care of a shard: its own task only
/// writes when the shard hands it a socket that made a write wait, and the
/// closing frames. Ends like [`super::writer::run_writer`].
pub async fn run_sharded_writer<S: FrameSink + 'static>(
    peer: Arc<Peer>,
    sink: S,
    write_timeout: Option<Duration>,
    shards: Arc<Shards>,
) -> Result<(), WriteError> {
    let shard = (peer.id % shards.shards.len() as u64) as usize;
    let side = Arc::new(WriteSide {
        peer: peer.clone(),
        shards,
        shard,
        parked: Mutex::new(Some(Parked {
            sink,
            batch: Batch::default(),
            at: Position::default(),
        })),
        abandoned: AtomicBool::new(false),
    });
    let weak: Weak<WriteSide<S>> = Arc::downgrade(&side);
    peer.outbox.attach(weak);
    loop {
        peer.outbox.wait_for_task().await;
        if side.abandoned.load(Ordering::Acquire) {
            // Counted and logged where it panicked.
            return Ok(());
        }
        let Some(p) = lock(&side.parked).take() else {
            continue;
        };
        // On the heap: most connections never get here, and their task is
        // as small as its idle state.
        if Box::pin(catch_up(&side, p, write_timeout)).await? == CaughtUp::Closed {
            return Ok(());
        }
    }
}

/// How [`catch_up`] ended.
#[derive(Debug, PartialEq, Eq)]
enum CaughtUp {
    /// Everything is written and the shard writes again.
    Shard,
    /// The outbox closed and the transport's sending side is ended.
    Closed,
}

/// Writes until nothing is queued: the batch the shard left, then whatever
/// arrives meanwhile; then parks the sink and gives the connection back.
async fn catch_up<S: FrameSink + 'static>(
    side: &WriteSide<S>,
    mut p: Parked<S>,
    write_timeout: Option<Duration>,
) -> Result<CaughtUp, WriteError> {
    let outbox = &side.peer.outbox;
    let mut tally = Tally::default();
    loop {
        // Finish the batch from where the shard left it.
        if p.at.index < p.batch.entries.len() || p.batch.closing {
            let discarded = outbox.discarded(&p.batch);
            let from = p.at;
            let written = p
                .sink
                .write_all(&p.batch.entries, from, write_timeout, discarded)
                .await?;
            tally.count(&p.batch.entries[from.index..written]);
            tally.publish();
            if p.batch.closing {
                p.sink.finish().await;
                return Ok(CaughtUp::Closed);
            }
        }
        outbox.written(&mut p.batch);
        p.at = Position::default();
        // Park before giving the connection back, so the shard always finds
        // the sink when it owns the connection.
        if !outbox.take(&mut p.batch) {
            *lock(&side.parked) = Some(p);
            if outbox.hand_to_shard() {
                return Ok(CaughtUp::Shard);
            }
            // Frames came in meanwhile: keep writing.
            match lock(&side.parked).take() {
                Some(again) => p = again,
                None => return Ok(CaughtUp::Shard),
            }
        }
    }
}

#[cfg(test)]
mod tests;
