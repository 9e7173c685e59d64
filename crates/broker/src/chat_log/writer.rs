//! The `chat_log` component: follows the `room` topic and commits every
//! message to the store, beside the fan-out and never in its way.
//!
//! Two halves. The subscriber reads the topic as fast as events come (it
//! only numbers messages and hands them on, so it never makes publishers
//! wait) into a bounded queue; when the store falls so far behind that the
//! queue is full, the message is dropped from the log and counted. The
//! committer takes what is queued and writes it in batches, one
//! transaction each, at the latest `store_flush` after a batch's first
//! message arrived. Retention runs beside them, deleting old messages and
//! files in small batches.

use std::sync::Arc;
use std::time::Duration;

use async_broadcast::Receiver;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::store::{LogStore, Retention};
use super::{ChatLog, Logged};
use crate::bus::RoomEvent;
use crate::files::Files;
use crate::telemetry::log_budget::{self, Verdict};
use crate::telemetry::metrics;

/// Messages waiting for the committer before new ones are dropped from the
/// log: seconds of a busy room, so only a store that stopped loses any.
pub const QUEUE: usize = 65_536;

/// Most messages in one transaction.
pub const MAX_BATCH: usize = 4096;

/// How often retention looks for old messages and files.
const RETENTION_EVERY: Duration = Duration::from_secs(10);

/// Rows one retention step deletes; steps are spaced so that commits of
/// new messages get the store in between.
const RETENTION_BATCH: usize = 1000;

/// What the component needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The longest a message waits to be committed.
    pub flush: Duration,
    /// Messages older than this go.
    pub max_age: Duration,
    /// At most this many messages stay.
    pub max_messages: u64,
}

/// Numbers messages as room delivery does: both read the one `room` stream
/// from the same last id, so the log and the room agree on every id.
#[derive(Debug, Clone, Copy)]
pub struct Sequence(u64);

impl Sequence {
    /// Continues after `last_id`.
    pub fn after(last_id: u64) -> Self {
        Self(last_id)
    }

    /// The next message's id.
    pub fn issue(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    /// The id of a message: `given` (by the cluster's log), which the
    /// sequence then continues after, or the next one.
    pub fn take(&mut self, given: Option<u64>) -> u64 {
        match given {
            Some(id) => {
                self.0 = self.0.max(id);
                id
            }
            None => self.issue(),
        }
    }

    /// The last id given out.
    pub fn last(&self) -> u64 {
        self.0
    }
}

/// Runs the component until the `room` topic closes and everything it
/// read is committed; then marks the store cleanly closed.
pub async fn run(
    room: Receiver<RoomEvent>,
    last_id: u64,
    store: Arc<dyn LogStore>,
    log: Arc<ChatLog>,
    files: Option<Arc<Files>>,
    settings: Settings,
) {
    let (queue, pending) = mpsc::channel(QUEUE);
    let committer = commit(pending, store.clone(), log.clone(), settings.flush);
    let subscriber = subscribe(room, Sequence::after(last_id), queue);
    let retention = retain(store.clone(), log, files, settings);
    let work = async { tokio::join!(subscriber, committer) };
    tokio::pin!(work);
    // Retention runs for as long as the log is written.
    let (last, ()) = tokio::select! {
        done = &mut work => done,
        () = retention => work.await,
    };
    match store.close(last).await {
        Ok(()) => info!(last_id = last, "chat log closed"),
        Err(error) => warn!(%error, "chat log not closed cleanly"),
    }
}

/// Reads the topic; returns the last id given out.
async fn subscribe(
    mut room: Receiver<RoomEvent>,
    mut ids: Sequence,
    queue: mpsc::Sender<Logged>,
) -> u64 {
    let m = metrics();
    while let Ok(event) = room.recv_direct().await {
        if let RoomEvent::MessagePosted {
            from,
            text,
            ts,
            attachment,
            id,
            logged,
            ..
        } = event
        {
            let message = Logged {
                id: ids.take(id),
                from,
                text,
                ts,
                attachment,
            };
            if logged && queue.try_send(message).is_err() {
                m.store_dropped.increment(1);
                m.dropped_chat_log.increment(1);
                if let Verdict::Write { suppressed } = log_budget::STORE.take() {
                    warn!(
                        suppressed,
                        "the chat log store is behind; messages are delivered but not logged"
                    );
                }
            }
        }
        m.lag_chat_log
            .set((room.len() + (QUEUE - queue.capacity())) as f64);
    }
    ids.last()
}

/// Commits what the subscriber queued, in batches.
async fn commit(
    mut pending: mpsc::Receiver<Logged>,
    store: Arc<dyn LogStore>,
    log: Arc<ChatLog>,
    flush: Duration,
) {
    let m = metrics();
    let mut batch: Vec<Logged> = Vec::with_capacity(256);
    loop {
        if pending.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        // Gather until the first message has waited `flush` (or the batch
        // is full): one transaction for all of them.
        let deadline = Instant::now() + flush;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, pending.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let started = std::time::Instant::now();
        match store.append(&batch).await {
            Ok(()) => {
                m.store_commit_seconds
                    .record(started.elapsed().as_secs_f64());
                m.store_written.increment(batch.len() as u64);
            }
            Err(error) => {
                m.store_dropped.increment(batch.len() as u64);
                m.dropped_chat_log.increment(batch.len() as u64);
                if let Verdict::Write { suppressed } = log_budget::STORE.take() {
                    warn!(%error, suppressed, lost = batch.len(), "chat log commit failed");
                }
            }
        }
        if let Some(last) = batch.last() {
            log.settle(last.id);
        }
        batch.clear();
    }
}

/// Deletes old messages and files, a small batch at a time.
async fn retain(
    store: Arc<dyn LogStore>,
    log: Arc<ChatLog>,
    files: Option<Arc<Files>>,
    settings: Settings,
) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before_ts =
            anteroom_protocol::unix_millis().saturating_sub(settings.max_age.as_millis() as u64);
        log.forget_before(before_ts);
        loop {
            let rule = Retention {
                before_ts,
                keep: settings.max_messages,
                batch: RETENTION_BATCH,
            };
            let pruned = match store.prune(rule).await {
                Ok(pruned) => pruned,
                Err(error) => {
                    if let Verdict::Write { suppressed } = log_budget::STORE.take() {
                        warn!(%error, suppressed, "chat log retention failed");
                    }
                    break;
                }
            };
            let done = pruned.messages < RETENTION_BATCH && pruned.files.len() < RETENTION_BATCH;
            if let Some(files) = &files {
                files.forget(&pruned.files).await;
            }
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(error) = log.recheck_older().await {
            debug!(%error, "the chat log could not be checked after retention");
        }
    }
}
