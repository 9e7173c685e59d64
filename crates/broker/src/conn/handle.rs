//! The broker's shared view of one connection, handed between the session
//! that owns the socket and the components that send to it or decide its fate.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anteroom_protocol::{ByeReason, Features, LeftReason};
use bytes::Bytes;

use super::outbox::{Outbox, Push};
use super::state::{ConnState, Phase, StateMachine};
use crate::telemetry::log_budget::{self, Verdict};
use crate::telemetry::metrics;

/// Identifies a connection for its whole life; never reused in a process.
pub type ConnId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One connection as the rest of the broker sees it: its identity, its
/// outbox and its state machine. Every change of state goes through a method
/// here, so the outbox always agrees with the state.
#[derive(Debug)]
pub struct Peer {
    /// Never reused in a process.
    pub id: ConnId,
    /// Frames on their way to this connection.
    pub outbox: Outbox,
    state: StateMachine,
    /// Set once, by a `hello` that asked for features; never for a
    /// version-1 client.
    grant: OnceLock<Grant>,
}

/// What a client that asked for features was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The features this connection may use.
    pub features: Features,
    /// With `files`: its bearer token for uploads.
    pub upload_token: Option<Box<str>>,
    /// With `resume`: what takes this connection's place back after a drop.
    pub resume: Option<ResumeGrant>,
    /// The `hello` carried a resume token: whether it took a held place
    /// back (`resumed` in the `welcome` or first `queued`).
    pub resumed: Option<bool>,
}

/// A connection's resume token and how long its place would be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeGrant {
    /// Unguessable; names the place once it is held.
    pub token: Box<str>,
    /// `resume_grace` in whole seconds, for the client's countdown.
    pub grace_s: u64,
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
            state: StateMachine::new(),
            grant: OnceLock::new(),
        }
    }

    /// Session: records what a `hello` asking for features was granted,
    /// before the connection arrives anywhere that reads it.
    pub fn set_grant(&self, grant: Grant) {
        if grant.features.has(anteroom_protocol::Feature::Lagging) {
            self.outbox.warn_when_lagging();
        }
        let _ = self.grant.set(grant);
    }

    /// What the client was granted; `None` for a version-1 client.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.get()
    }

    /// The features granted (none for a version-1 client).
    pub fn features(&self) -> Features {
        self.grant.get().map_or(Features::NONE, |g| g.features)
    }

    /// The connection's current phase.
    pub fn phase(&self) -> Phase {
        self.state.get().phase
    }

    /// The whole state, for the session.
    pub fn state(&self) -> ConnState {
        self.state.get()
    }

    /// A receiver the session waits on for decisions and closes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<ConnState> {
        self.state.watch()
    }

    /// Session: its `hello` was accepted; admission decides next.
    pub fn arrive(&self) -> bool {
        self.state.arrive()
    }

    /// Admission: the client waits in the queue; `first` is its first
    /// `queued` frame, queued before any `welcome` can be. A client that
    /// asked for more replies than it read is cut off as slow.
    pub fn queue(&self, first: Bytes) {
        self.state.queue();
        if self.outbox.push_reply(first) == Push::Overflow {
            self.cut_off_slow();
        }
    }

    /// Admission: the room and the queue are full.
    pub fn reject(&self) {
        self.state.reject();
    }

    /// Room delivery: makes the connection a member, then queues its
    /// `welcome` and, for a client granted `history`, the `history` that
    /// follows it with nothing in between. In that order: a client that
    /// reads its welcome and at once sends `say` must find itself a member.
    pub fn admit(&self, welcome: Bytes, history: Option<(Bytes, u64)>) {
        self.state.admit();
        self.outbox.push_welcome(welcome, history);
    }

    /// Ends the connection from outside its session: the outbox closes with
    /// `last` (pending frames dropped) and the session is told why. Only the
    /// first close counts; returns whether this one did.
    pub fn kick(&self, reason: LeftReason, last: Option<Bytes>) -> bool {
        if !self.state.close(reason) {
            return false;
        }
        self.outbox.close(last.as_slice(), true);
        true
    }

    /// The session ends the connection itself: its last frames (an `error`,
    /// a `bye`) follow what is already queued, unless `discard_pending`.
    /// Returns the reason that counts: an earlier kick's, if there was one.
    pub fn close(&self, reason: LeftReason, last: &[Bytes], discard_pending: bool) -> LeftReason {
        if self.state.close(reason) {
            self.outbox.close(last, discard_pending);
            reason
        } else {
            self.state.get().closed.unwrap_or(reason)
        }
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
            if let Verdict::Write { suppressed } = log_budget::SLOW_CONSUMERS.take() {
                tracing::warn!(conn_id = self.id, suppressed, "slow consumer cut off");
            }
            match self.phase() {
                Phase::Waiting => metrics().dropped_waitlist_slow.increment(1),
                Phase::Active => metrics().dropped_room_delivery_slow.increment(1),
                _ => {}
            }
        }
    }
}
