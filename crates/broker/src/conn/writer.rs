//! The writer: drains a connection's outbox into its transport.
//!
//! One writer task per connection takes everything queued at once
//! ([`Outbox::next_batch`]) and hands the batch to the transport's
//! [`FrameSink`]: a byte stream (TCP, TLS, QUIC) gets vectored writes, many
//! frames per system call; a message-framed duplex (WebSocket) gets one
//! message per frame, without the length prefix. Everything else (batching,
//! the write timeout, delivery metrics, the final shutdown) is the same for
//! every transport.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::outbox::{Batch, Discarded, Entry, Outbox};
use crate::telemetry::{LocalLatency, metrics};

/// Frames handed to the kernel per `writev` at most.
const MAX_IOVECS: usize = 128;

/// Longest wait for a transport to take its closing handshake.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// Where a connection's frames go. `write_timeout` bounds a wait for a
/// transport that accepts nothing (`None`: wait as long as it takes, the
/// `skip` policy's choice).
pub trait FrameSink: Send {
    /// Writes every entry, in order, unless `discarded` says the rest is to
    /// be dropped: then it stops at the next frame boundary. Returns how many
    /// entries were written whole.
    fn write_all<'a>(
        &'a mut self,
        entries: &'a [Entry],
        write_timeout: Option<Duration>,
        discarded: Discarded<'a>,
    ) -> impl Future<Output = Result<usize, WriteError>> + Send + 'a;

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
        write_timeout: Option<Duration>,
        discarded: Discarded<'a>,
    ) -> impl Future<Output = Result<usize, WriteError>> + Send + 'a {
        write_batch(&mut self.0, entries, write_timeout, discarded)
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
        write_timeout: Option<Duration>,
        discarded: Discarded<'_>,
    ) -> Result<usize, WriteError> {
        let send = async {
            let mut written = 0;
            for entry in entries {
                if discarded.now() {
                    break;
                }
                self.0
                    .feed(entry.bytes.slice(4..))
                    .await
                    .map_err(Into::into)?;
                written += 1;
            }
            self.0.flush().await.map_err(Into::into)?;
            Ok::<_, std::io::Error>(written)
        };
        Ok(match write_timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .map_err(|_| WriteError::Stalled(limit))??,
            None => send.await?,
        })
    }

    async fn finish(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_LIMIT, self.0.close()).await;
    }
}

/// Why the writer stopped before the outbox closed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("socket accepted no bytes for {0:?}")]
    Stalled(Duration),
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Drains `outbox` into `sink` until the outbox closes (then ends the
/// sending side) or the transport fails or stalls for `write_timeout`.
pub async fn run_writer<S: FrameSink>(
    outbox: &Outbox,
    mut sink: S,
    write_timeout: Option<Duration>,
) -> Result<(), WriteError> {
    let mut batch = Batch::default();
    let mut latency = LocalLatency::default();
    loop {
        outbox.next_batch(&mut batch).await;
        let discarded = outbox.discarded(&batch);
        let written = sink
            .write_all(&batch.entries, write_timeout, discarded)
            .await?;
        record_delivery(&batch.entries[..written], &mut latency);
        if batch.closing {
            sink.finish().await;
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
/// nothing, not a large batch that takes long to drain. Between system calls
/// it checks `discarded`: once set, it finishes the frame it is in the middle
/// of, if any, and stops. Returns how many entries were written whole.
async fn write_batch<W>(
    io: &mut W,
    entries: &[Entry],
    write_timeout: Option<Duration>,
    discarded: Discarded<'_>,
) -> Result<usize, WriteError>
where
    W: AsyncWrite + Unpin + Send,
{
    let mut entries = entries;
    let mut index = 0;
    let mut offset = 0;
    while index < entries.len() {
        if discarded.now() {
            if offset == 0 {
                break;
            }
            // Only the rest of the frame begun.
            entries = &entries[..=index];
        }
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
    Ok(index)
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
        let writer = run_writer(&outbox, ByteSink(write), Some(Duration::from_secs(1)));
        let size = std::mem::size_of_val(&writer);
        assert!(size < 512, "the writer's future is {size} bytes");
    }

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 3])
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
        run_writer(&outbox, ByteSink(client), Some(Duration::from_secs(5)))
            .await
            .unwrap();
        let out = reader.await.unwrap();
        assert_eq!(out.len(), 303);
        assert_eq!(&out[297..300], &[99, 99, 99]);
        assert_eq!(&out[300..], &[200, 200, 200]);
    }

    #[tokio::test]
    async fn a_discarding_close_cuts_the_batch_in_flight_at_a_frame_boundary() {
        let outbox = Outbox::new(1024);
        // Each write takes at most 5 bytes: the batch is written in pieces.
        let (client, mut server) = tokio::io::duplex(5);
        for n in 0..100 {
            outbox.push_event(frame(n), None, false);
        }
        let writer = run_writer(&outbox, ByteSink(client), None);
        let reader = async {
            let mut out = vec![0u8; 7];
            tokio::io::AsyncReadExt::read_exact(&mut server, &mut out)
                .await
                .unwrap();
            outbox.close(&[frame(200)], true);
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
                .await
                .unwrap();
            out
        };
        let (written, out) = tokio::join!(writer, reader);
        written.unwrap();
        assert_eq!(out.len() % 3, 0, "a frame was cut: {out:?}");
        let frames: Vec<&[u8]> = out.chunks(3).collect();
        assert!(frames.len() < 10, "the batch was not cut: {out:?}");
        for (n, f) in frames[..frames.len() - 1].iter().enumerate() {
            assert_eq!(*f, &[n as u8; 3], "{out:?}");
        }
        assert_eq!(frames[frames.len() - 1], &[200; 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_socket_times_out() {
        let outbox = Outbox::new(1024);
        let (client, _server) = tokio::io::duplex(4);
        outbox.push_event(frame(1), None, false);
        outbox.push_event(frame(2), None, false);
        let err = run_writer(&outbox, ByteSink(client), Some(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Stalled(_)));
    }

    #[tokio::test]
    async fn a_message_sink_gets_one_message_per_frame_without_prefix() {
        let outbox = Outbox::new(16);
        for frame in [&b"\0\0\0\x02ab"[..], b"\0\0\0\x01c"] {
            outbox.push_event(Bytes::copy_from_slice(frame), None, false);
        }
        outbox.close(&[], false);
        let mut got: Vec<Bytes> = Vec::new();
        let sink =
            MessageSink((&mut got).sink_map_err(|never| -> std::io::Error { match never {} }));
        run_writer(&outbox, sink, None).await.unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]
        );
    }
}
