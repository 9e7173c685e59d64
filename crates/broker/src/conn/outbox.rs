//! A connection's bounded outbound queue and the writer task that drains it.
//!
//! Producers (room delivery, the waitlist, the session itself) push encoded
//! frames without ever waiting: a push takes a short, uncontended lock and
//! wakes the writer only when the queue goes from empty to non-empty, so a busy
//! room costs one wake-up per batch, not one per message. The writer takes
//! everything queued at once and writes it with vectored writes, many frames
//! per system call (see [`super::writer`]). Every push is bounded; what happens on overflow is the
//! caller's policy (see [`Push`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anteroom_protocol::ServerMessage;
use bytes::Bytes;
use tokio::sync::Notify;

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

/// One frame on its way out, with what the writer reports about it.
#[derive(Debug)]
pub struct Entry {
    pub(crate) bytes: Bytes,
    /// When the `say` behind a `message` frame was read, for delivery latency.
    pub(crate) posted: Option<Instant>,
    /// Whether this is a room event (`message`, `joined`, `left`, `gap`),
    /// counted in `anteroom_messages_delivered_total`.
    pub(crate) event: bool,
}

impl Entry {
    /// The complete frame, length prefix included.
    pub fn frame(&self) -> &Bytes {
        &self.bytes
    }

    fn event(bytes: Bytes, posted: Option<Instant>) -> Self {
        Self {
            bytes,
            posted,
            event: true,
        }
    }

    fn reply(bytes: Bytes) -> Self {
        Self {
            bytes,
            posted: None,
            event: false,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Entry>,
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
}

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
    pub fn frames(&self) -> impl Iterator<Item = &Bytes> {
        self.entries.iter().map(|e| &e.bytes)
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
        state.bytes += entry.bytes.len();
        state.frames.push_back(entry);
        if was_idle {
            self.wake.notify_one();
        }
        state.frames.len()
    }

    /// Offers a room event (`message`, `joined`, `left`), shared by all members.
    ///
    /// With `skip` set, an event over the limit is dropped and remembered for
    /// the next `gap`; otherwise the caller must cut the connection off.
    pub fn push_event(&self, bytes: Bytes, posted: Option<Instant>, skip: bool) -> Push {
        let mut state = self.lock();
        if state.closing {
            return Push::Closed;
        }
        if state.frames.len() >= self.limit || self.over_bytes(&state, bytes.len()) {
            if skip {
                state.missed += 1;
                return Push::Skipped;
            }
            return Push::Overflow;
        }
        if state.missed > 0 {
            let gap = gap_frame(std::mem::take(&mut state.missed));
            self.enqueue(&mut state, Entry::event(gap, None));
        }
        let depth = self.enqueue(&mut state, Entry::event(bytes, posted));
        Push::Queued { depth }
    }

    /// Queues a direct reply (pong, users, error, ping). Replies are never
    /// skipped, but a client that keeps asking without reading overflows.
    pub fn push_reply(&self, bytes: Bytes) -> Push {
        let mut state = self.lock();
        if state.closing {
            return Push::Closed;
        }
        if state.frames.len() >= self.limit + REPLY_SLACK || self.over_bytes(&state, bytes.len()) {
            return Push::Overflow;
        }
        let depth = self.enqueue(&mut state, Entry::reply(bytes));
        Push::Queued { depth }
    }

    /// Queues the `welcome` and marks the connection a member: any pending
    /// position update is withdrawn so nothing `queued` follows the welcome.
    pub fn push_welcome(&self, bytes: Bytes) -> Push {
        let mut state = self.lock();
        if state.closing {
            return Push::Closed;
        }
        state.member = true;
        state.position = None;
        let depth = self.enqueue(&mut state, Entry::reply(bytes));
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
            self.wake.notify_one();
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
            state.bytes = state.in_flight;
            state.position = None;
            self.discarded.store(true, Ordering::Release);
        }
        for bytes in last {
            state.frames.push_back(Entry::reply(bytes.clone()));
        }
        state.closing = true;
        drop(state);
        self.wake.notify_one();
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
        self.lock().frames.len()
    }

    /// Moves everything queued into `batch`, waiting until there is something
    /// or the outbox is closing. Calling it again means the previous batch
    /// has been written: its bytes stop counting against `max_bytes`.
    pub async fn next_batch(&self, batch: &mut Batch) {
        if batch.member {
            batch.entries.clear();
            // Give back memory a burst made the batch grow to.
            if batch.entries.capacity() > 64 {
                batch.entries.shrink_to(16);
            }
        } else {
            // A queued client gets a position update now and then: it holds
            // no buffer between them. A member keeps its buffers, so room
            // delivery never allocates per recipient.
            batch.entries = Vec::new();
        }
        loop {
            {
                let mut state = self.lock();
                state.bytes -= std::mem::take(&mut state.in_flight);
                batch.entries.extend(state.frames.drain(..));
                // Everything queued is now in the batch, and held until the
                // writer comes back for more.
                state.in_flight = state.bytes;
                if let Some(position) = state.position.take() {
                    batch.entries.push(Entry::reply(position));
                }
                if state.missed > 0 && !state.closing {
                    // Every event dropped came after everything queued, so the
                    // gap is reported after it.
                    let gap = gap_frame(std::mem::take(&mut state.missed));
                    batch.entries.push(Entry::event(gap, None));
                }
                // Give back memory a burst made the queue grow to, or all
                // of it for a queued client.
                if !state.member {
                    state.frames = VecDeque::new();
                } else if state.frames.capacity() > 64 {
                    state.frames.shrink_to(16);
                }
                batch.closing = state.closing;
                batch.member = state.member;
                batch.after_discard = self.discarded.load(Ordering::Acquire);
            }
            if !batch.entries.is_empty() || batch.closing {
                return;
            }
            self.wake.notified().await;
        }
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
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 3])
    }

    #[tokio::test]
    async fn batches_everything_queued_in_order() {
        let outbox = Outbox::new(8);
        for n in 0..5 {
            assert!(matches!(
                outbox.push_event(frame(n), None, false),
                Push::Queued { .. }
            ));
        }
        let mut batch = Batch::default();
        outbox.next_batch(&mut batch).await;
        let firsts: Vec<u8> = batch.entries.iter().map(|e| e.bytes[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn overflow_and_skip() {
        let outbox = Outbox::new(2);
        outbox.push_event(frame(0), None, false);
        outbox.push_event(frame(1), None, false);
        assert_eq!(outbox.push_event(frame(2), None, false), Push::Overflow);
        assert_eq!(outbox.push_event(frame(2), None, true), Push::Skipped);
        assert_eq!(outbox.push_event(frame(3), None, true), Push::Skipped);
        assert_eq!(outbox.lock().missed, 2);
    }

    #[test]
    fn one_frame_over_the_byte_limit_fits_an_empty_queue() {
        let outbox = Outbox::with_byte_limit(100, 2);
        assert!(matches!(
            outbox.push_event(frame(0), None, false),
            Push::Queued { .. }
        ));
        assert_eq!(outbox.push_event(frame(1), None, false), Push::Overflow);
    }

    #[test]
    fn the_byte_limit_counts_as_falling_behind() {
        let outbox = Outbox::with_byte_limit(100, 7);
        assert!(matches!(
            outbox.push_event(frame(0), None, false),
            Push::Queued { .. }
        ));
        assert!(matches!(
            outbox.push_event(frame(1), None, false),
            Push::Queued { .. }
        ));
        assert_eq!(outbox.push_event(frame(2), None, false), Push::Overflow);
        assert_eq!(outbox.push_event(frame(2), None, true), Push::Skipped);
    }

    #[tokio::test]
    async fn gap_follows_what_was_queued_before_the_drop() {
        let outbox = Outbox::new(1);
        outbox.push_event(frame(0), None, true);
        outbox.push_event(frame(1), None, true);
        outbox.push_event(frame(2), None, true);
        let mut batch = Batch::default();
        outbox.next_batch(&mut batch).await;
        assert_eq!(batch.entries.len(), 2);
        assert_eq!(batch.entries[0].bytes[0], 0);
        let gap = rmpv::decode::read_value(&mut &batch.entries[1].bytes[4..]).unwrap();
        assert_eq!(gap["missed"].as_u64(), Some(2));
    }

    #[tokio::test]
    async fn welcome_withdraws_pending_position() {
        let outbox = Outbox::new(4);
        assert!(outbox.set_position(frame(9)));
        outbox.push_welcome(frame(1));
        assert!(!outbox.set_position(frame(8)));
        let mut batch = Batch::default();
        outbox.next_batch(&mut batch).await;
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.entries[0].bytes[0], 1);
    }

    #[tokio::test]
    async fn position_updates_are_conflated() {
        let outbox = Outbox::new(4);
        for n in 0..10 {
            outbox.set_position(frame(n));
        }
        let mut batch = Batch::default();
        outbox.next_batch(&mut batch).await;
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.entries[0].bytes[0], 9);
    }

    #[tokio::test]
    async fn the_byte_cap_covers_the_batch_being_written() {
        // 30 bytes: ten 3-byte frames.
        let outbox = Outbox::with_byte_limit(1000, 30);
        let mut held = 0;
        while let Push::Queued { .. } = outbox.push_event(frame(0), None, true) {
            held += 3;
        }
        assert_eq!(held, 30);
        // The writer takes everything; until it has written it, those bytes
        // are still held and nothing more fits.
        let mut batch = Batch::default();
        outbox.next_batch(&mut batch).await;
        while let Push::Queued { .. } = outbox.push_event(frame(1), None, true) {
            held += 3;
        }
        assert!(held <= 30 + 3, "{held} bytes held under a cap of 30");
        // Asking for the next batch means the last one was written.
        assert!(
            futures_util::FutureExt::now_or_never(outbox.next_batch(&mut batch)).is_some(),
            "the gap for the skipped frames is ready at once"
        );
        assert!(matches!(
            outbox.push_event(frame(2), None, true),
            Push::Queued { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_held_by_queue_and_batch_never_exceed_the_cap_and_a_frame() {
        use crate::conn::writer::{ByteSink, run_writer};
        const CAP: usize = 300;
        const PIPE: usize = 64;
        let outbox = std::sync::Arc::new(Outbox::with_byte_limit(100_000, CAP));
        // A client that never reads: the pipe takes PIPE bytes, then nothing.
        let (client, _server) = tokio::io::duplex(PIPE);
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { run_writer(&outbox, ByteSink(client), None).await }
        });
        let mut accepted = 0;
        for round in 0..10 {
            while let Push::Queued { .. } = outbox.push_event(frame(round), None, true) {
                accepted += 3;
            }
            // Let the writer take what is queued and block on the pipe.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let held = accepted - PIPE;
        assert!(held <= CAP + 3, "{held} bytes held under a cap of {CAP}");
        writer.abort();
    }
}
