//! What the members receive, read the same lean way on every broker: one
//! task per connection reads raw bytes into a reused buffer, a minimal
//! parser per protocol ([`super::wire`]) finds the frames, and only the
//! stamp at the head of a message's payload is decoded: its round and the
//! time it was due. The load generator then costs about the same CPU per
//! delivery whichever broker it measures, so the brokers' figures differ by
//! what the brokers do. The reader takes any byte stream: a TCP socket's
//! reading half, or, over TLS and QUIC, the decrypted stream, read the same
//! way; over WebSocket, the TCP socket after the upgrade, its frames
//! found by a parser of their own.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::wire::{Frame, MAX_FRAME, MAX_LINE, NATS_PONG, Wire, WireError};
use crate::lock;
use anteroom_client::protocol::ServerMessage;

/// What each member's reader has seen in the current round.
///
/// Latencies are appended to a plain vector and merged into one histogram
/// after the round: a histogram per member (hundreds of KiB each, touched at
/// random) cost the load generator a cache miss per delivery, CPU taken from
/// the broker it measures on the same machine.
pub(super) struct ReaderStats {
    pub(super) round: u32,
    pub(super) latency_us: Vec<u32>,
    pub(super) count: u64,
}

impl ReaderStats {
    pub(super) fn new() -> Self {
        Self {
            round: u32::MAX,
            latency_us: Vec::new(),
            count: 0,
        }
    }

    /// Counts a received message of the current round and its latency,
    /// `now_ns` after the epoch; other text is ignored.
    fn record(&mut self, payload: &[u8], now_ns: u64) {
        let Some((round, due_ns)) = parse_stamp(payload) else {
            return;
        };
        if self.round == round {
            let latency_us = now_ns.saturating_sub(due_ns) / 1000;
            self.count += 1;
            self.latency_us
                .push(u32::try_from(latency_us.max(1)).unwrap_or(u32::MAX));
        }
    }
}

/// A connection's read buffer: allocated once, compacted after each read,
/// doubled only while one frame does not fit, and never beyond
/// [`Inbox::CAP`], which the parsers' own limits keep out of reach.
pub(super) struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Inbox {
    /// The initial size: several messages per read at high rates, small
    /// enough for thousands of members.
    const INITIAL: usize = 8 * 1024;
    /// The largest a buffer may grow: one frame of [`MAX_FRAME`] bytes and
    /// its header line.
    const CAP: usize = MAX_FRAME + MAX_LINE + 16;

    /// A buffer holding `leftover`, bytes already read from the connection
    /// (anteroom's join reads ahead).
    pub(super) fn new(leftover: &[u8]) -> Self {
        let mut buf = vec![0; Self::INITIAL.max(leftover.len())];
        buf[..leftover.len()].copy_from_slice(leftover);
        Self {
            buf,
            start: 0,
            end: leftover.len(),
        }
    }

    /// The next complete frame in the buffer, taken out of it.
    pub(super) fn next(&mut self, wire: Wire) -> Result<Option<Frame<'_>>, WireError> {
        match wire.parse(&self.buf[self.start..self.end])? {
            Some((frame, took)) => {
                self.start += took;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Room for the next read, after the unread bytes (moved to the front).
    pub(super) fn spare(&mut self) -> Result<&mut [u8], WireError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= Self::CAP {
                return Err(WireError::TooLong);
            }
            self.buf.resize((self.buf.len() * 2).min(Self::CAP), 0);
        }
        Ok(&mut self.buf[self.end..])
    }

    /// Marks `n` bytes of [`Inbox::spare`] as read.
    pub(super) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

/// Whether a connection's subscription is in place, or why it ended first.
pub(super) type Ready = oneshot::Sender<Result<(), String>>;

/// One connection's reading side, for a member or for a publisher (whose
/// reader only drains replies and answers pings), over any byte stream: a
/// TCP socket's halves unless told otherwise.
pub(super) struct Reader<R = OwnedReadHalf, W = OwnedWriteHalf> {
    pub(super) wire: Wire,
    pub(super) read: R,
    /// Where the replies go (NATS' `CONNECT` and `PONG`, the `pong` maps
    /// of anteroom over WebSocket); `None` when the protocol owes none
    /// (anteroom's server pings are off in the bench; over TCP, TLS and
    /// QUIC a member that is sent one would not answer it).
    pub(super) write: Option<Arc<tokio::sync::Mutex<W>>>,
    /// Sent once, on the server's first greeting.
    pub(super) on_greeting: &'static [u8],
    /// Told when the subscription is in place, or why it never was.
    pub(super) ready: Option<Ready>,
    /// Where messages are counted; `None` on a publisher's connection.
    pub(super) stats: Option<Arc<Mutex<ReaderStats>>>,
    pub(super) epoch: Instant,
}

impl<R, W> Reader<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Runs the reader in its own task until the connection ends. An error
    /// before the subscription is in place goes to `ready`; after it, the
    /// member just stops counting, which the delivered ratio shows.
    pub(super) fn spawn(mut self, inbox: Inbox) {
        tokio::spawn(async move {
            let result = self.run(inbox).await;
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(match result {
                    Ok(()) => "the server closed the connection".to_string(),
                    Err(error) => format!("{error:#}"),
                }));
            }
        });
    }

    async fn run(&mut self, mut inbox: Inbox) -> anyhow::Result<()> {
        let mut greeted = false;
        // Answers to anteroom's `ping` maps (over WebSocket), rare.
        let mut answers = Vec::new();
        loop {
            // One clock reading per read: every frame in it had arrived.
            let now_ns = self.epoch.elapsed().as_nanos() as u64;
            let (mut greet, mut pongs, mut closed) = (false, 0, false);
            {
                // One lock per read, not per delivery.
                let mut stats = self.stats.as_ref().map(|s| lock(s));
                while let Some(frame) = inbox.next(self.wire)? {
                    match frame {
                        Frame::Message(payload) => {
                            if let Some(stats) = stats.as_mut() {
                                stats.record(payload, now_ns);
                            }
                        }
                        Frame::Ready => {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(Ok(()));
                            }
                        }
                        Frame::Greeting => greet |= !greeted,
                        Frame::Ping => pongs += 1,
                        Frame::MapPing(map) => answer_ping(&mut answers, map),
                        Frame::Closed => {
                            closed = true;
                            break;
                        }
                        Frame::Other => {}
                    }
                }
            }
            greeted |= greet;
            if (greet || pongs > 0 || !answers.is_empty())
                && let Some(write) = &self.write
            {
                let mut write = write.lock().await;
                if greet {
                    write.write_all(self.on_greeting).await?;
                }
                for _ in 0..pongs {
                    write.write_all(NATS_PONG).await?;
                }
                write.write_all(&answers).await?;
                answers.clear();
            }
            if closed {
                return Ok(());
            }
            let n = self.read.read(inbox.spare()?).await?;
            if n == 0 {
                return Ok(());
            }
            inbox.filled(n);
        }
    }
}

/// Appends the `pong` map a `ping` map is owed, as a masked WebSocket
/// frame, as anteroom's client answers it (nothing for a `ping` without
/// `id`, or one that does not decode).
pub(super) fn answer_ping(out: &mut Vec<u8>, map: &[u8]) {
    if let Ok(ping) = ServerMessage::decode(map)
        && let Some(pong) = ping.answer()
    {
        crate::ws::client_message(out, &pong);
    }
}

/// A message's text: its round and due time in 24 hex digits, padded to
/// `payload` bytes.
pub(super) fn stamp(round: u32, due_ns: u64, payload: usize) -> String {
    let mut text = format!("{round:08x}{due_ns:016x}");
    text.extend(std::iter::repeat_n('x', payload.saturating_sub(text.len())));
    text
}

/// Reads the stamp at the head of a message; `None` for any other text.
/// The halves are sliced with `get`, which refuses a cut inside a multibyte
/// character where indexing would panic: a member may say anything.
fn parse_stamp(payload: &[u8]) -> Option<(u32, u64)> {
    let head = std::str::from_utf8(payload.get(..24)?).ok()?;
    let round = u32::from_str_radix(head.get(..8)?, 16).ok()?;
    let due = u64::from_str_radix(head.get(8..)?, 16).ok()?;
    Some((round, due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back() {
        let text = stamp(7, 123_456, 64);
        assert_eq!(parse_stamp(text.as_bytes()), Some((7, 123_456)));
    }

    #[test]
    fn other_text_is_no_stamp_even_with_a_character_across_byte_8() {
        // `é` is two bytes, at bytes 7 and 8: 24 bytes of valid UTF-8.
        let text = "0000000é000000000000000";
        assert_eq!(text.len(), 24);
        assert_eq!(parse_stamp(text.as_bytes()), None);
        assert_eq!(parse_stamp("short".as_bytes()), None);
        assert_eq!(parse_stamp("x".repeat(40).as_bytes()), None);
    }

    #[test]
    fn only_the_current_round_is_counted() {
        let mut stats = ReaderStats::new();
        stats.round = 3;
        stats.record(stamp(3, 1_000_000, 64).as_bytes(), 3_000_000);
        stats.record(stamp(2, 1_000_000, 64).as_bytes(), 3_000_000);
        stats.record(b"hello", 3_000_000);
        assert_eq!(stats.count, 1);
        assert_eq!(stats.latency_us, vec![2000]);
    }

    #[test]
    fn the_inbox_grows_for_a_large_frame_and_stops_at_its_cap() {
        let mut inbox = Inbox::new(b"");
        let mut total = 0;
        let error = loop {
            match inbox.spare() {
                Ok(spare) => {
                    let n = spare.len();
                    total += n;
                    inbox.filled(n);
                }
                Err(error) => break error,
            }
        };
        assert_eq!(error, WireError::TooLong);
        assert_eq!(total, Inbox::CAP);
    }

    #[test]
    fn leftover_bytes_are_read_first() {
        let frame = [0, 0, 0, 1, 0xc0];
        let mut inbox = Inbox::new(&frame);
        assert_eq!(inbox.next(Wire::Anteroom), Ok(Some(Frame::Other)));
        assert_eq!(inbox.next(Wire::Anteroom), Ok(None));
    }
}
