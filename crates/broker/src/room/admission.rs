//! Admission: who is let into the room, who waits, who is turned away.
//!
//! [`Admission`] holds the rules as a plain type (capacity, a strictly FIFO
//! queue, promotion on every departure) so they are tested without a network.
//! [`run`] is the actor that owns it: the only writer of membership, it
//! consumes `presence` and publishes the outcome on `room` and `queue`.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use async_broadcast::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::bus::{Bus, PresenceEvent, QueueEvent, RoomEvent};
use crate::conn::handle::{ConnId, Peer};
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

/// The admission actor. Runs until the `presence` topic closes.
pub async fn run(
    mut presence: Receiver<PresenceEvent>,
    bus: Bus,
    max_active: usize,
    max_waiting: usize,
    shutdown: CancellationToken,
) {
    let m = metrics();
    let mut rules = Admission::new(max_active, max_waiting);
    let mut known: HashMap<ConnId, Known> = HashMap::new();
    while let Ok(event) = presence.recv_direct().await {
        if shutdown.is_cancelled() {
            rules.close();
        }
        let published = match event {
            PresenceEvent::ClientArrived { peer, name } => {
                arrive(&mut rules, &mut known, &bus, peer, name).await
            }
            PresenceEvent::ClientDeparted { id, reason } => {
                depart(&mut rules, &mut known, &bus, id, reason).await
            }
        };
        if published.is_err() {
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
            admit(bus, peer, name, false).await?;
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
            let first = crate::room::waitlist::queued_frame(position, rules.waiting_len() as u64);
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
            bus.room
                .publish(RoomEvent::MemberLeft {
                    id,
                    name: gone.name,
                    reason,
                    ts: unix_millis(),
                })
                .await?;
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
                admit(bus, next.peer.clone(), next.name.clone(), true).await?;
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashSet, VecDeque};

    #[test]
    fn fills_the_room_then_queues_then_rejects() {
        let mut a = Admission::new(2, 1);
        assert_eq!(a.arrive(1), Decision::Admitted);
        assert_eq!(a.arrive(2), Decision::Admitted);
        assert_eq!(a.arrive(3), Decision::Queued { position: 1 });
        assert_eq!(a.arrive(4), Decision::Rejected);
        assert_eq!(a.depart(&1), Departure::Member { promoted: Some(3) });
        assert_eq!(a.depart(&4), Departure::Unknown);
        assert_eq!((a.active_len(), a.waiting_len()), (2, 0));
    }

    #[test]
    fn a_closed_room_promotes_nobody() {
        let mut a = Admission::new(1, 5);
        a.arrive(1);
        a.arrive(2);
        a.close();
        assert_eq!(a.depart(&1), Departure::Member { promoted: None });
        assert_eq!(a.depart(&2), Departure::Queued);
        assert_eq!(a.arrive(3), Decision::Rejected);
    }

    #[test]
    fn leaving_the_queue_moves_those_behind_up() {
        let mut a = Admission::new(1, 10);
        a.arrive(0);
        for k in 1..=4 {
            a.arrive(k);
        }
        assert_eq!(a.depart(&2), Departure::Queued);
        assert_eq!(a.queue().copied().collect::<Vec<_>>(), vec![1, 3, 4]);
        assert_eq!(a.depart(&0), Departure::Member { promoted: Some(1) });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Arrive,
        /// Departure of the n-th connected client (modulo how many there are).
        Depart(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![3 => Just(Op::Arrive), 2 => any::<usize>().prop_map(Op::Depart)],
            0..400,
        )
    }

    proptest! {
        /// Against a simple model: FIFO promotion, nobody lost or admitted
        /// twice, capacity never exceeded, and no one waits while a seat is free.
        #[test]
        fn admission_keeps_its_invariants(max_active in 1usize..6, max_waiting in 0usize..8, ops in ops()) {
            let mut a = Admission::new(max_active, max_waiting);
            let mut next = 0u32;
            let mut connected: Vec<u32> = Vec::new();
            let mut model_active: HashSet<u32> = HashSet::new();
            let mut model_queue: VecDeque<u32> = VecDeque::new();
            let mut ever_admitted: HashSet<u32> = HashSet::new();
            for op in ops {
                match op {
                    Op::Arrive => {
                        let k = next;
                        next += 1;
                        match a.arrive(k) {
                            Decision::Admitted => {
                                prop_assert!(model_active.len() < max_active && model_queue.is_empty());
                                prop_assert!(ever_admitted.insert(k));
                                model_active.insert(k);
                                connected.push(k);
                            }
                            Decision::Queued { position } => {
                                prop_assert!(model_queue.len() < max_waiting);
                                model_queue.push_back(k);
                                prop_assert_eq!(position, model_queue.len());
                                connected.push(k);
                            }
                            Decision::Rejected => {
                                prop_assert!(model_active.len() == max_active || !model_queue.is_empty());
                                prop_assert_eq!(model_queue.len(), max_waiting);
                            }
                        }
                    }
                    Op::Depart(i) if !connected.is_empty() => {
                        let k = connected.remove(i % connected.len());
                        match a.depart(&k) {
                            Departure::Member { promoted } => {
                                prop_assert!(model_active.remove(&k));
                                let expected = model_queue.pop_front();
                                prop_assert_eq!(promoted, expected);
                                if let Some(p) = promoted {
                                    prop_assert!(ever_admitted.insert(p), "admitted twice");
                                    model_active.insert(p);
                                }
                            }
                            Departure::Queued => {
                                let pos = model_queue.iter().position(|q| *q == k);
                                prop_assert!(pos.is_some());
                                model_queue.remove(pos.unwrap());
                            }
                            Departure::Unknown => prop_assert!(false, "connected client {} unknown", k),
                        }
                    }
                    Op::Depart(_) => {}
                }
                prop_assert!(a.active_len() <= max_active);
                prop_assert_eq!(a.active_len(), model_active.len());
                prop_assert_eq!(a.queue().copied().collect::<Vec<_>>(), model_queue.iter().copied().collect::<Vec<_>>());
                prop_assert!(model_queue.is_empty() || a.active_len() == max_active);
                for k in &connected {
                    prop_assert!(a.contains(k), "client {} lost", k);
                }
            }
        }
    }
}
