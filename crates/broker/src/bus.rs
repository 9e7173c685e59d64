//! The internal bus: three topics on `async-broadcast` channels.
//!
//! * `room`: the one ordered stream of what members see: messages, joins and
//!   leaves. Published by sessions (`MessagePosted`) and admission
//!   (`MemberJoined`, `MemberLeft`); consumed by room delivery, the roster
//!   and the chat log.
//!   Because it is a single channel, every subscriber sees one total order.
//! * `presence`: connections arriving (a valid `hello`) and departing.
//!   Published by sessions; consumed by admission.
//! * `queue`: the waiting queue's changes. Published by admission; consumed by
//!   the waitlist.
//!
//! Overflow policy: every topic is bounded and applies backpressure (a
//! publisher waits for room). No bus event is ever dropped: losing a
//! `MemberLeft` or a departure would corrupt the roster or the queue. This is
//! safe because no subscriber ever waits on a client: each one hands frames to
//! bounded per-connection outboxes without blocking, so the bus drains at CPU
//! speed and a slow client is dealt with at its own outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_broadcast::{Receiver, Sender};
use metrics::Counter;

use crate::chat_log::StoredFile;
use crate::conn::handle::{ConnId, Peer};
use crate::telemetry::metrics;
use anteroom_protocol::LeftReason;

/// Capacity of each topic, in events.
pub const TOPIC_CAPACITY: usize = 4096;

/// Member-visible events, in the one order every member sees them.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A member said something.
    MessagePosted {
        from: Arc<str>,
        text: Arc<str>,
        ts: u64,
        /// A file posted with the message.
        attachment: Option<Arc<StoredFile>>,
        /// When the `say` was read, for the delivery latency histogram.
        read_at: Instant,
        /// The message id, when the cluster's log gave it one; `None`: the
        /// next id of this node's sequence.
        id: Option<u64>,
        /// Whether this node commits it to the store (in a cluster with a
        /// shared store, only the node it was posted on does).
        logged: bool,
    },
    /// A client entered the room, directly or from the queue.
    MemberJoined {
        peer: Arc<Peer>,
        name: Arc<str>,
        from_queue: bool,
        ts: u64,
    },
    /// A member whose connection dropped came back on `peer` within the
    /// grace: it takes the place of connection `old`, and nobody is told.
    MemberResumed {
        old: ConnId,
        peer: Arc<Peer>,
        name: Arc<str>,
        /// With `history`: the missed messages are those after this id.
        after: u64,
    },
    /// A member left the room.
    MemberLeft {
        id: ConnId,
        name: Arc<str>,
        reason: LeftReason,
        ts: u64,
    },
    /// In a cluster, a member of another node entered the room: a name
    /// here, with no connection. `id` stands in for it on this node.
    RemoteJoined { id: ConnId, name: Arc<str>, ts: u64 },
    /// In a cluster, a member of another node left.
    RemoteLeft {
        id: ConnId,
        name: Arc<str>,
        reason: LeftReason,
        ts: u64,
    },
}

/// Connections coming and going.
#[derive(Debug, Clone)]
pub enum PresenceEvent {
    /// A connection sent a valid `hello` and holds `name`.
    ClientArrived { peer: Arc<Peer>, name: Arc<str> },
    /// A connection that had arrived is gone.
    ClientDeparted { id: ConnId, reason: LeftReason },
    /// A connection granted `resume` dropped for `reason`: its place is
    /// held, under its token, for `resume_grace`, and released as a
    /// departure for `reason` if nobody takes it back.
    ClientDropped { id: ConnId, reason: LeftReason },
    /// `peer` took back the held place of connection `old` with its token.
    ClientResumed {
        old: ConnId,
        peer: Arc<Peer>,
        name: Arc<str>,
        /// The missed messages are those after this id.
        after: u64,
    },
}

/// Changes to the waiting queue, in queue order.
#[derive(Debug, Clone)]
pub enum QueueEvent {
    /// A client joined the back of the queue, and was told `eta_s`.
    ClientQueued { peer: Arc<Peer>, eta_s: Option<u64> },
    /// `peer` took back the held place of connection `old`, at `position`,
    /// and was told `eta_s`.
    ClientResumed {
        old: ConnId,
        peer: Arc<Peer>,
        position: u64,
        eta_s: Option<u64>,
    },
    /// The head of the queue entered the room after waiting `waited`.
    ClientPromoted { id: ConnId, waited: Duration },
    /// A queued client left before being promoted.
    ClientAbandoned { id: ConnId, waited: Duration },
}

/// The publishing side of one topic.
#[derive(Debug, Clone)]
pub struct Topic<T> {
    tx: Sender<T>,
    published: Counter,
}

/// Publishing failed because the broker is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the bus is closed")]
pub struct BusClosed;

impl<T: Clone> Topic<T> {
    fn new(published: Counter) -> (Self, Receiver<T>) {
        let (tx, rx) = async_broadcast::broadcast(TOPIC_CAPACITY);
        (Self { tx, published }, rx)
    }

    /// Publishes `event`, waiting while the topic is full.
    pub async fn publish(&self, event: T) -> Result<(), BusClosed> {
        self.tx
            .broadcast_direct(event)
            .await
            .map_err(|_| BusClosed)?;
        self.published.increment(1);
        Ok(())
    }

    /// Publishes `event` if the topic has room now; otherwise hands it back
    /// (`Err(Some(event))`) for [`Topic::publish`], or `Err(None)` when
    /// the bus is closed. Lets a caller keep the waiting path off its own
    /// future's state.
    pub fn try_publish(&self, event: T) -> Result<(), Option<T>> {
        use async_broadcast::TrySendError;
        match self.tx.try_broadcast(event) {
            Ok(_) => {
                self.published.increment(1);
                Ok(())
            }
            Err(TrySendError::Full(event) | TrySendError::Inactive(event)) => Err(Some(event)),
            Err(TrySendError::Closed(_)) => Err(None),
        }
    }

    /// Closes the topic: subscribers drain what is left, then stop.
    pub fn close(&self) {
        self.tx.close();
    }
}

/// The publishing side of all three topics.
#[derive(Debug, Clone)]
pub struct Bus {
    pub room: Topic<RoomEvent>,
    pub presence: Topic<PresenceEvent>,
    pub queue: Topic<QueueEvent>,
}

/// One receiver per subscribing component, created with the bus so that no
/// event can be published before every component is subscribed.
#[derive(Debug)]
pub struct Subscriptions {
    pub room_delivery: Receiver<RoomEvent>,
    pub roster: Receiver<RoomEvent>,
    pub chat_log: Receiver<RoomEvent>,
    pub admission: Receiver<PresenceEvent>,
    pub waitlist: Receiver<QueueEvent>,
}

impl Bus {
    /// Creates the topics and their subscriptions.
    pub fn new() -> (Self, Subscriptions) {
        let m = metrics();
        let (room, room_rx) = Topic::new(m.published_room.clone());
        let (presence, admission) = Topic::new(m.published_presence.clone());
        let (queue, waitlist) = Topic::new(m.published_queue.clone());
        let roster = room_rx.new_receiver();
        let chat_log = room_rx.new_receiver();
        (
            Bus {
                room,
                presence,
                queue,
            },
            Subscriptions {
                room_delivery: room_rx,
                roster,
                chat_log,
                admission,
                waitlist,
            },
        )
    }

    /// Closes every topic.
    pub fn close(&self) {
        self.room.close();
        self.presence.close();
        self.queue.close();
    }
}
