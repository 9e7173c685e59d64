//! Admission: who is let into the room, who waits, who is turned away.
//!
//! [`Admission`] holds the rules as a plain type (capacity, a strictly FIFO
//! queue, promotion on every departure) so they are tested without a network.
//! [`run`] is the actor that owns it: the only writer of membership, it
//! consumes `presence` and publishes the outcome on `room` and `queue`.
//!
//! Every entry into the room costs room delivery a frame to every member
//! (the `joined`, the new member's `welcome` listing everyone, and later the
//! `left`), so entries are paced by `join_rate` ([`Entries`]): a client given
//! a seat keeps it, but its `MemberJoined` waits its turn. Room delivery then
//! stays ahead of churn, whoever drives it and from however many addresses.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_broadcast::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::bus::{Bus, BusClosed, PresenceEvent, QueueEvent, RoomEvent};
use crate::conn::handle::{ConnId, Peer};
use crate::rate::Rate;
use crate::room::eta::{WaitEstimate, eta_seconds};
use crate::room::held::HeldPlaces;
use crate::room::waitlist::queued_frame;
use crate::telemetry::log_budget::{MEMBERSHIP, Verdict};
use crate::telemetry::metrics;
use anteroom_protocol::unix_millis;
use anteroom_protocol::{Feature, LeftReason};

/// The outcome of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let into the room.
    Admitted,
    /// Placed in the queue at this 1-based position.
    Queued { position: usize },
    /// Room and queue are full.
    Rejected,
}

/// The outcome of a departure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departure<K> {
    /// A member left; the head of the queue, if any, took its place.
    Member { promoted: Option<K> },
    /// A queued client left the queue.
    Queued,
    /// Not known (never arrived, or was rejected).
    Unknown,
}

/// Where a resumed connection found itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the room.
    Seat,
    /// In the queue at this 1-based position.
    Queue { position: usize },
}

/// The admission rules: at most `max_active` members, at most `max_waiting`
/// queued, strict first-in first-out promotion.
#[derive(Debug)]
pub struct Admission<K> {
    max_active: usize,
    max_waiting: usize,
    active: HashMap<K, ()>,
    /// Queue order by ticket, so leaving from the middle is O(log n).
    queue: BTreeMap<u64, K>,
    tickets: HashMap<K, u64>,
    next_ticket: u64,
}

impl<K: Copy + Eq + Hash> Admission<K> {
    pub fn new(max_active: usize, max_waiting: usize) -> Self {
        Self {
            max_active,
            max_waiting,
            active: HashMap::new(),
            queue: BTreeMap::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
        }
    }

    /// Decides for a client that sent a valid `hello`. `key` must be new.
    pub fn arrive(&mut self, key: K) -> Decision {
        debug_assert!(!self.contains(&key));
        if self.active.len() < self.max_active && self.queue.is_empty() {
            self.active.insert(key, ());
            Decision::Admitted
        } else if self.queue.len() < self.max_waiting {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.queue.insert(ticket, key);
            self.tickets.insert(key, ticket);
            Decision::Queued {
                position: self.queue.len(),
            }
        } else {
            Decision::Rejected
        }
    }

    /// Removes a client, promoting the head of the queue if a seat opened.
    pub fn depart(&mut self, key: &K) -> Departure<K> {
        if self.active.remove(key).is_some() {
            let promoted = if self.active.len() < self.max_active {
                self.queue.pop_first().map(|(_, head)| {
                    self.tickets.remove(&head);
                    self.active.insert(head, ());
                    head
                })
            } else {
                None
            };
            Departure::Member { promoted }
        } else if let Some(ticket) = self.tickets.remove(key) {
            self.queue.remove(&ticket);
            Departure::Queued
        } else {
            Departure::Unknown
        }
    }

    /// Gives `old`'s seat or queue place to `new`, a resumed connection,
    /// keeping its turn. `None` when `old` holds nothing.
    pub fn replace(&mut self, old: &K, new: K) -> Option<Place> {
        if self.active.remove(old).is_some() {
            self.active.insert(new, ());
            Some(Place::Seat)
        } else if let Some(ticket) = self.tickets.remove(old) {
            self.tickets.insert(new, ticket);
            self.queue.insert(ticket, new);
            let position = self.queue.range(..ticket).count() + 1;
            Some(Place::Queue { position })
        } else {
            None
        }
    }

    /// Whether `key` has a seat.
    pub fn is_active(&self, key: &K) -> bool {
        self.active.contains_key(key)
    }

    /// Closes the room for shutdown: nobody is admitted or promoted any more,
    /// so a queued client's last frame is its `bye`, not a late `welcome`.
    pub fn close(&mut self) {
        self.max_active = 0;
        self.max_waiting = 0;
    }

    /// Whether `key` is in the room or the queue.
    pub fn contains(&self, key: &K) -> bool {
        self.active.contains_key(key) || self.tickets.contains_key(key)
    }

    /// Members in the room.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Clients waiting.
    pub fn waiting_len(&self) -> usize {
        self.queue.len()
    }

    /// Queued clients, head first.
    pub fn queue(&self) -> impl Iterator<Item = &K> {
        self.queue.values()
    }
}

struct Known {
    peer: Arc<Peer>,
    name: Arc<str>,
    queued_at: Option<Instant>,
}

/// How often, at most, admission logs that entries are being paced.
const PACING_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Entries into the room, paced by `join_rate`: clients given a seat whose
/// `MemberJoined` is not yet published, in the order they were given it.
/// A departure never waits for them, so seats and the queue stay exact.
#[derive(Debug)]
pub struct Entries {
    rate: Option<Rate>,
    /// When the rate's bucket is full again.
    full_at: tokio::time::Instant,
    /// Seats given, entries not yet published: (client, from the queue).
    held: VecDeque<(ConnId, bool)>,
    /// When the head of `held` may enter, if it must wait.
    next: Option<tokio::time::Instant>,
    /// When pacing was last logged.
    logged_at: Option<tokio::time::Instant>,
}

impl Entries {
    /// Entries limited to `rate` (`None`: published at once).
    pub fn new(rate: Option<Rate>) -> Self {
        Self {
            rate,
            full_at: tokio::time::Instant::now(),
            held: VecDeque::new(),
            next: None,
            logged_at: None,
        }
    }

    /// A client was given a seat; its entry is published in its turn.
    fn hold(&mut self, id: ConnId, from_queue: bool) {
        self.held.push_back((id, from_queue));
    }

    /// Withdraws a held entry (the client left before entering); returns
    /// whether it was held, in which case nobody was ever told it joined.
    fn forget(&mut self, id: ConnId) -> bool {
        let Some(i) = self.held.iter().position(|(held, _)| *held == id) else {
            return false;
        };
        self.held.remove(i);
        if self.held.is_empty() {
            self.next = None;
        }
        true
    }

    /// A resumed connection takes over `old`'s entry; returns whether
    /// `old` was waiting for its turn to enter.
    fn replace(&mut self, old: ConnId, new: ConnId) -> bool {
        match self.held.iter_mut().find(|(held, _)| *held == old) {
            Some(entry) => {
                entry.0 = new;
                true
            }
            None => false,
        }
    }

    /// Drops every held entry: during shutdown nobody enters.
    fn clear(&mut self) {
        self.held.clear();
        self.next = None;
    }

    /// When the next held entry may be published, if one waits.
    fn next_at(&self) -> Option<tokio::time::Instant> {
        self.next
    }

    /// Publishes every held entry the rate allows now, in order.
    async fn release(
        &mut self,
        known: &HashMap<ConnId, Known>,
        bus: &Bus,
    ) -> Result<(), BusClosed> {
        let now = tokio::time::Instant::now();
        while let Some(&(id, from_queue)) = self.held.front() {
            if let Some(rate) = &self.rate
                && let Err(when) = rate.take(&mut self.full_at, now)
            {
                self.next = Some(when);
                if self.logged_at.is_none_or(|t| now >= t + PACING_LOG_EVERY) {
                    self.logged_at = Some(now);
                    info!(
                        waiting = self.held.len(),
                        "join_rate reached; entries into the room are paced"
                    );
                }
                return Ok(());
            }
            self.held.pop_front();
            if let Some(entry) = known.get(&id) {
                if self.next.is_some() {
                    metrics().joins_paced.increment(1);
                }
                admit(bus, entry.peer.clone(), entry.name.clone(), from_queue).await?;
            }
        }
        self.next = None;
        Ok(())
    }
}

/// What admission shares with the rest of the room for resumes and
/// estimates.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Places held for dropped `resume` clients, by token.
    pub held: Arc<HeldPlaces>,
    /// How long a place is held (`resume_grace`).
    pub grace: Duration,
    /// The promotion rate behind every `eta_s`.
    pub estimate: Arc<WaitEstimate>,
}

/// A place held for a dropped connection, as admission tracks it.
struct Holding {
    token: Box<str>,
    reason: LeftReason,
    seat: bool,
}

/// The admission actor's state: the rules, the clients it knows, entries
/// waiting for their turn and places held for resumes.
struct Actor {
    rules: Admission<ConnId>,
    known: HashMap<ConnId, Known>,
    entries: Entries,
    bus: Bus,
    shared: Shared,
    holding: HashMap<ConnId, Holding>,
    /// When each held place is released, in order: the grace is the same
    /// for every place. A resumed one stays here until its turn, ignored.
    expiries: VecDeque<(tokio::time::Instant, ConnId)>,
}

/// The admission actor. Runs until the `presence` topic closes.
pub async fn run(
    mut presence: Receiver<PresenceEvent>,
    bus: Bus,
    max_active: usize,
    max_waiting: usize,
    entries: Entries,
    shared: Shared,
    shutdown: CancellationToken,
) {
    let m = metrics();
    let mut actor = Actor {
        rules: Admission::new(max_active, max_waiting),
        known: HashMap::new(),
        entries,
        bus,
        shared,
        holding: HashMap::new(),
        expiries: VecDeque::new(),
    };
    loop {
        let next = actor.entries.next_at();
        let expiry = actor.expiries.front().map(|(at, _)| *at);
        let event = tokio::select! {
            event = presence.recv_direct() => match event {
                Ok(event) => Some(event),
                Err(_) => break,
            },
            // The next held entry's turn.
            _ = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => None,
            // The next held place's grace is over.
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)), if expiry.is_some() => None,
        };
        if shutdown.is_cancelled() {
            actor.rules.close();
            actor.entries.clear();
        }
        let published = match event {
            Some(PresenceEvent::ClientArrived { peer, name }) => actor.arrive(peer, name).await,
            Some(PresenceEvent::ClientDeparted { id, reason }) => actor.depart(id, reason).await,
            Some(PresenceEvent::ClientDropped { id, reason }) => actor.hold(id, reason).await,
            Some(PresenceEvent::ClientResumed {
                old,
                peer,
                name,
                after,
            }) => actor.resume(old, peer, name, after).await,
            None => actor.release_expired().await,
        };
        if published.is_err()
            || actor
                .entries
                .release(&actor.known, &actor.bus)
                .await
                .is_err()
        {
            break;
        }
        actor.shared.estimate.waiting(actor.rules.waiting_len() > 0);
        m.conn_active.set(actor.rules.active_len() as f64);
        m.conn_waiting.set(actor.rules.waiting_len() as f64);
        m.lag_admission.set(presence.len() as f64);
    }
}

impl Actor {
    /// The estimate a client at `position` is told, if it asked for one.
    fn eta(&self, peer: &Peer, position: u64) -> Option<u64> {
        if !peer.features().has(Feature::Eta) {
            return None;
        }
        let rate = self.shared.estimate.per_second()?;
        Some(eta_seconds(position, rate))
    }

    /// Sends a client its first `queued` (the one answering its `hello`)
    /// at `position`; returns the estimate it was told.
    fn tell_queued(&self, peer: &Peer, position: usize) -> Option<u64> {
        let position = position as u64;
        let eta_s = self.eta(peer, position);
        let waiting = self.rules.waiting_len() as u64;
        peer.queue(queued_frame(peer, position, waiting, eta_s, true));
        eta_s
    }

    async fn arrive(&mut self, peer: Arc<Peer>, name: Arc<str>) -> Result<(), BusClosed> {
        match self.rules.arrive(peer.id) {
            Decision::Admitted => {
                self.known.insert(
                    peer.id,
                    Known {
                        peer: peer.clone(),
                        name: name.clone(),
                        queued_at: None,
                    },
                );
                self.entries.hold(peer.id, false);
            }
            Decision::Queued { position } => {
                if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                    info!(conn_id = peer.id, %name, position, suppressed, "queued");
                }
                self.known.insert(
                    peer.id,
                    Known {
                        peer: peer.clone(),
                        name: name.clone(),
                        queued_at: Some(Instant::now()),
                    },
                );
                // The first `queued` is part of the decision: queued before
                // any `welcome` can be, so even a client promoted at once
                // sees it.
                let eta_s = self.tell_queued(&peer, position);
                self.bus
                    .queue
                    .publish(QueueEvent::ClientQueued { peer, eta_s })
                    .await?;
            }
            Decision::Rejected => peer.reject(),
        }
        Ok(())
    }

    /// A `resume` client dropped: its place is held, and nobody is told.
    async fn hold(&mut self, id: ConnId, reason: LeftReason) -> Result<(), BusClosed> {
        // Not known: a resume already took the place over.
        let Some(entry) = self.known.get(&id) else {
            return Ok(());
        };
        let Some(token) = entry.peer.grant().and_then(|g| g.resume.as_ref()) else {
            return self.depart(id, reason).await;
        };
        let seat = self.rules.is_active(&id);
        if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
            info!(conn_id = id, name = %entry.name, reason = reason.as_str(), seat, suppressed, "dropped; place held");
        }
        self.holding.insert(
            id,
            Holding {
                token: token.token.clone(),
                reason,
                seat,
            },
        );
        held_gauge(seat).increment(1.0);
        self.expiries
            .push_back((tokio::time::Instant::now() + self.shared.grace, id));
        Ok(())
    }

    /// Releases the held places whose grace is over, as departures.
    async fn release_expired(&mut self) -> Result<(), BusClosed> {
        let now = tokio::time::Instant::now();
        while let Some(&(at, id)) = self.expiries.front() {
            if at > now {
                break;
            }
            self.expiries.pop_front();
            let Some(holding) = self.holding.remove(&id) else {
                continue;
            };
            held_gauge(holding.seat).decrement(1.0);
            // Taken by a `hello` a moment ago: its resume is on the way.
            let Some(place) = self.shared.held.release(&holding.token) else {
                continue;
            };
            // The name is free again from here.
            drop(place);
            self.depart(id, holding.reason).await?;
        }
        Ok(())
    }

    /// `peer` took back the place of `old`: it keeps the seat or the turn,
    /// and nobody is told anything.
    async fn resume(
        &mut self,
        old: ConnId,
        peer: Arc<Peer>,
        name: Arc<str>,
        after: u64,
    ) -> Result<(), BusClosed> {
        if let Some(holding) = self.holding.remove(&old) {
            held_gauge(holding.seat).decrement(1.0);
        }
        let (Some(entry), Some(place)) =
            (self.known.remove(&old), self.rules.replace(&old, peer.id))
        else {
            // Nothing to take back: an ordinary arrival.
            return self.arrive(peer, name).await;
        };
        if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
            info!(conn_id = peer.id, old_conn_id = old, %name, suppressed, "resumed");
        }
        self.known.insert(
            peer.id,
            Known {
                peer: peer.clone(),
                name: name.clone(),
                queued_at: entry.queued_at,
            },
        );
        match place {
            Place::Seat => {
                metrics().resumed_seat.increment(1);
                // Still waiting for its turn to enter: it enters on the new
                // connection, and the others see it join then.
                if self.entries.replace(old, peer.id) {
                    return Ok(());
                }
                self.bus
                    .room
                    .publish(RoomEvent::MemberResumed {
                        old,
                        peer,
                        name,
                        after,
                    })
                    .await
            }
            Place::Queue { position } => {
                metrics().resumed_queue.increment(1);
                let eta_s = self.tell_queued(&peer, position);
                let position = position as u64;
                self.bus
                    .queue
                    .publish(QueueEvent::ClientResumed {
                        old,
                        peer,
                        position,
                        eta_s,
                    })
                    .await
            }
        }
    }

    async fn depart(&mut self, id: ConnId, reason: LeftReason) -> Result<(), BusClosed> {
        let Some(gone) = self.known.remove(&id) else {
            return Ok(());
        };
        // Released by a departure while held (a second drop cannot happen,
        // but a panic's recovery can): no longer held.
        if let Some(holding) = self.holding.remove(&id) {
            held_gauge(holding.seat).decrement(1.0);
            self.shared.held.release(&holding.token);
        }
        match self.rules.depart(&id) {
            Departure::Member { promoted } => {
                if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                    info!(conn_id = id, name = %gone.name, reason = reason.as_str(), suppressed, "left the room");
                }
                // A client that leaves while its entry waits was never seen
                // to join: nobody is told it left.
                if !self.entries.forget(id) {
                    self.bus
                        .room
                        .publish(RoomEvent::MemberLeft {
                            id,
                            name: gone.name,
                            reason,
                            ts: unix_millis(),
                        })
                        .await?;
                }
                if let Some(next) = promoted.and_then(|p| self.known.get_mut(&p)) {
                    let waited = next
                        .queued_at
                        .take()
                        .map(|t| t.elapsed())
                        .unwrap_or_default();
                    if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                        info!(
                            conn_id = next.peer.id,
                            name = %next.name,
                            waited_ms = waited.as_millis() as u64,
                            suppressed,
                            "promoted from the queue"
                        );
                    }
                    self.shared.estimate.promoted();
                    let id = next.peer.id;
                    self.bus
                        .queue
                        .publish(QueueEvent::ClientPromoted { id, waited })
                        .await?;
                    self.entries.hold(id, true);
                }
            }
            Departure::Queued => {
                if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                    info!(conn_id = id, name = %gone.name, reason = reason.as_str(), suppressed, "left the queue");
                }
                let waited = gone.queued_at.map(|t| t.elapsed()).unwrap_or_default();
                self.bus
                    .queue
                    .publish(QueueEvent::ClientAbandoned { id, waited })
                    .await?;
            }
            Departure::Unknown => {}
        }
        Ok(())
    }
}

fn held_gauge(seat: bool) -> &'static metrics::Gauge {
    if seat {
        &metrics().held_seat
    } else {
        &metrics().held_queue
    }
}

/// Publishes the join. Room delivery makes the client a member as it takes
/// the join from the `room` topic, so the client's first message is
/// published after `MemberJoined` and no member sees it before the join.
async fn admit(
    bus: &Bus,
    peer: Arc<Peer>,
    name: Arc<str>,
    from_queue: bool,
) -> Result<(), BusClosed> {
    if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
        info!(conn_id = peer.id, %name, from_queue, suppressed, "joined the room");
    }
    bus.room
        .publish(RoomEvent::MemberJoined {
            peer: peer.clone(),
            name,
            from_queue,
            ts: unix_millis(),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
