//! One connection's lifecycle as a single state machine.
//!
//! ```text
//!  Handshake --hello--> Pending --admission--> Waiting --room delivery--> Active
//!                          |  \--room delivery----------------------------^
//!                          \--admission--> Rejected
//!  any phase --first close wins--> closed(reason), phase kept
//! ```
//!
//! Each transition has exactly one writer: the session moves `Handshake` to
//! `Pending`; admission decides `Waiting` or `Rejected`; room delivery alone
//! makes a connection `Active`, just before it queues the `welcome`, so a
//! client can never read its welcome while the broker still thinks it is
//! queued. Closing is the one transition anyone may make (the session, a
//! writer that failed, a component that found the connection too slow); the
//! first close wins and later ones are ignored. The phase is kept when the
//! connection closes, because the session needs it to tell admission that a
//! seat or a queue place is free.
//!
//! The state lives in a `watch` channel: writers change it under its lock,
//! and the session waits on it instead of polling flags.

use anteroom_protocol::LeftReason;
use tokio::sync::watch;

/// Where a connection stands with the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected; no valid `hello` yet.
    Handshake,
    /// `hello` accepted, waiting for admission to decide.
    Pending,
    /// In the waiting queue.
    Waiting,
    /// A member of the room.
    Active,
    /// Refused: the room and the queue are full.
    Rejected,
}

impl Phase {
    /// Whether admission knows this connection, so its end must be published.
    pub fn holds_a_place(self) -> bool {
        matches!(self, Phase::Pending | Phase::Waiting | Phase::Active)
    }
}

/// A snapshot of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnState {
    /// The phase reached; unchanged by closing.
    pub phase: Phase,
    /// Set once, by the first close, with the reason the others will see.
    pub closed: Option<LeftReason>,
}

/// The state machine's writing side. Every transition is a method here, and
/// each checks that it starts from the phase it is allowed to leave.
#[derive(Debug)]
pub struct StateMachine {
    tx: watch::Sender<ConnState>,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl StateMachine {
    /// A connection in its handshake.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(ConnState {
            phase: Phase::Handshake,
            closed: None,
        });
        Self { tx }
    }

    /// The current state.
    pub fn get(&self) -> ConnState {
        *self.tx.borrow()
    }

    /// A receiver for the session to wait on.
    pub fn watch(&self) -> watch::Receiver<ConnState> {
        self.tx.subscribe()
    }

    /// Moves from `from` to `to` if the connection is in `from`; returns
    /// whether it did. Closed connections still move: admission must learn
    /// the outcome of a `hello` whose connection died meanwhile, and its
    /// bookkeeping follows the phase.
    fn advance(&self, from: &[Phase], to: Phase) -> bool {
        self.tx.send_if_modified(|state| {
            if from.contains(&state.phase) {
                state.phase = to;
                true
            } else {
                false
            }
        })
    }

    /// Session: a valid `hello` was accepted.
    pub fn arrive(&self) -> bool {
        self.advance(&[Phase::Handshake], Phase::Pending)
    }

    /// Admission: the room is full, the client waits.
    pub fn queue(&self) -> bool {
        self.advance(&[Phase::Pending], Phase::Waiting)
    }

    /// Admission: the room and the queue are full.
    pub fn reject(&self) -> bool {
        self.advance(&[Phase::Pending], Phase::Rejected)
    }

    /// Room delivery: the connection is a member from now on.
    pub fn admit(&self) -> bool {
        self.advance(&[Phase::Pending, Phase::Waiting], Phase::Active)
    }

    /// Anyone: the connection ends for `reason`. Only the first close
    /// counts; returns whether this one did.
    pub fn close(&self, reason: LeftReason) -> bool {
        self.tx.send_if_modified(|state| {
            if state.closed.is_some() {
                return false;
            }
            state.closed = Some(reason);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_only_from_their_phase() {
        let s = StateMachine::new();
        assert!(!s.queue(), "a connection in its handshake cannot be queued");
        assert!(!s.admit());
        assert!(s.arrive());
        assert!(!s.arrive(), "hello is accepted once");
        assert!(s.queue());
        assert!(!s.reject(), "a queued client is not rejected afterwards");
        assert!(s.admit());
        assert_eq!(s.get().phase, Phase::Active);
        assert!(!s.admit());
    }

    #[test]
    fn rejection_is_final() {
        let s = StateMachine::new();
        s.arrive();
        assert!(s.reject());
        assert!(!s.admit());
        assert!(!s.get().phase.holds_a_place());
    }

    #[test]
    fn the_first_close_wins_and_keeps_the_phase() {
        let s = StateMachine::new();
        s.arrive();
        s.queue();
        assert!(s.close(LeftReason::SlowConsumer));
        assert!(!s.close(LeftReason::Bye));
        let state = s.get();
        assert_eq!(state.closed, Some(LeftReason::SlowConsumer));
        assert_eq!(state.phase, Phase::Waiting);
        assert!(state.phase.holds_a_place());
    }

    #[tokio::test]
    async fn a_waiting_session_sees_the_decision() {
        let s = StateMachine::new();
        let mut rx = s.watch();
        s.arrive();
        let waiter = tokio::spawn(async move {
            rx.wait_for(|st| st.phase != Phase::Pending)
                .await
                .map(|st| st.phase)
        });
        tokio::task::yield_now().await;
        s.admit();
        assert_eq!(waiter.await.unwrap().unwrap(), Phase::Active);
    }
}
