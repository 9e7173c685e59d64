//! What the members receive: each message carries its round and the time it
//! was due, and every member's reader counts and times the messages of the
//! current round.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::lock;

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
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    text: Option<&'a str>,
}

/// Reads everything a member receives, timing the messages of the round.
pub(super) async fn read_member(
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    stats: Arc<Mutex<ReaderStats>>,
    epoch: Instant,
) {
    while let Some(Ok(frame)) = frames.next().await {
        let Ok(frame) = rmp_serde::from_slice::<Frame<'_>>(&frame) else {
            continue;
        };
        if let ("message", Some(text)) = (frame.kind, frame.text) {
            record(&stats, text.as_bytes(), epoch);
        }
    }
}

/// Counts a received message of the current round and its latency.
pub(super) fn record(stats: &Mutex<ReaderStats>, payload: &[u8], epoch: Instant) {
    let Some((round, due_ns)) = parse_stamp(payload) else {
        return;
    };
    let now_ns = epoch.elapsed().as_nanos() as u64;
    let latency_us = now_ns.saturating_sub(due_ns) / 1000;
    let mut stats = lock(stats);
    if stats.round == round {
        stats.count += 1;
        stats
            .latency_us
            .push(u32::try_from(latency_us.max(1)).unwrap_or(u32::MAX));
    }
}

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
}
