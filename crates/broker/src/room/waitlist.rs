//! The waitlist: tells queued clients where they stand.
//!
//! It mirrors the queue from the `queue` topic and sends each client a
//! `queued` frame on entry and whenever its position changes. Updates are
//! conflated: departures mark the queue dirty and positions are recomputed at
//! most once per [`interval`], so a burst of departures costs at most one
//! frame per queued client per interval, not one per client per departure. A
//! new position leaves at most [`CONFLATE_MAX`] after the change, so a client
//! that reads learns it well within the second the protocol allows. A position
//! only ever goes down, because the queue is FIFO.
//!
//! The interval grows with the queue: each update is a system call and a
//! wake-up of the client, so a long queue under steady churn is told a little
//! over twice a second instead of five times. Up to 16,000 queued, the
//! updates stay within [`UPDATES_PER_SECOND`]; beyond that, each client gets
//! one every [`CONFLATE_MAX`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_broadcast::Receiver;
use tokio::time::Instant;

use crate::bus::QueueEvent;
use crate::conn::handle::{ConnId, Peer};
use crate::room::eta::{WaitEstimate, eta_seconds, materially_changed};
use crate::telemetry::metrics;
use anteroom_protocol::server::queued_text;
use anteroom_protocol::{Feature, ServerMessage};

/// Shortest time between two position recomputations.
pub const CONFLATE: Duration = Duration::from_millis(200);

/// Longest time between two position recomputations while the queue moves:
/// well under the one second the protocol allows, leaving the rest for
/// writing 10,000s of updates and for the clients to read them.
pub const CONFLATE_MAX: Duration = Duration::from_millis(400);

/// The position updates per second, over all queued clients, that the
/// interval is sized for.
pub const UPDATES_PER_SECOND: u64 = 40_000;

/// Time between two position recomputations for a queue of `waiting`
/// clients: [`CONFLATE`], stretched so that telling all of them once per
/// interval costs at most [`UPDATES_PER_SECOND`] frames a second, and never
/// more than [`CONFLATE_MAX`].
pub fn interval(waiting: usize) -> Duration {
    let budget = Duration::from_micros(waiting as u64 * 1_000_000 / UPDATES_PER_SECOND);
    budget.clamp(CONFLATE, CONFLATE_MAX)
}

struct Waiting {
    peer: Arc<Peer>,
    /// The position this client was last told.
    told: u64,
    /// The estimate it was last told, with `eta`.
    told_eta: Option<u64>,
}

/// The waitlist's mirror of the queue.
pub struct Waitlist {
    by_ticket: BTreeMap<u64, Waiting>,
    ticket_of: HashMap<ConnId, u64>,
    next_ticket: u64,
    dirty: bool,
    estimate: Arc<WaitEstimate>,
    /// Clients granted `eta`: while there are some, estimates are checked
    /// every [`ETA_CHECK`] even when nobody moves.
    with_eta: usize,
}

/// How often estimates are checked while the queue stands still: a queue
/// whose head does not move still needs its estimates to grow.
pub const ETA_CHECK: Duration = Duration::from_secs(1);

impl Waitlist {
    /// A waitlist telling estimates from the shared promotion rate.
    pub fn new(estimate: Arc<WaitEstimate>) -> Self {
        Self {
            by_ticket: BTreeMap::new(),
            ticket_of: HashMap::new(),
            next_ticket: 0,
            dirty: false,
            estimate,
            with_eta: 0,
        }
    }

    /// Applies one queue event. Admission already told an entering client
    /// its position; departures mark positions as stale until the next
    /// [`Waitlist::flush`].
    pub fn handle(&mut self, event: QueueEvent) {
        let m = metrics();
        match event {
            QueueEvent::ClientQueued { peer, eta_s } => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                let position = self.by_ticket.len() as u64 + 1;
                self.ticket_of.insert(peer.id, ticket);
                self.with_eta += usize::from(peer.features().has(Feature::Eta));
                self.by_ticket.insert(
                    ticket,
                    Waiting {
                        peer,
                        told: position,
                        told_eta: eta_s,
                    },
                );
            }
            QueueEvent::ClientResumed {
                old,
                peer,
                position,
                eta_s,
            } => {
                let Some(ticket) = self.ticket_of.remove(&old) else {
                    return;
                };
                let Some(entry) = self.by_ticket.get_mut(&ticket) else {
                    return;
                };
                self.with_eta -= usize::from(entry.peer.features().has(Feature::Eta));
                self.with_eta += usize::from(peer.features().has(Feature::Eta));
                self.ticket_of.insert(peer.id, ticket);
                *entry = Waiting {
                    peer,
                    told: position,
                    told_eta: eta_s,
                };
                // Admission's position may be ahead of this mirror's.
                self.dirty = true;
            }
            QueueEvent::ClientPromoted { id, waited } => {
                self.remove(id);
                m.promotions.increment(1);
                m.queue_wait.record(waited.as_secs_f64());
            }
            QueueEvent::ClientAbandoned { id, .. } => {
                self.remove(id);
                m.queue_abandoned.increment(1);
            }
        }
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(ticket) = self.ticket_of.remove(&id) {
            if let Some(gone) = self.by_ticket.remove(&ticket) {
                self.with_eta -= usize::from(gone.peer.features().has(Feature::Eta));
            }
            self.dirty = true;
        }
    }

    /// Whether some positions changed since the last flush.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether some client is told estimates.
    pub fn tells_estimates(&self) -> bool {
        self.with_eta > 0
    }

    /// Sends every client whose position or estimate changed (by the
    /// contract's rule) its new standing. Returns how many frames were
    /// sent.
    pub fn flush(&mut self) -> usize {
        self.dirty = false;
        let waiting = self.by_ticket.len() as u64;
        let rate = self.estimate.per_second();
        metrics()
            .queue_estimated_wait
            .set(rate.map_or(0, |r| eta_seconds(waiting, r)) as f64);
        let mut sent = 0;
        for (i, entry) in self.by_ticket.values_mut().enumerate() {
            let position = i as u64 + 1;
            let eta = rate
                .filter(|_| entry.peer.features().has(Feature::Eta))
                .map(|r| eta_seconds(position, r));
            if entry.told != position || materially_changed(entry.told_eta, eta) {
                entry.told = position;
                entry.told_eta = eta;
                entry.peer.outbox.set_position(queued_frame(
                    &entry.peer,
                    position,
                    waiting,
                    eta,
                    false,
                ));
                sent += 1;
            }
        }
        sent
    }

    /// Clients waiting.
    pub fn len(&self) -> usize {
        self.by_ticket.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.by_ticket.is_empty()
    }
}

/// A `queued` frame for `peer` at `position` in a queue of `waiting`. A
/// client granted features gets its resume token in every one; the first
/// (`first`) also lists the features granted and answers a resume attempt.
pub fn queued_frame(
    peer: &Peer,
    position: u64,
    waiting: u64,
    eta_s: Option<u64>,
    first: bool,
) -> bytes::Bytes {
    let grant = peer.grant();
    let first_grant = grant.filter(|_| first);
    let resume = grant.and_then(|g| g.resume.as_ref());
    ServerMessage::Queued {
        position,
        waiting,
        text: queued_text(position).into(),
        features: first_grant.map(|g| g.features.names().into_iter().map(Into::into).collect()),
        resume: resume.map(|r| Cow::Borrowed(&*r.token)),
        resumed: first_grant.and_then(|g| g.resumed),
        resume_grace_s: resume.filter(|_| first).map(|r| r.grace_s),
        eta_s: eta_s.filter(|_| peer.features().has(Feature::Eta)),
    }
    .to_frame()
}

/// The waitlist actor. Runs until the `queue` topic closes.
pub async fn run(mut queue: Receiver<QueueEvent>, mut waitlist: Waitlist) {
    let m = metrics();
    let mut last_flush = Instant::now() - CONFLATE_MAX;
    let mut eta_check = tokio::time::interval(ETA_CHECK);
    eta_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_flush = last_flush + interval(waitlist.len());
        let mut checked = false;
        tokio::select! {
            event = queue.recv_direct() => {
                let Ok(event) = event else { break };
                waitlist.handle(event);
                while let Ok(event) = queue.try_recv() {
                    waitlist.handle(event);
                }
                m.lag_waitlist.set(queue.len() as f64);
            }
            // Recompute positions once the conflation interval has passed.
            _ = tokio::time::sleep_until(next_flush), if waitlist.is_dirty() => {}
            // Estimates move with the rate even while nobody moves.
            _ = eta_check.tick() => checked = true,
        }
        let now = Instant::now();
        let due = waitlist.is_dirty() && now >= last_flush + interval(waitlist.len());
        if due || (checked && waitlist.tells_estimates()) {
            // Timed from the start of the flush, so the time a long queue
            // takes to recompute is not added to the interval.
            last_flush = now;
            waitlist.flush();
        } else if checked {
            let rate = waitlist.estimate.per_second();
            let waiting = waitlist.len() as u64;
            m.queue_estimated_wait
                .set(rate.map_or(0, |r| eta_seconds(waiting, r)) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position_of(peer: &Peer) -> Option<u64> {
        let mut batch = crate::conn::outbox::Batch::default();
        let fut = peer.outbox.next_batch(&mut batch);
        futures_util::FutureExt::now_or_never(fut)?;
        let frame = batch_frames(&batch).pop()?;
        let v = rmpv::decode::read_value(&mut &frame[4..]).ok()?;
        v["position"].as_u64()
    }

    fn batch_frames(batch: &crate::conn::outbox::Batch) -> Vec<bytes::Bytes> {
        batch.frames().collect()
    }

    #[test]
    fn positions_follow_departures_conflated() {
        let mut w = Waitlist::new(Arc::new(WaitEstimate::new()));
        let peers: Vec<Arc<Peer>> = (0..5).map(|_| Arc::new(Peer::new(16))).collect();
        for p in &peers {
            w.handle(QueueEvent::ClientQueued {
                peer: p.clone(),
                eta_s: None,
            });
        }
        // Entry positions are told by admission, not repeated here.
        assert!(peers.iter().all(|p| position_of(p).is_none()));
        // Three departures, then one flush: one frame per changed client.
        w.handle(QueueEvent::ClientPromoted {
            id: peers[0].id,
            waited: Duration::ZERO,
        });
        w.handle(QueueEvent::ClientAbandoned {
            id: peers[2].id,
            waited: Duration::ZERO,
        });
        w.handle(QueueEvent::ClientPromoted {
            id: peers[1].id,
            waited: Duration::ZERO,
        });
        assert_eq!(w.flush(), 2);
        assert_eq!(position_of(&peers[3]), Some(1));
        assert_eq!(position_of(&peers[4]), Some(2));
        assert_eq!(w.flush(), 0);
    }

    #[test]
    fn interval_grows_with_the_queue_within_bounds() {
        assert_eq!(interval(0), CONFLATE);
        assert_eq!(interval(8_000), CONFLATE);
        assert_eq!(interval(12_000), Duration::from_millis(300));
        assert_eq!(interval(18_000), CONFLATE_MAX);
        assert_eq!(interval(1_000_000), CONFLATE_MAX);
        // Never slower than what the protocol's one second allows.
        assert!(CONFLATE_MAX < Duration::from_secs(1));
    }
}
