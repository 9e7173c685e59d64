//! What an outbox holds: a connection's own frames, and runs of room events
//! shared with every other member (see [`EventRun`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

/// Room events encoded back to back, shared by every member that is sent
/// them.
#[derive(Debug)]
pub struct EventRun {
    pub(super) bytes: Bytes,
    /// Frames (events) in `bytes`.
    pub(super) count: usize,
    /// When the `say` behind each `message` of the run was read, for the
    /// delivery latency histogram.
    posted: Vec<Instant>,
    /// The id of the run's last `message` (0: none): once the run is
    /// written, what a resuming client is known to have been sent.
    pub(super) last_id: u64,
}

impl EventRun {
    /// `bytes` holds `count` complete frames, back to back.
    pub fn new(bytes: Bytes, count: usize, posted: Vec<Instant>) -> Arc<Self> {
        Self::up_to(bytes, count, posted, 0)
    }

    /// [`EventRun::new`] for a run whose last `message` has id `last_id`.
    pub fn up_to(bytes: Bytes, count: usize, posted: Vec<Instant>, last_id: u64) -> Arc<Self> {
        Arc::new(Self {
            bytes,
            count,
            posted,
            last_id,
        })
    }

    /// Events in the run.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the run holds no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// One entry on its way out: a frame of this connection's own, or a run of
/// room events shared with the other members.
#[derive(Debug)]
pub struct Entry(Body);

#[derive(Debug)]
enum Body {
    /// A reply, welcome, position update or `gap` (`event`: counted as a
    /// room event delivered).
    Own {
        bytes: Bytes,
        event: bool,
    },
    Run(Arc<EventRun>),
    /// A `history` frame whose newest message has id `last_id`.
    Page {
        bytes: Bytes,
        last_id: u64,
    },
}

impl Entry {
    pub(super) fn event(bytes: Bytes) -> Self {
        Self(Body::Own { bytes, event: true })
    }

    pub(super) fn run(run: Arc<EventRun>) -> Self {
        Self(Body::Run(run))
    }

    pub(super) fn page(bytes: Bytes, last_id: u64) -> Self {
        Self(Body::Page { bytes, last_id })
    }

    pub(super) fn reply(bytes: Bytes) -> Self {
        Self(Body::Own {
            bytes,
            event: false,
        })
    }

    /// The complete frames of the entry, length prefixes included.
    pub fn bytes(&self) -> &Bytes {
        match &self.0 {
            Body::Own { bytes, .. } | Body::Page { bytes, .. } => bytes,
            Body::Run(run) => &run.bytes,
        }
    }

    /// Frames in the entry: what the outbox limit counts.
    pub(super) fn frames(&self) -> usize {
        match &self.0 {
            Body::Own { .. } | Body::Page { .. } => 1,
            Body::Run(run) => run.count,
        }
    }

    /// Room events in the entry, counted in `anteroom_messages_delivered_total`.
    pub(crate) fn events(&self) -> u64 {
        match &self.0 {
            Body::Own { event, .. } => u64::from(*event),
            Body::Page { .. } => 0,
            Body::Run(run) => run.count as u64,
        }
    }

    /// The id of the entry's last `message`, 0 for none.
    pub(crate) fn last_id(&self) -> u64 {
        match &self.0 {
            Body::Own { .. } => 0,
            Body::Page { last_id, .. } => *last_id,
            Body::Run(run) => run.last_id,
        }
    }

    /// When the `say`s behind the entry's messages were read.
    pub(crate) fn posted(&self) -> &[Instant] {
        match &self.0 {
            Body::Own { .. } | Body::Page { .. } => &[],
            Body::Run(run) => &run.posted,
        }
    }

    /// The entry's frames one by one, each with its length prefix: for a
    /// transport that sends one message per frame.
    pub fn each_frame(&self) -> impl Iterator<Item = Bytes> + '_ {
        let bytes = self.bytes();
        let mut at = 0;
        std::iter::from_fn(move || {
            let end = frame_end(bytes, at)?;
            let frame = bytes.slice(at..end);
            at = end;
            Some(frame)
        })
    }

    /// Where the frame holding byte `at` ends: a write cut short must still
    /// finish the frame it began, and only that frame.
    pub(crate) fn end_of_frame_at(&self, at: usize) -> usize {
        let bytes = self.bytes();
        let mut start = 0;
        while let Some(end) = frame_end(bytes, start) {
            if end > at {
                return end;
            }
            start = end;
        }
        bytes.len()
    }
}

/// The end of the frame starting at `start` in frames encoded back to back,
/// `None` at the end. The bytes are the broker's own encoding, so a prefix
/// past the end can only be a bug; it is clamped rather than trusted.
fn frame_end(bytes: &[u8], start: usize) -> Option<usize> {
    let prefix: [u8; 4] = bytes.get(start..start + 4)?.try_into().ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    Some((start + 4 + len).min(bytes.len()))
}
