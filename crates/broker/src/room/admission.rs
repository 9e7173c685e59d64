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
use std::time::Instant;

use async_broadcast::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::bus::{Bus, PresenceEvent, QueueEvent, RoomEvent};
use crate::conn::handle::{ConnId, Peer};
use crate::rate::Rate;
use crate::telemetry::log_budget::{MEMBERSHIP, Verdict};
use crate::telemetry::metrics;
use anteroom_protocol::LeftReason;
use anteroom_protocol::unix_millis;

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
    ) -> Result<(), crate::bus::BusClosed> {
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

/// The admission actor. Runs until the `presence` topic closes.
pub async fn run(
    mut presence: Receiver<PresenceEvent>,
    bus: Bus,
    max_active: usize,
    max_waiting: usize,
    mut entries: Entries,
    shutdown: CancellationToken,
) {
    let m = metrics();
    let mut rules = Admission::new(max_active, max_waiting);
    let mut known: HashMap<ConnId, Known> = HashMap::new();
    loop {
        let next = entries.next_at();
        let event = tokio::select! {
            event = presence.recv_direct() => match event {
                Ok(event) => Some(event),
                Err(_) => break,
            },
            // The next held entry's turn.
            _ = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => None,
        };
        if shutdown.is_cancelled() {
            rules.close();
            entries.clear();
        }
        let published = match event {
            Some(PresenceEvent::ClientArrived { peer, name }) => {
                arrive(&mut rules, &mut known, &mut entries, &bus, peer, name).await
            }
            Some(PresenceEvent::ClientDeparted { id, reason }) => {
                depart(&mut rules, &mut known, &mut entries, &bus, id, reason).await
            }
            None => Ok(()),
        };
        if published.is_err() || entries.release(&known, &bus).await.is_err() {
            break;
        }
        m.conn_active.set(rules.active_len() as f64);
        m.conn_waiting.set(rules.waiting_len() as f64);
        m.lag_admission.set(presence.len() as f64);
    }
}

async fn arrive(
    rules: &mut Admission<ConnId>,
    known: &mut HashMap<ConnId, Known>,
    entries: &mut Entries,
    bus: &Bus,
    peer: Arc<Peer>,
    name: Arc<str>,
) -> Result<(), crate::bus::BusClosed> {
    match rules.arrive(peer.id) {
        Decision::Admitted => {
            known.insert(
                peer.id,
                Known {
                    peer: peer.clone(),
                    name: name.clone(),
                    queued_at: None,
                },
            );
            entries.hold(peer.id, false);
        }
        Decision::Queued { position } => {
            if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                info!(conn_id = peer.id, %name, position, suppressed, "queued");
            }
            known.insert(
                peer.id,
                Known {
                    peer: peer.clone(),
                    name: name.clone(),
                    queued_at: Some(Instant::now()),
                },
            );
            // The first `queued` is part of the decision: queued before any
            // `welcome` can be, so even a client promoted at once sees it.
            let position = position as u64;
            let first = crate::room::waitlist::queued_frame(
                position,
                rules.waiting_len() as u64,
                peer.grant().map(|g| g.features),
            );
            peer.queue(first);
            bus.queue.publish(QueueEvent::ClientQueued { peer }).await?;
        }
        Decision::Rejected => peer.reject(),
    }
    Ok(())
}

/// Publishes the join. Room delivery makes the client a member as it takes
/// the join from the `room` topic, so the client's first message is
/// published after `MemberJoined` and no member sees it before the join.
async fn admit(
    bus: &Bus,
    peer: Arc<Peer>,
    name: Arc<str>,
    from_queue: bool,
) -> Result<(), crate::bus::BusClosed> {
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

async fn depart(
    rules: &mut Admission<ConnId>,
    known: &mut HashMap<ConnId, Known>,
    entries: &mut Entries,
    bus: &Bus,
    id: ConnId,
    reason: LeftReason,
) -> Result<(), crate::bus::BusClosed> {
    let Some(gone) = known.remove(&id) else {
        return Ok(());
    };
    match rules.depart(&id) {
        Departure::Member { promoted } => {
            if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                info!(conn_id = id, name = %gone.name, reason = reason.as_str(), suppressed, "left the room");
            }
            // A client that leaves while its entry waits was never seen to
            // join: nobody is told it left.
            if !entries.forget(id) {
                bus.room
                    .publish(RoomEvent::MemberLeft {
                        id,
                        name: gone.name,
                        reason,
                        ts: unix_millis(),
                    })
                    .await?;
            }
            if let Some(next) = promoted.and_then(|p| known.get_mut(&p)) {
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
                bus.queue
                    .publish(QueueEvent::ClientPromoted {
                        id: next.peer.id,
                        waited,
                    })
                    .await?;
                entries.hold(next.peer.id, true);
            }
        }
        Departure::Queued => {
            if let Verdict::Write { suppressed } = MEMBERSHIP.take() {
                info!(conn_id = id, name = %gone.name, reason = reason.as_str(), suppressed, "left the queue");
            }
            let waited = gone.queued_at.map(|t| t.elapsed()).unwrap_or_default();
            bus.queue
                .publish(QueueEvent::ClientAbandoned { id, waited })
                .await?;
        }
        Departure::Unknown => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
