//! A connection's bounded outbound queue and the writer task that drains it.
//!
//! Producers (room delivery, the waitlist, the session itself) push encoded
//! frames without ever waiting: a push takes a short, uncontended lock and
//! wakes the writer only when the queue goes from empty to non-empty, so a busy
//! room costs one wake-up per batch, not one per message. Room events arrive
//! as [`EventRun`]s: a run of frames encoded back to back once for the whole
//! room, queued as one entry per member, so a member costs one push, one
//! reference count and one slice of a `writev` per delivery pass, however
//! many events the pass carried. The writer takes
//! everything queued at once and writes it with vectored writes, many frames
//! per system call (see [`super::writer`]). Every push is bounded; what happens on overflow is the
//! caller's policy (see [`Push`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use anteroom_protocol::ServerMessage;
use bytes::Bytes;
use tokio::sync::Notify;

use super::entry::Entry;
pub use super::entry::EventRun;
use super::shards::Sweep;

/// How many frames of replies (pong, users, error) may be pending beyond the
/// event limit before a client that asks but never reads is cut off.
const REPLY_SLACK: usize = 64;

/// The result of offering a frame to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; `depth` frames are now waiting to be written.
    Queued { depth: usize },
    /// Over the limit under the `skip` policy: dropped and counted for `gap`.
    Skipped,
    /// Over the limit: the connection is a slow consumer and must be cut off.
    Overflow,
    /// The connection is closing; the frame was discarded.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    /// In push order; swapped whole with the writer's batch.
    frames: Vec<Entry>,
    /// Frames in `frames`: what `limit` bounds.
    queued: usize,
    /// The latest `queued` frame not yet written; a newer one replaces it, so
    /// a waiting client never has more than one position update pending.
    position: Option<Bytes>,
    /// Bytes held for the connection: those in `frames` and those of the
    /// batch the writer is writing. A batch counts until it is written, or
    /// a connection whose writer has just taken everything would hold up to
    /// twice `max_bytes`.
    bytes: usize,
    /// The part of `bytes` in the writer's current batch, released when the
    /// writer asks for the next one.
    in_flight: usize,
    /// Room events dropped under the `skip` policy, not yet reported by `gap`.
    missed: u64,
    /// A `welcome` has been queued: position updates no longer apply.
    member: bool,
    /// No more frames are accepted; the writer flushes what is queued and ends.
    closing: bool,
    /// Where the connection stands with `lagging` warnings.
    lagging: Lagging,
    /// Who writes next: the connection's writer shard while the socket
    /// keeps up, its own task once the socket has made a write wait.
    owner: Owner,
    /// The connection as its writer shard knows it, once attached.
    sweeper: Option<Weak<dyn Sweep>>,
}

/// A client granted `lagging` is warned once its buffer passes half of the
/// limit, and again only after it has drained below a quarter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Lagging {
    /// Not granted.
    #[default]
    Off,
    /// Warned at the next pass of half the limit.
    Armed,
    /// Warned in this episode.
    Warned,
}

/// Who is woken when frames arrive for an idle connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The connection's own writer task (always, without a shard).
    #[default]
    Task,
    /// The writer shard, which sweeps it with the other dirty connections.
    Shard,
}

/// One connection's outbound queue. Shared by everything that sends to it.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    limit: usize,
    max_bytes: usize,
    /// Set by a close that dropped the pending frames; read by the writer
    /// between system calls, without the lock.
    discarded: AtomicBool,
    /// The id of the last `message` written to the socket: where a resumed
    /// client that does not say what it saw is taken up again.
    written_id: AtomicU64,
}

/// Entries a member's two buffers keep between batches: room delivery adds
/// one run per pass, so in steady traffic they never reallocate.
const KEPT_ENTRIES: usize = 2;

/// Capacity past which a buffer a burst (a join storm) grew is given back,
/// down to [`KEPT_ENTRIES`]: idle members then hold about 200 bytes of
/// them. A buffer that grows in steady traffic stays below it.
const SHRINK_ABOVE: usize = 8;

/// What the writer took in one go.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) entries: Vec<Entry>,
    pub(crate) closing: bool,
    /// The outbox was a member's when this batch was taken.
    member: bool,
    /// Taken after a close that dropped the pending frames: these are the
    /// last frames, to be written whole.
    after_discard: bool,
}

impl Batch {
    /// The frames taken, in write order.
    pub fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.entries.iter().flat_map(Entry::each_frame)
    }
}

impl Outbox {
    /// An outbox holding at most `limit` room events. Allocates nothing until
    /// the first frame is pushed.
    pub fn new(limit: usize) -> Self {
        Self::with_byte_limit(limit, usize::MAX)
    }

    /// An outbox that also holds at most `max_bytes` of frames: a member
    /// falling behind on large messages is slow long before `limit` frames.
    pub fn with_byte_limit(limit: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            limit,
            max_bytes,
            discarded: AtomicBool::new(false),
            written_id: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a few field updates), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `len` more bytes would take what is held (queued or being
    /// written) past `max_bytes`. One frame always fits when nothing is held:
    /// a single large message is not a member falling behind. So at most
    /// `max_bytes` plus one frame is ever held.
    fn over_bytes(&self, state: &State, len: usize) -> bool {
        state.bytes > 0 && state.bytes + len > self.max_bytes
    }

    fn enqueue(&self, state: &mut State, entry: Entry) -> usize {
        let was_idle = state.frames.is_empty() && state.position.is_none();
        state.bytes += entry.bytes().len();
        state.queued += entry.frames();
        state.frames.push(entry);
        if was_idle {
            self.wake_writer(state);
        }
        state.queued
    }

    /// Tells whoever writes for this connection that there is work: its
    /// shard, or its own task.
    ///
    /// Only a member's frames go through the shard. A queued client gets a
    /// position update now and then, tens of thousands of them in one flush
    /// of a long queue; its own task writes them, scheduled fairly beside
    /// room delivery and the sessions, as a sweep of them would not be.
    fn wake_writer(&self, state: &State) {
        if state.owner == Owner::Shard
            && state.member
            && let Some(sweeper) = state.sweeper.as_ref().and_then(Weak::upgrade)
        {
            sweeper.schedule();
            return;
        }
        self.wake.notify_one();
    }

    /// Offers a run of room events (`message`, `joined`, `left`), shared by
    /// all members.
    ///
    /// With `skip` set, a run over the limit is dropped and its events are
    /// remembered for the next `gap`; otherwise the caller must cut the
    /// connection off.
    pub fn push_events(&self, run: &Arc<EventRun>, skip: bool) -> Push {
        let mut state = self.lock();
        if state.closing {
            return Push::Closed;
        }
        if state.queued + run.count > self.limit || self.over_bytes(&state, run.bytes.len()) {
            if skip {
                state.missed += run.count as u64;
                return Push::Skipped;
            }
            return Push::Overflow;
        }
        if state.missed > 0 {
            let gap = gap_frame(std::mem::take(&mut state.missed));
            self.enqueue(&mut state, Entry::event(gap));
        }
        let mut depth = self.enqueue(&mut state, Entry::run(run.clone()));
        if state.lagging == Lagging::Armed && depth > self.limit / 2 {
            depth = self.warn_lagging(&mut state);
        }
        Push::Queued { depth }
    }

    /// Warns this connection when its buffer passes half of the limit (the
    /// client asked for `lagging`).
    pub fn warn_when_lagging(&self) {
        let mut state = self.lock();
        if state.lagging == Lagging::Off {
            state.lagging = Lagging::Armed;
        }
    }

    /// Puts a `lagging` frame ahead of everything queued.
    fn warn_lagging(&self, state: &mut State) -> usize {
        let frame = ServerMessage::Lagging {
            queued: state.queued as u64,
            limit: self.limit as u64,
        }
        .to_frame();
        // Not counted in `queued`: the warning must not bring the cut-off
        // closer.
        state.bytes += frame.len();
        state.frames.insert(0, Entry::reply(frame));
        state.lagging = Lagging::Warned;
        state.queued
    }

    /// Offers one room event on its own (see [`Outbox::push_events`]).
    pub fn push_event(&self, bytes: Bytes, posted: Option<Instant>, skip: bool) -> Push {
        self.push_events(&EventRun::new(bytes, 1, posted.into_iter().collect()), skip)
    }

    /// Queues a direct reply (pong, users, error, ping). Replies are never
    /// skipped, but a client that keeps asking without reading overflows.
    pub fn push_reply(&self, bytes: Bytes) -> Push {
        let mut state = self.lock();
        if state.closing {
            return Push::Closed;
        }
        if state.queued >= self.limit + REPLY_SLACK || self.over_bytes(&state, bytes.len()) {
            return Push::Overflow;
        }
        let depth = self.enqueue(&mut state, Entry::reply(bytes));
        Push::Queued { depth }
    }

    /// Queues the `welcome` (and the `history` that must follow it at once,
    /// if any, with the id of its newest message) and marks the connection a member: any pending position update
    /// is withdrawn so nothing `queued` follows the welcome.
    pub fn push_welcome(&self, bytes: Bytes, then: Option<(Bytes, u64)>) -> Push {
        let mut state = self.lock();
        if state.closing {
            return Push::Closed;
        }
        state.member = true;
        state.position = None;
        let mut depth = self.enqueue(&mut state, Entry::reply(bytes));
        if let Some((page, last_id)) = then {
            depth = self.enqueue(&mut state, Entry::page(page, last_id));
        }
        Push::Queued { depth }
    }

    /// Replaces the pending position update of a waiting client. Returns
    /// false once the client is a member or closing.
    pub fn set_position(&self, bytes: Bytes) -> bool {
        let mut state = self.lock();
        if state.closing || state.member {
            return false;
        }
        let was_idle = state.frames.is_empty() && state.position.is_none();
        state.position = Some(bytes);
        if was_idle {
            self.wake_writer(&state);
        }
        true
    }

    /// Queues the last frames (an `error`, a `bye`) and stops accepting more.
    /// With `discard_pending`, whatever was still queued is dropped first,
    /// and the writer drops the rest of a batch it is writing (see
    /// [`Discarded`]): a slow consumer or a client at shutdown gets its `bye`
    /// now, not after a backlog.
    pub fn close(&self, last: &[Bytes], discard_pending: bool) {
        let mut state = self.lock();
        if state.closing {
            return;
        }
        if discard_pending {
            state.frames.clear();
            state.queued = 0;
            state.bytes = state.in_flight;
            state.position = None;
            self.discarded.store(true, Ordering::Release);
        }
        for bytes in last {
            state.queued += 1;
            state.frames.push(Entry::reply(bytes.clone()));
        }
        state.closing = true;
        self.wake_writer(&state);
    }

    /// Whether the frames of `batch` that are not yet written have been
    /// dropped since it was taken.
    pub fn discarded(&self, batch: &Batch) -> Discarded<'_> {
        Discarded {
            flag: &self.discarded,
            armed: !batch.after_discard,
        }
    }

    /// Frames waiting to be written.
    pub fn depth(&self) -> usize {
        self.lock().queued
    }

    /// Moves everything queued into `batch`, waiting until there is something
    /// or the outbox is closing. Calling it again means the previous batch
    /// has been written: its bytes stop counting against `max_bytes`.
    pub async fn next_batch(&self, batch: &mut Batch) {
        while !self.take(batch) {
            self.wake.notified().await;
        }
    }

    /// Moves everything queued into `batch` without waiting; false when
    /// there is nothing to write and the outbox is open. Like
    /// [`Outbox::next_batch`], it means the previous batch has been written.
    pub(crate) fn take(&self, batch: &mut Batch) -> bool {
        self.note_written(batch);
        Self::recycle(batch);
        let mut state = self.lock();
        self.take_locked(&mut state, batch)
    }

    /// [`Outbox::take`] for the writer shard: `None`, taking nothing, when
    /// the connection's own task writes for it now.
    pub(crate) fn take_for_shard(&self, batch: &mut Batch) -> Option<bool> {
        let mut state = self.lock();
        // Checked first: the batch may be one the task has yet to finish.
        if state.owner != Owner::Shard {
            return None;
        }
        self.note_written(batch);
        Self::recycle(batch);
        Some(self.take_locked(&mut state, batch))
    }

    /// The entries of `batch` are written: remembers their last message.
    fn note_written(&self, batch: &Batch) {
        if let Some(id) = batch.entries.iter().map(Entry::last_id).max()
            && id > 0
        {
            self.written_id.fetch_max(id, Ordering::Relaxed);
        }
    }

    /// The id of the last `message` written to the socket (0: none).
    pub fn written_id(&self) -> u64 {
        self.written_id.load(Ordering::Relaxed)
    }

    /// Empties the batch for the next take, keeping a member's buffer.
    fn recycle(batch: &mut Batch) {
        if batch.member {
            batch.entries.clear();
            // Give back memory a burst made the batch grow to.
            if batch.entries.capacity() > SHRINK_ABOVE {
                batch.entries.shrink_to(KEPT_ENTRIES);
            }
        } else {
            // A queued client gets a position update now and then: it holds
            // no buffer between them. A member keeps its buffers, so room
            // delivery never allocates per recipient.
            batch.entries = Vec::new();
        }
    }

    fn take_locked(&self, state: &mut State, batch: &mut Batch) -> bool {
        state.bytes -= std::mem::take(&mut state.in_flight);
        // The batch is empty: the two buffers trade places.
        std::mem::swap(&mut batch.entries, &mut state.frames);
        state.queued = 0;
        // Drained below a quarter: the next episode gets its warning.
        if state.lagging == Lagging::Warned {
            state.lagging = Lagging::Armed;
        }
        // Everything queued is now in the batch, and held until the writer
        // comes back for more.
        state.in_flight = state.bytes;
        if let Some(position) = state.position.take() {
            batch.entries.push(Entry::reply(position));
        }
        if state.missed > 0 && !state.closing {
            // Every event dropped came after everything queued, so the gap
            // is reported after it.
            let gap = gap_frame(std::mem::take(&mut state.missed));
            batch.entries.push(Entry::event(gap));
        }
        // Give back memory a burst made the queue grow to, or all of it for
        // a queued client.
        if !state.member {
            state.frames = Vec::new();
        } else if state.frames.capacity() > SHRINK_ABOVE {
            state.frames.shrink_to(KEPT_ENTRIES);
        }
        batch.closing = state.closing;
        batch.member = state.member;
        batch.after_discard = self.discarded.load(Ordering::Acquire);
        !batch.entries.is_empty() || batch.closing
    }

    /// The last batch taken has been written: its bytes stop counting, and
    /// its entries (shared runs among them) are let go now rather than when
    /// the next batch is taken.
    pub(crate) fn written(&self, batch: &mut Batch) {
        self.note_written(batch);
        // The last batch of a burst is kept until the next one is taken,
        // which for an idle member may be never: shrink it now.
        Self::recycle(batch);
        let mut state = self.lock();
        state.bytes -= std::mem::take(&mut state.in_flight);
    }

    /// Puts the connection in the care of a writer shard: from now on,
    /// frames for it while it is idle wake the shard, not its task.
    pub(crate) fn attach(&self, sweeper: Weak<dyn Sweep>) {
        let mut state = self.lock();
        state.sweeper = Some(sweeper);
        state.owner = Owner::Shard;
        if !state.frames.is_empty() || state.position.is_some() || state.closing {
            self.wake_writer(&state);
        }
    }

    /// Makes the outbox a member's without a `welcome`, for tests of the
    /// member's write path.
    #[cfg(test)]
    pub(crate) fn set_member(&self) {
        self.lock().member = true;
    }

    /// Whether the shard writes for the connection now.
    #[cfg(test)]
    pub(crate) fn is_shards(&self) -> bool {
        self.lock().owner == Owner::Shard
    }

    /// Waits until the connection's own task has something to do (see
    /// [`Outbox::hand_to_task`]).
    pub(crate) async fn wait_for_task(&self) {
        self.wake.notified().await;
    }

    /// The shard found the socket full (or the outbox closing): the
    /// connection's own task writes until it has caught up.
    pub(crate) fn hand_to_task(&self) {
        self.lock().owner = Owner::Task;
        self.wake.notify_one();
    }

    /// The task has written everything: if nothing new is queued, the shard
    /// takes over again and true is returned; otherwise the task goes on.
    pub(crate) fn hand_to_shard(&self) -> bool {
        let mut state = self.lock();
        // What `take` would find nothing in.
        let idle = state.frames.is_empty()
            && state.position.is_none()
            && state.missed == 0
            && !state.closing;
        if idle && state.sweeper.is_some() {
            state.owner = Owner::Shard;
            return true;
        }
        false
    }
}

/// Tells a writer in the middle of a batch that the outbox was closed with
/// its pending frames dropped: the rest of the batch is dropped too, at the
/// next frame boundary (a frame begun is finished, or the stream would be
/// corrupt), so that the last frames (`bye`) go out next. A batch taken after
/// that close holds the last frames and is never cut.
#[derive(Debug, Clone, Copy)]
pub struct Discarded<'a> {
    flag: &'a AtomicBool,
    armed: bool,
}

impl Discarded<'_> {
    /// Whether the rest of the batch is to be dropped.
    pub fn now(&self) -> bool {
        self.armed && self.flag.load(Ordering::Acquire)
    }
}

fn gap_frame(missed: u64) -> Bytes {
    ServerMessage::Gap { missed }.to_frame()
}

#[cfg(test)]
mod tests;
