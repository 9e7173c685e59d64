//! The broker's shared view of one connection, handed between the session
//! that owns the socket and the components that send to it or decide its fate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::telemetry::metrics;
use crate::conn::outbox::Outbox;
use anteroom_protocol::{ByeReason, LeftReason};

/// Identifies a connection for its whole life; never reused in a process.
pub type ConnId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Where a connection stands with the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Connected; no valid `hello` yet.
    Handshake = 0,
    /// `hello` accepted, waiting for admission to decide.
    Pending = 1,
    /// In the waiting queue.
    Waiting = 2,
    /// A member of the room.
    Active = 3,
    /// Refused: the room and the queue are full.
    Rejected = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Phase::Pending,
            2 => Phase::Waiting,
            3 => Phase::Active,
            4 => Phase::Rejected,
            _ => Phase::Handshake,
        }
    }
}

/// One connection as the rest of the broker sees it.
#[derive(Debug)]
pub struct Peer {
    pub id: ConnId,
    /// Frames on their way to this connection.
    pub outbox: Outbox,
    phase: AtomicU8,
    /// Wakes the session when admission decides or promotes.
    phase_changed: Notify,
    /// Set once when something other than the session ends the connection.
    kicked: Mutex<Option<LeftReason>>,
    kick: Notify,
}

impl Peer {
    /// A new connection with a fresh id and an outbox of `outbox_limit` events.
    pub fn new(outbox_limit: usize) -> Self {
        Self::with_limits(outbox_limit, usize::MAX)
    }

    /// A new connection whose outbox holds at most `outbox_limit` frames and
    /// `max_outbox_bytes` bytes.
    pub fn with_limits(outbox_limit: usize, max_outbox_bytes: usize) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            outbox: Outbox::with_byte_limit(outbox_limit, max_outbox_bytes),
            phase: AtomicU8::new(Phase::Handshake as u8),
            phase_changed: Notify::new(),
            kicked: Mutex::new(None),
            kick: Notify::new(),
        }
    }

    /// The connection's current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves the connection to `phase` and wakes its session.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.phase_changed.notify_one();
    }

    /// Waits until the phase is no longer `from`.
    pub async fn phase_after(&self, from: Phase) -> Phase {
        loop {
            let now = self.phase();
            if now != from {
                return now;
            }
            self.phase_changed.notified().await;
        }
    }

    /// Ends the connection from outside its session: the outbox closes with
    /// `last` (pending frames dropped) and the session is told why. Only the
    /// first kick counts; returns whether this one did.
    pub fn kick(&self, reason: LeftReason, last: Option<Bytes>) -> bool {
        {
            let mut kicked = self.kicked.lock().unwrap_or_else(|e| e.into_inner());
            if kicked.is_some() {
                return false;
            }
            *kicked = Some(reason);
        }
        self.outbox.close(last.as_slice(), true);
        self.kick.notify_one();
        true
    }

    /// Cuts the connection off as a slow consumer (best-effort `bye`), counted
    /// against the component that feeds it in its phase: room delivery for a
    /// member, the waitlist for a queued client; a connection in its
    /// handshake subscribes to nothing and is only logged. One place for
    /// every path that finds a connection too far behind.
    pub fn cut_off_slow(&self) {
        if self.kick(
            LeftReason::SlowConsumer,
            Some(ByeReason::SlowConsumer.frame()),
        ) {
            tracing::warn!(conn_id = self.id, "slow consumer cut off");
            match self.phase() {
                Phase::Waiting => metrics().dropped_waitlist_slow.increment(1),
                Phase::Active => metrics().dropped_room_delivery_slow.increment(1),
                _ => {}
            }
        }
    }

    /// Resolves with the reason once the connection has been kicked.
    pub async fn kicked(&self) -> LeftReason {
        loop {
            if let Some(reason) = *self.kicked.lock().unwrap_or_else(|e| e.into_inner()) {
                return reason;
            }
            self.kick.notified().await;
        }
    }
}
