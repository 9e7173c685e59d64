//! A connection's bounded outbound queue and the writer task that drains it.
//!
//! Producers (room delivery, the waitlist, the session itself) push encoded
//! frames without ever waiting: a push takes a short, uncontended lock and
//! wakes the writer only when the queue goes from empty to non-empty, so a busy
//! room costs one wake-up per batch, not one per message. The writer takes
//! everything queued at once and writes it with vectored writes, many frames
//! per system call. Every push is bounded; what happens on overflow is the
//! caller's policy (see [`Push`]).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::telemetry::{LocalLatency, metrics};
use anteroom_protocol::ServerMessage;

/// Frames handed to the kernel per `writev` at most.
const MAX_IOVECS: usize = 128;

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

#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    /// When the `say` behind a `message` frame was read, for delivery latency.
    posted: Option<Instant>,
    /// Whether this is a room event (`message`, `joined`, `left`, `gap`),
    /// counted in `anteroom_messages_delivered_total`.
    event: bool,
}

impl Entry {
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
    /// Bytes in `frames`.
    bytes: usize,
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
}

/// What the writer took in one go.
#[derive(Debug, Default)]
pub struct Batch {
    entries: Vec<Entry>,
    closing: bool,
    /// The outbox was a member's when this batch was taken.
    member: bool,
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every critical section is a few field updates), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `len` more bytes would take the queue past `max_bytes`. One
    /// frame into an empty queue always fits: a single large message is
    /// not a member falling behind.
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
    /// With `discard_pending`, whatever was still queued is dropped first: a
    /// slow consumer gets its `bye` now, not after a backlog it cannot take.
    pub fn close(&self, last: &[Bytes], discard_pending: bool) {
        let mut state = self.lock();
        if state.closing {
            return;
        }
        if discard_pending {
            state.frames.clear();
            state.bytes = 0;
            state.position = None;
        }
        for bytes in last {
            state.frames.push_back(Entry::reply(bytes.clone()));
        }
        state.closing = true;
        drop(state);
        self.wake.notify_one();
    }

    /// Frames waiting to be written.
    pub fn depth(&self) -> usize {
        self.lock().frames.len()
    }

    /// Moves everything queued into `batch`, waiting until there is something
    /// or the outbox is closing.
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
                batch.entries.extend(state.frames.drain(..));
                state.bytes = 0;
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
            }
            if !batch.entries.is_empty() || batch.closing {
                return;
            }
            self.wake.notified().await;
        }
    }
}

fn gap_frame(missed: u64) -> Bytes {
    ServerMessage::Gap { missed }.to_frame()
}

/// Why the writer stopped before the outbox closed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("socket accepted no bytes for {0:?}")]
    Stalled(Duration),
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Drains `outbox` into `io` until the outbox closes (then shuts the sending
/// side down) or the socket fails or stalls for `write_timeout` (`None`: wait
/// as long as it takes, the `skip` policy's choice).
pub async fn run_writer<W>(
    outbox: &Outbox,
    mut io: W,
    write_timeout: Option<Duration>,
) -> Result<(), WriteError>
where
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch::default();
    let mut latency = LocalLatency::default();
    loop {
        outbox.next_batch(&mut batch).await;
        write_batch(&mut io, &batch.entries, write_timeout).await?;
        record_delivery(&batch.entries, &mut latency);
        if batch.closing {
            // Send FIN so the client reads everything before the close.
            let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            return Ok(());
        }
    }
}

fn record_delivery(entries: &[Entry], latency: &mut LocalLatency) {
    let m = metrics();
    let now = Instant::now();
    let mut events = 0u64;
    for entry in entries {
        events += u64::from(entry.event);
        if let Some(posted) = entry.posted {
            latency.record(now.saturating_duration_since(posted));
        }
    }
    m.delivery_latency.publish(latency);
    if events > 0 {
        m.delivered.increment(events);
    }
}

/// Writes every entry, as many per `writev` as the kernel takes. Each system
/// call gets its own deadline: the timeout measures a socket that accepts
/// nothing, not a large batch that takes long to drain.
async fn write_batch<W>(
    io: &mut W,
    entries: &[Entry],
    write_timeout: Option<Duration>,
) -> Result<(), WriteError>
where
    W: AsyncWrite + Unpin,
{
    let mut index = 0;
    let mut offset = 0;
    while index < entries.len() {
        let (first, skip) = (index, offset);
        // Usually the socket takes the bytes at once: one poll, nothing
        // allocated, no timer. Only a full socket gets a timer, and that
        // wait lives on the heap, so an idle connection's writer stays small.
        let ready = futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| {
            poll_write_entries(&mut *io, cx, entries, first, skip)
        }));
        let mut written = match ready {
            Some(result) => result?,
            None => {
                Box::pin(wait_and_write(
                    &mut *io,
                    entries,
                    first,
                    skip,
                    write_timeout,
                ))
                .await?
            }
        };
        if written == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        while written > 0 {
            let remaining = entries[index].bytes.len() - offset;
            if written >= remaining {
                written -= remaining;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    Ok(())
}

/// One `writev` of `entries[first..]`, the first `skip` bytes of the first
/// entry already written. The slice array is built on the thread's stack on
/// each poll, so it is neither part of any future nor allocated.
fn poll_write_entries<W>(
    io: &mut W,
    cx: &mut std::task::Context<'_>,
    entries: &[Entry],
    first: usize,
    skip: usize,
) -> std::task::Poll<std::io::Result<usize>>
where
    W: AsyncWrite + Unpin,
{
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    for (i, entry) in entries[first..].iter().take(MAX_IOVECS).enumerate() {
        let start = if i == 0 { skip } else { 0 };
        slices[count] = IoSlice::new(&entry.bytes[start..]);
        count += 1;
    }
    Pin::new(io).poll_write_vectored(cx, &slices[..count])
}

/// Waits for a full socket to take more, within `write_timeout`.
async fn wait_and_write<W>(
    io: &mut W,
    entries: &[Entry],
    first: usize,
    skip: usize,
    write_timeout: Option<Duration>,
) -> Result<usize, WriteError>
where
    W: AsyncWrite + Unpin,
{
    let write = std::future::poll_fn(|cx| poll_write_entries(&mut *io, cx, entries, first, skip));
    Ok(match write_timeout {
        Some(limit) => tokio::time::timeout(limit, write)
            .await
            .map_err(|_| WriteError::Stalled(limit))??,
        None => write.await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_writer_stays_small() {
        // Every connection holds a writer future for its whole life: neither
        // the `writev` slice array (2 KiB) nor a write timer may be part of it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_read, write) = stream.into_split();
        let outbox = Outbox::new(16);
        let writer = run_writer(&outbox, write, Some(Duration::from_secs(1)));
        let size = std::mem::size_of_val(&writer);
        assert!(size < 512, "the writer's future is {size} bytes");
    }

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
    async fn writer_writes_all_bytes_then_shuts_down() {
        let outbox = Outbox::new(1024);
        let (client, mut server) = tokio::io::duplex(7); // tiny pipe: many partial writes
        for n in 0..100 {
            outbox.push_event(frame(n), None, false);
        }
        outbox.close(&[frame(200)], false);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
                .await
                .unwrap();
            out
        });
        run_writer(&outbox, client, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        let out = reader.await.unwrap();
        assert_eq!(out.len(), 303);
        assert_eq!(&out[297..300], &[99, 99, 99]);
        assert_eq!(&out[300..], &[200, 200, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_socket_times_out() {
        let outbox = Outbox::new(1024);
        let (client, _server) = tokio::io::duplex(4);
        outbox.push_event(frame(1), None, false);
        outbox.push_event(frame(2), None, false);
        let err = run_writer(&outbox, client, Some(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Stalled(_)));
    }
}
