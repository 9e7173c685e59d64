//! Room delivery: fans the `room` topic out to every member's outbox.
//!
//! It is the room's sequencer: it reads the one ordered `room` stream, gives
//! each message its id, encodes every event once and hands the same bytes to
//! each member. It never waits on a member: a member whose outbox is full is
//! cut off (`disconnect`) or skipped and told with `gap` (`skip`).
//!
//! Frames are handed out in flushes, at most one per [`FLUSH_WINDOW`]: an
//! event arriving after a quiet spell is flushed at once, but in a busy room
//! each member gets the events of a whole window under one lock of its
//! outbox, in one wake-up of its writer and one `writev`, instead of one
//! each. At high fan-out those per-member costs are nearly the whole cost of
//! delivery, so this is what lets throughput grow with load. Membership
//! changes need no flush: each member records the first frame it is owed
//! and, once it left, the last.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_broadcast::Receiver;
use tracing::debug;

use crate::bus::RoomEvent;
use crate::metrics::metrics;
use crate::outbox::{Push, RoomFrame};
use crate::peer::{ConnId, Peer, Phase};
use crate::protocol::ServerMessage;
use crate::protocol::server::{WELCOME_DIRECT, WELCOME_FROM_QUEUE};

/// Sequence number of a room frame in delivery order.
type Seq = u64;

struct Member {
    id: ConnId,
    name: Arc<str>,
    peer: Arc<Peer>,
    /// The first frame this member gets: the one after its own `joined`.
    from: Seq,
    /// The frame its `left` will be; `Seq::MAX` while it is in the room.
    until: Seq,
}

impl Member {
    fn present(&self) -> bool {
        self.until == Seq::MAX
    }
}

/// Room delivery's state: members in join order, the frames of the current
/// flush window, and the last message id.
pub struct RoomDelivery {
    /// Members in join order; one that left stays until the frames it is
    /// owed have been handed out.
    members: Vec<Member>,
    /// Room frames not yet handed to the members, in order.
    pending: Vec<RoomFrame>,
    /// Sequence number of `pending[0]`.
    base: Seq,
    /// Members that left since the last flush.
    departed: usize,
    next_id: u64,
    capacity: u64,
    skip: bool,
    /// Deepest member outbox seen since the last [`RoomDelivery::take_deepest`].
    deepest: usize,
    last_flush: Option<Instant>,
}

/// The shortest time between two flushes, that is, between two hand-outs
/// of room frames to the members and two wake-ups of the same writer. Short
/// beside any latency a person notices or the 50 ms the benchmarks hold p99
/// to; long beside the microseconds between events in a busy room.
pub const FLUSH_WINDOW: Duration = Duration::from_millis(1);

impl RoomDelivery {
    /// `skip` selects the `skip` slow-consumer policy.
    pub fn new(capacity: usize, skip: bool) -> Self {
        Self {
            members: Vec::new(),
            pending: Vec::new(),
            base: 0,
            departed: 0,
            next_id: 0,
            capacity: capacity as u64,
            skip,
            deepest: 0,
            last_flush: None,
        }
    }

    /// Room frames waiting for the next flush.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When the frames waiting must be flushed: `now` if the last flush is
    /// a window ago, `None` if nothing is waiting. Runtime time, so a paused
    /// clock in tests governs it too.
    pub fn flush_due(&self, now: Instant) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(match self.last_flush {
            Some(last) if now < last + FLUSH_WINDOW => last + FLUSH_WINDOW,
            _ => now,
        })
    }

    /// Hands every member the frames it is owed, all of them under one lock
    /// of its outbox, and wakes the writers that were idle. Members that
    /// left are dropped once served.
    pub fn flush(&mut self) {
        if self.pending.is_empty() && self.departed == 0 {
            return;
        }
        let end = self.base + self.pending.len() as Seq;
        for member in &self.members {
            let lo = member.from.max(self.base);
            let hi = member.until.min(end);
            if lo >= hi {
                continue;
            }
            let frames = &self.pending[(lo - self.base) as usize..(hi - self.base) as usize];
            match member.peer.outbox.push_events(frames, self.skip) {
                Push::Queued { depth, wake } => {
                    self.deepest = self.deepest.max(depth);
                    if wake {
                        member.peer.outbox.wake();
                    }
                }
                Push::Overflow => member.peer.cut_off_slow(),
                Push::Skipped => {
                    debug!(conn_id = member.id, "events skipped for slow consumer");
                }
                Push::Closed => {}
            }
        }
        if self.departed > 0 {
            self.members.retain(Member::present);
            self.departed = 0;
        }
        self.pending.clear();
        self.base = end;
        self.last_flush = Some(Instant::now());
    }

    fn next_seq(&self) -> Seq {
        self.base + self.pending.len() as Seq
    }

    /// Applies one event of the room stream. Room frames wait for the next
    /// [`RoomDelivery::flush`]; a `welcome` goes out at once.
    pub fn handle(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::MessagePosted {
                from,
                text,
                ts,
                read_at,
            } => {
                self.next_id += 1;
                let bytes = ServerMessage::Message {
                    id: self.next_id,
                    from: &from,
                    text: &text,
                    ts,
                }
                .to_frame();
                self.pending.push(RoomFrame {
                    bytes,
                    posted: Some(read_at),
                });
            }
            RoomEvent::MemberJoined {
                peer,
                name,
                from_queue,
                ts,
            } => {
                let bytes = ServerMessage::Joined { name: &name, ts }.to_frame();
                self.pending.push(RoomFrame {
                    bytes,
                    posted: None,
                });
                self.members.push(Member {
                    id: peer.id,
                    name: name.clone(),
                    peer: peer.clone(),
                    from: self.next_seq(),
                    until: Seq::MAX,
                });
                let welcome = ServerMessage::Welcome {
                    name: &name,
                    users: self
                        .members
                        .iter()
                        .filter(|m| m.present())
                        .map(|m| &*m.name)
                        .collect(),
                    capacity: self.capacity,
                    text: if from_queue {
                        WELCOME_FROM_QUEUE
                    } else {
                        WELCOME_DIRECT
                    },
                }
                .to_frame();
                // A member from the moment its welcome can reach it: a
                // promoted client's session is already reading, and a `say`
                // or `who` sent on the welcome must not find it still queued.
                peer.set_phase(Phase::Active);
                peer.outbox.push_welcome(welcome);
            }
            RoomEvent::MemberLeft {
                id,
                name,
                reason,
                ts,
            } => {
                let until = self.next_seq();
                if let Some(member) = self.members.iter_mut().find(|m| m.id == id && m.present()) {
                    member.until = until;
                    self.departed += 1;
                }
                let bytes = ServerMessage::Left {
                    name: &name,
                    reason,
                    ts,
                }
                .to_frame();
                self.pending.push(RoomFrame {
                    bytes,
                    posted: None,
                });
            }
        }
    }

    /// Takes the deepest outbox seen since the last call.
    pub fn take_deepest(&mut self) -> usize {
        std::mem::take(&mut self.deepest)
    }

    /// The most frames any member has waiting right now.
    pub fn deepest_now(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.peer.outbox.depth())
            .max()
            .unwrap_or(0)
    }
}

/// How often the lag gauge is refreshed when no events flow.
const LAG_SAMPLE: Duration = Duration::from_secs(1);

/// The room delivery actor. Runs until the `room` topic closes.
///
/// Events are handled in batches of at most `batch` (a quarter of the
/// outbox limit), and the task yields between full batches: writers then get
/// to drain outboxes before more is pushed, so a burst of messages is not
/// mistaken for a slow member. Frames are handed out when a flush is due
/// (see [`FLUSH_WINDOW`]), or at once when a batch's worth is waiting.
pub async fn run(mut room: Receiver<RoomEvent>, mut delivery: RoomDelivery, outbox_limit: usize) {
    let m = metrics();
    let batch = (outbox_limit / 4).clamp(1, 64);
    let mut sample = tokio::time::interval(LAG_SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = Instant::now();
        let due = delivery.flush_due(now);
        if due.is_some_and(|due| due <= now) {
            delivery.flush();
            continue;
        }
        let flush_at = due.unwrap_or(now);
        let event = tokio::select! {
            event = room.recv_direct() => match event {
                Ok(event) => event,
                Err(_) => break,
            },
            _ = tokio::time::sleep_until(flush_at), if due.is_some() => {
                delivery.flush();
                continue;
            }
            // While the room is quiet, keep the lag gauge true: it falls
            // back to zero as writers drain.
            _ = sample.tick() => {
                // What flushes saw before now is stale: forget it.
                delivery.take_deepest();
                let lag = room.len() + delivery.pending() + delivery.deepest_now();
                m.lag_room_delivery.set(lag as f64);
                continue;
            }
        };
        delivery.handle(event);
        let mut handled = 1;
        while handled < batch {
            let Ok(event) = room.try_recv() else { break };
            delivery.handle(event);
            handled += 1;
        }
        // The window trades a millisecond for fewer wake-ups, never a
        // member's place: once a batch's worth is waiting, it goes now.
        if delivery.pending() >= batch {
            delivery.flush();
        }
        // One gauge update per batch, not per event.
        let lag = room.len() + delivery.pending() + delivery.take_deepest();
        m.lag_room_delivery.set(lag as f64);
        if handled == batch {
            tokio::task::yield_now().await;
        }
    }
    delivery.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Batch;
    use crate::protocol::LeftReason;

    fn peer() -> Arc<Peer> {
        Arc::new(Peer::new(64))
    }

    fn joined(delivery: &mut RoomDelivery, peer: &Arc<Peer>, name: &str) {
        delivery.handle(RoomEvent::MemberJoined {
            peer: peer.clone(),
            name: name.into(),
            from_queue: false,
            ts: 0,
        });
    }

    fn say(delivery: &mut RoomDelivery, text: &str) {
        delivery.handle(RoomEvent::MessagePosted {
            from: "a".into(),
            text: text.into(),
            ts: 0,
            read_at: std::time::Instant::now(),
        });
    }

    fn left(delivery: &mut RoomDelivery, peer: &Arc<Peer>, name: &str) {
        delivery.handle(RoomEvent::MemberLeft {
            id: peer.id,
            name: name.into(),
            reason: LeftReason::Bye,
            ts: 0,
        });
    }

    /// What a peer's writer would write next, as (type, name or text).
    async fn received(peer: &Peer) -> Vec<(String, String)> {
        let mut batch = Batch::default();
        if peer.outbox.depth() == 0 {
            return Vec::new();
        }
        peer.outbox.next_batch(&mut batch).await;
        batch
            .frames()
            .map(|f| {
                let v = rmpv::decode::read_value(&mut &f[4..]).unwrap();
                let kind = v["type"].as_str().unwrap().to_string();
                let detail = match kind.as_str() {
                    "message" => v["text"].as_str(),
                    "welcome" => Some(""),
                    _ => v["name"].as_str(),
                };
                (kind, detail.unwrap().to_string())
            })
            .collect()
    }

    fn frames(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, d)| (k.to_string(), d.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn frames_wait_for_the_flush_and_then_arrive_in_order() {
        let mut delivery = RoomDelivery::new(10, false);
        let a = peer();
        joined(&mut delivery, &a, "a");
        delivery.flush();
        assert_eq!(received(&a).await, frames(&[("welcome", "")]));
        say(&mut delivery, "one");
        say(&mut delivery, "two");
        assert_eq!(delivery.pending(), 2);
        assert_eq!(received(&a).await, frames(&[]));
        delivery.flush();
        assert_eq!(delivery.pending(), 0);
        assert_eq!(
            received(&a).await,
            frames(&[("message", "one"), ("message", "two")])
        );
    }

    #[tokio::test]
    async fn a_member_joining_within_a_window_gets_only_what_follows_its_join() {
        let mut delivery = RoomDelivery::new(10, false);
        let a = peer();
        let b = peer();
        joined(&mut delivery, &a, "a");
        delivery.flush();
        received(&a).await;
        say(&mut delivery, "before");
        joined(&mut delivery, &b, "b");
        say(&mut delivery, "after");
        // The welcome does not wait for the flush.
        assert_eq!(b.outbox.depth(), 1);
        delivery.flush();
        assert_eq!(
            received(&a).await,
            frames(&[("message", "before"), ("joined", "b"), ("message", "after")])
        );
        assert_eq!(
            received(&b).await,
            frames(&[("welcome", ""), ("message", "after")])
        );
    }

    #[tokio::test]
    async fn a_member_leaving_within_a_window_gets_what_came_before_its_leaving() {
        let mut delivery = RoomDelivery::new(10, false);
        let a = peer();
        let b = peer();
        let c = peer();
        joined(&mut delivery, &a, "a");
        joined(&mut delivery, &b, "b");
        delivery.flush();
        received(&a).await;
        received(&b).await;
        say(&mut delivery, "before");
        left(&mut delivery, &b, "b");
        say(&mut delivery, "after");
        // The welcome of someone joining now no longer lists b.
        joined(&mut delivery, &c, "c");
        let mut batch = Batch::default();
        c.outbox.next_batch(&mut batch).await;
        let welcome = rmpv::decode::read_value(&mut &batch.frames().next().unwrap()[4..]).unwrap();
        let users: Vec<&str> = welcome["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert_eq!(users, vec!["a", "c"]);
        delivery.flush();
        assert_eq!(
            received(&a).await,
            frames(&[
                ("message", "before"),
                ("left", "b"),
                ("message", "after"),
                ("joined", "c"),
            ])
        );
        assert_eq!(received(&b).await, frames(&[("message", "before")]));
        assert_eq!(delivery.members.len(), 2);
        say(&mut delivery, "later");
        delivery.flush();
        assert_eq!(received(&b).await, frames(&[]));
        assert_eq!(received(&c).await, frames(&[("message", "later")]));
    }

    #[test]
    fn the_first_flush_after_a_quiet_spell_is_due_at_once_then_one_per_window() {
        let mut delivery = RoomDelivery::new(10, false);
        let a = peer();
        joined(&mut delivery, &a, "a");
        delivery.flush();
        let flushed = delivery.last_flush.unwrap();
        let later = flushed + FLUSH_WINDOW;
        assert_eq!(delivery.flush_due(later), None);
        say(&mut delivery, "one");
        // A window after the last flush: due at once.
        assert_eq!(delivery.flush_due(later), Some(later));
        // Within the window: due when it ends.
        let soon = flushed + FLUSH_WINDOW / 4;
        assert_eq!(delivery.flush_due(soon), Some(later));
    }
}
