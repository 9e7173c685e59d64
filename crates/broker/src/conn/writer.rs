//! The writer: drains a connection's outbox into its transport.
//!
//! One writer task per connection takes everything queued at once
//! ([`Outbox::next_batch`]) and hands the batch to the transport's
//! [`FrameSink`]: a byte stream (TCP, TLS, QUIC) gets vectored writes, many
//! frames per system call; a message-framed duplex (WebSocket) gets one
//! message per frame, without the length prefix. Everything else (batching,
//! the progress deadline, delivery metrics, the final shutdown) is the same
//! for every transport.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::entry::Entry;
use super::outbox::{Batch, Discarded, Outbox};
use crate::telemetry::{LocalLatency, metrics};

/// Frames handed to the kernel per `writev` at most.
const MAX_IOVECS: usize = 128;

/// Slices of the small array most writes need.
const FEW_IOVECS: usize = 8;

/// Longest wait for a transport to take its closing handshake.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// How much a transport that makes the writer wait must take within each
/// `write_timeout` (or what is left of the batch, if less). Counting bytes
/// rather than system calls: a client reading one byte every few seconds
/// makes every call succeed and would otherwise never time out, while
/// holding its whole outbox.
pub const MIN_PROGRESS: usize = 64 * 1024;

/// How far into a batch a writer has got: entries written whole, and bytes
/// written of the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub index: usize,
    pub offset: usize,
}

/// Where a connection's frames go. `write_timeout` is the progress deadline
/// (see [`Window`]; `None`: wait as long as it takes).
pub trait FrameSink: Send {
    /// Writes every entry from `from` on, in order, unless `discarded` says
    /// the rest is to be dropped: then it stops at the next frame boundary.
    /// Returns how many entries of the batch are written whole.
    fn write_all<'a>(
        &'a mut self,
        entries: &'a [Entry],
        from: Position,
        write_timeout: Option<Duration>,
        discarded: Discarded<'a>,
    ) -> impl Future<Output = Result<usize, WriteError>> + Send + 'a;

    /// Writes what the transport takes without waiting, from `at` on,
    /// moving `at`; true when everything is written. A writer shard sweeps
    /// connections with this, so it must never wait; a transport that cannot
    /// say leaves every write to the connection's task (false, nothing
    /// written).
    fn try_write(
        &mut self,
        entries: &[Entry],
        at: &mut Position,
        discarded: Discarded<'_>,
    ) -> Result<bool, WriteError> {
        let _ = (entries, at, discarded);
        Ok(false)
    }

    /// Ends the sending side after the last frame, so the client reads
    /// everything before the close.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// A byte stream carrying length-prefixed frames as they are encoded.
#[derive(Debug)]
pub struct ByteSink<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> FrameSink for ByteSink<W> {
    fn write_all<'a>(
        &'a mut self,
        entries: &'a [Entry],
        from: Position,
        write_timeout: Option<Duration>,
        discarded: Discarded<'a>,
    ) -> impl Future<Output = Result<usize, WriteError>> + Send + 'a {
        // Not an `async fn`: its own copy of the arguments would grow every
        // connection's writer future.
        write_batch(&mut self.0, entries, from, write_timeout, discarded)
    }

    fn try_write(
        &mut self,
        entries: &[Entry],
        at: &mut Position,
        discarded: Discarded<'_>,
    ) -> Result<bool, WriteError> {
        // Polled once with a waker that does nothing: a full socket answers
        // `Pending` and the connection's task, which waits properly, takes
        // over from `at`.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while at.index < entries.len() {
            if discarded.now() {
                return Ok(false);
            }
            match poll_write_entries(&mut self.0, &mut cx, entries, at.index, at.offset) {
                Poll::Ready(written) => advance(entries, &mut at.index, &mut at.offset, written?)?,
                Poll::Pending => return Ok(false),
            }
        }
        // A transport that buffers (TLS) may still hold the end of the
        // batch; until it is flushed the task takes over.
        flushed_now(Pin::new(&mut self.0).poll_flush(&mut cx))
    }

    async fn finish(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_LIMIT, self.0.shutdown()).await;
    }
}

/// A message-framed duplex: each frame becomes one message holding the
/// MessagePack map alone (the length prefix is sliced off, not copied).
#[derive(Debug)]
pub struct MessageSink<S>(pub S);

impl<S> FrameSink for MessageSink<S>
where
    S: Sink<Bytes> + Unpin + Send,
    S::Error: Into<std::io::Error>,
{
    async fn write_all(
        &mut self,
        entries: &[Entry],
        from: Position,
        write_timeout: Option<Duration>,
        discarded: Discarded<'_>,
    ) -> Result<usize, WriteError> {
        let mut window = Window::new(write_timeout);
        let mut written = from.index;
        // A shard's `try_write` may have sent the first frames of an entry:
        // `from.offset` is where the next one starts.
        let mut skip = from.offset;
        'entries: for entry in &entries[from.index..] {
            for frame in entry.each_frame() {
                if skip > 0 {
                    skip = skip.saturating_sub(frame.len());
                    continue;
                }
                if discarded.now() {
                    break 'entries;
                }
                let message = frame.slice(4..);
                let len = message.len();
                window
                    .wait(self.0.feed(message))
                    .await?
                    .map_err(Into::into)?;
                window.progress(len);
            }
            written += 1;
        }
        window.wait(self.0.flush()).await?.map_err(Into::into)?;
        Ok(written)
    }

    fn try_write(
        &mut self,
        entries: &[Entry],
        at: &mut Position,
        discarded: Discarded<'_>,
    ) -> Result<bool, WriteError> {
        // As for a byte stream, polled once with a waker that does nothing;
        // `at.offset` counts the bytes of the entry's frames already sent,
        // which always end on a frame.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while at.index < entries.len() {
            let mut start = 0;
            for frame in entries[at.index].each_frame() {
                let len = frame.len();
                if start < at.offset {
                    start += len;
                    continue;
                }
                if discarded.now() {
                    return Ok(false);
                }
                match Pin::new(&mut self.0).poll_ready(&mut cx) {
                    Poll::Ready(ready) => ready.map_err(|e| WriteError::Io(e.into()))?,
                    Poll::Pending => return Ok(false),
                }
                Pin::new(&mut self.0)
                    .start_send(frame.slice(4..))
                    .map_err(|e| WriteError::Io(e.into()))?;
                start += len;
                at.offset = start;
            }
            at.index += 1;
            at.offset = 0;
        }
        flushed_now(
            Pin::new(&mut self.0)
                .poll_flush(&mut cx)
                .map_err(Into::into),
        )
    }

    async fn finish(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_LIMIT, self.0.close()).await;
    }
}

/// Why the writer stopped before the outbox closed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("socket took less than {MIN_PROGRESS} bytes in {0:?}")]
    Stalled(Duration),
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Drains `outbox` into `sink` until the outbox closes (then ends the
/// sending side) or the transport fails or makes too little progress within
/// `write_timeout` (see [`Window`]).
pub async fn run_writer<S: FrameSink>(
    outbox: &Outbox,
    mut sink: S,
    write_timeout: Option<Duration>,
) -> Result<(), WriteError> {
    let mut batch = Batch::default();
    let mut tally = Tally::default();
    loop {
        outbox.next_batch(&mut batch).await;
        let discarded = outbox.discarded(&batch);
        let written = sink
            .write_all(
                &batch.entries,
                Position::default(),
                write_timeout,
                discarded,
            )
            .await?;
        tally.count(&batch.entries[..written]);
        tally.publish();
        if batch.closing {
            sink.finish().await;
            return Ok(());
        }
    }
}

/// Room events written and their delivery latency, added up over a batch
/// or a sweep and published once: the delivered counter is shared by every
/// writer, and bumping it per connection would make the cores fight over it.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    latency: LocalLatency,
    events: u64,
    /// The time of recent writes, read again every [`CLOCK_REUSE`] of them.
    now: Option<Instant>,
    reads: u32,
}

/// Writes that share one reading of the clock. A sweep writes a connection
/// every few microseconds; reading the clock for each cost a tenth of the
/// sweep, and the latency buckets are far coarser than 32 writes.
const CLOCK_REUSE: u32 = 32;

impl Tally {
    /// Counts `entries`, just written.
    pub(crate) fn count(&mut self, entries: &[Entry]) {
        for entry in entries {
            self.events += entry.events();
            let posted = entry.posted();
            if !posted.is_empty() {
                let now = self.now();
                for posted in posted {
                    self.latency.record(now.saturating_duration_since(*posted));
                }
            }
        }
    }

    fn now(&mut self) -> Instant {
        self.reads += 1;
        match self.now {
            Some(now) if self.reads < CLOCK_REUSE => now,
            _ => {
                self.reads = 0;
                *self.now.insert(Instant::now())
            }
        }
    }

    /// Publishes what was counted since the last call.
    pub(crate) fn publish(&mut self) {
        let m = metrics();
        m.delivery_latency.publish(&mut self.latency);
        if self.events > 0 {
            m.delivered.increment(std::mem::take(&mut self.events));
        }
        // The next batch or sweep reads the clock afresh.
        self.now = None;
    }
}

/// The progress deadline of one batch. The window opens when the transport
/// first makes the writer wait; within `write_timeout` it must take
/// [`MIN_PROGRESS`] bytes or the rest of the batch. Each time it takes
/// [`MIN_PROGRESS`], a new window starts. A batch the transport takes at
/// once never arms the timer, so the common path costs nothing.
#[derive(Debug)]
struct Window {
    limit: Option<Duration>,
    /// Armed on the first wait; on the heap so that an idle writer, whose
    /// future holds this, stays small.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes taken since the window opened.
    taken: usize,
}

impl Window {
    fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            deadline: None,
            taken: 0,
        }
    }

    /// Runs `work`, failing with [`WriteError::Stalled`] if the window
    /// closes first. Work that is ready at once does not open a window.
    async fn wait<F: Future>(&mut self, work: F) -> Result<F::Output, WriteError> {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            let Some(limit) = self.limit else {
                return Poll::Pending;
            };
            let deadline = self
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(WriteError::Stalled(limit))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Counts `bytes` taken by the transport; enough of them start a new
    /// window.
    fn progress(&mut self, bytes: usize) {
        let (Some(limit), Some(deadline)) = (self.limit, self.deadline.as_mut()) else {
            return;
        };
        self.taken += bytes;
        if self.taken >= MIN_PROGRESS {
            self.taken = 0;
            deadline.as_mut().reset(tokio::time::Instant::now() + limit);
        }
    }
}

/// Writes every entry, as many per `writev` as the kernel takes, under the
/// progress deadline once the socket makes it wait. Between system calls it
/// checks `discarded`: once set, it finishes the frame it is in the middle
/// of, if any, and stops. Returns how many entries were written whole.
async fn write_batch<W>(
    io: &mut W,
    entries: &[Entry],
    from: Position,
    write_timeout: Option<Duration>,
    discarded: Discarded<'_>,
) -> Result<usize, WriteError>
where
    W: AsyncWrite + Unpin + Send,
{
    let Position {
        mut index,
        mut offset,
    } = from;
    while index < entries.len() {
        if discarded.now() {
            // Rare: on the heap, like a slow write.
            return Box::pin(async move {
                finish_frame(io, &entries[index], offset, write_timeout).await?;
                flush(io, write_timeout).await?;
                Ok(index)
            })
            .await;
        }
        let (first, skip) = (index, offset);
        // Usually the socket takes the bytes at once: one poll, nothing
        // allocated, no timer. Only a full socket gets a deadline, and the
        // rest of the batch is written on the heap, so an idle connection's
        // writer stays small.
        let ready = futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| {
            poll_write_entries(&mut *io, cx, entries, first, skip)
        }));
        match ready {
            Some(result) => advance(entries, &mut index, &mut offset, result?)?,
            None => {
                return Box::pin(async move {
                    let written =
                        write_slowly(io, entries, index, offset, write_timeout, discarded).await?;
                    flush(io, write_timeout).await?;
                    Ok(written)
                })
                .await;
            }
        }
    }
    flush(io, write_timeout).await?;
    Ok(index)
}

/// What a sweep's last flush says: everything is out (`true`), or the
/// connection's task must finish it (`false`).
fn flushed_now(flushed: Poll<std::io::Result<()>>) -> Result<bool, WriteError> {
    match flushed {
        Poll::Ready(result) => result.map(|()| true).map_err(WriteError::Io),
        Poll::Pending => Ok(false),
    }
}

/// Flushes what a transport buffers (TLS), or the end of a batch would wait
/// for the next one. A plain socket is ready at once, without a timer.
async fn flush<W: AsyncWrite + Unpin + Send>(
    io: &mut W,
    write_timeout: Option<Duration>,
) -> Result<(), WriteError> {
    let ready = futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| {
        Pin::new(&mut *io).poll_flush(cx)
    }));
    match ready {
        Some(flushed) => Ok(flushed?),
        None => Ok(Box::pin(Window::new(write_timeout).wait(io.flush())).await??),
    }
}

/// Writes the rest of a batch to a socket that has made the writer wait,
/// under the progress deadline.
async fn write_slowly<W>(
    io: &mut W,
    entries: &[Entry],
    mut index: usize,
    mut offset: usize,
    write_timeout: Option<Duration>,
    discarded: Discarded<'_>,
) -> Result<usize, WriteError>
where
    W: AsyncWrite + Unpin,
{
    let mut window = Window::new(write_timeout);
    while index < entries.len() {
        if discarded.now() {
            return finish_frame(io, &entries[index], offset, write_timeout)
                .await
                .map(|()| index);
        }
        let (first, skip) = (index, offset);
        let write =
            std::future::poll_fn(|cx| poll_write_entries(&mut *io, cx, entries, first, skip));
        let written = window.wait(write).await??;
        advance(entries, &mut index, &mut offset, written)?;
        window.progress(written);
    }
    Ok(index)
}

/// After a discard, writes the rest of the frame begun at `offset` into
/// `entry` (nothing if none was begun), so the stream stays whole and the
/// last frames can follow.
async fn finish_frame<W>(
    io: &mut W,
    entry: &Entry,
    offset: usize,
    write_timeout: Option<Duration>,
) -> Result<(), WriteError>
where
    W: AsyncWrite + Unpin,
{
    if offset == 0 {
        return Ok(());
    }
    let rest = &entry.bytes()[offset..entry.end_of_frame_at(offset)];
    let mut window = Window::new(write_timeout);
    let mut at = 0;
    while at < rest.len() {
        let written = window.wait(io.write(&rest[at..])).await??;
        if written == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        at += written;
        window.progress(written);
    }
    Ok(())
}

/// Moves the write position (`index`, `offset` into that entry) past
/// `written` bytes.
fn advance(
    entries: &[Entry],
    index: &mut usize,
    offset: &mut usize,
    mut written: usize,
) -> Result<(), WriteError> {
    if written == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
    }
    while written > 0 {
        let remaining = entries[*index].bytes().len() - *offset;
        if written >= remaining {
            written -= remaining;
            *index += 1;
            *offset = 0;
        } else {
            *offset += written;
            written = 0;
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
    // Usually a shared run and a reply or two: a small array then, rather
    // than clearing room for `MAX_IOVECS` on every write.
    if entries.len() - first <= FEW_IOVECS {
        poll_write_slices::<W, FEW_IOVECS>(io, cx, entries, first, skip)
    } else {
        poll_write_slices::<W, MAX_IOVECS>(io, cx, entries, first, skip)
    }
}

fn poll_write_slices<W, const N: usize>(
    io: &mut W,
    cx: &mut std::task::Context<'_>,
    entries: &[Entry],
    first: usize,
    skip: usize,
) -> std::task::Poll<std::io::Result<usize>>
where
    W: AsyncWrite + Unpin,
{
    let mut slices = [IoSlice::new(&[]); N];
    let mut count = 0;
    for (i, entry) in entries[first..].iter().take(N).enumerate() {
        let start = if i == 0 { skip } else { 0 };
        slices[count] = IoSlice::new(&entry.bytes()[start..]);
        count += 1;
    }
    Pin::new(io).poll_write_vectored(cx, &slices[..count])
}

#[cfg(test)]
mod tests;
