//! Room delivery: fans the `room` topic out to every member's outbox.
//!
//! It is the room's sequencer: it reads the one ordered `room` stream, gives
//! each message its id, and encodes every event once. The events of one pass
//! (up to a batch) are encoded back to back into one buffer, an
//! [`EventRun`], and each member is handed that run once: a member costs one
//! outbox push and one slice of one `writev` per pass, not one per event, so
//! under load a member's writes grow fuller instead of more frequent. Joins
//! and leaves do not end a pass: one that entered mid-pass is handed the
//! run's tail from its entry, one that left its head up to its departure
//! (slices of the same buffer), so a join storm costs each member one push
//! per pass, not one per join. It never waits on a member: a member whose
//! outbox is full is cut off (`disconnect`) or skipped and told with `gap`
//! (`skip`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_broadcast::Receiver;
use bytes::{Bytes, BytesMut};
use tracing::debug;

use crate::bus::RoomEvent;
use crate::chat_log::writer::Sequence;
use crate::chat_log::{ChatLog, Logged};
use crate::conn::handle::{ConnId, Peer};
use crate::conn::outbox::{EventRun, Push};
use crate::conn::shards::Shards;
use crate::room::presence::PresenceBatch;
use crate::telemetry::metrics;
use anteroom_protocol::server::{WELCOME_DIRECT, WELCOME_FROM_QUEUE};
use anteroom_protocol::{EncodedNames, Feature, LeftReason, ServerMessage};

struct Member {
    id: ConnId,
    name: Arc<str>,
    peer: Arc<Peer>,
    /// Takes `presence` frames instead of `joined` and `left`.
    batched: bool,
    /// Entered while the pending presence batch was open, at this mark.
    mark: Option<usize>,
    /// Entered during the current pass, at this cut: it is handed only the
    /// part of the pass after it.
    entered: Option<usize>,
    /// Its place in the join order of the whole room (remote members too).
    order: u64,
}

/// A member that left during the current pass: it is still handed the part
/// of the pass before its departure.
struct Departed {
    peer: Arc<Peer>,
    batched: bool,
    /// The part of the pass it saw: from its entry (`None`: the start) to
    /// the cut at its departure.
    entered: Option<usize>,
    left: usize,
}

/// A point in the pending pass where membership changed: how far each of
/// its two views (with and without joins and leaves) had come.
#[derive(Clone, Copy, Default)]
struct Cut {
    bytes: usize,
    count: usize,
    /// The same point in the `presence_batch` view.
    view_bytes: usize,
    view_count: usize,
    /// Messages (their read times) before the cut.
    posted: usize,
    /// The id of the last message before the cut (0: none in the pass).
    last_id: u64,
}

/// Room delivery's state: members in join order and the last message id.
pub struct RoomDelivery {
    members: Vec<Member>,
    ids: Sequence,
    /// Where handed-out messages are recorded for history.
    log: Option<Arc<ChatLog>>,
    capacity: u64,
    skip: bool,
    /// `welcome.max_upload_bytes` for clients granted `files`.
    max_upload_bytes: u64,
    /// Deepest member outbox seen during the current batch.
    deepest: usize,
    /// The pass's events, encoded back to back, not yet handed to members.
    pending: BytesMut,
    pending_count: usize,
    pending_posted: Vec<Instant>,
    /// The id of the pass's last message (0: none yet).
    pending_last_id: u64,
    /// The pass as `presence_batch` members take it (its messages, not its
    /// joins and leaves), once the two differ; until then they share
    /// `pending`.
    batch_view: Option<(BytesMut, usize)>,
    /// Joins and leaves not yet told to `presence_batch` members.
    presence: PresenceBatch,
    /// When the pending presence batch opened.
    presence_opened: Option<tokio::time::Instant>,
    presence_interval: Duration,
    /// Members taking `presence` frames.
    batched: usize,
    /// Where membership changed during the pending pass.
    cuts: Vec<Cut>,
    /// Members that left during the pending pass.
    departed: Vec<Departed>,
    /// The members' names encoded for `welcome`; `None` after a departure
    /// until the next welcome encodes them again.
    names: Option<EncodedNames>,
    /// In a cluster, the members of other nodes (stand-in id, name, place
    /// in the join order), in join order: in every `welcome`, sent nothing.
    remote: Vec<(ConnId, Arc<str>, u64)>,
    /// Entries into the room so far: the join order.
    entries: u64,
}

impl RoomDelivery {
    /// `skip` selects the `skip` slow-consumer policy.
    pub fn new(capacity: usize, skip: bool) -> Self {
        Self {
            members: Vec::new(),
            ids: Sequence::after(0),
            log: None,
            capacity: capacity as u64,
            skip,
            max_upload_bytes: 0,
            deepest: 0,
            pending: BytesMut::new(),
            pending_count: 0,
            pending_posted: Vec::new(),
            pending_last_id: 0,
            batch_view: None,
            presence: PresenceBatch::new(),
            presence_opened: None,
            presence_interval: Duration::from_secs(1),
            batched: 0,
            cuts: Vec::new(),
            departed: Vec::new(),
            names: Some(EncodedNames::new()),
            remote: Vec::new(),
            entries: 0,
        }
    }

    /// Delivery for a room whose chat log is `log`, continuing after
    /// `last_id`; members granted `files` are told `max_upload_bytes`.
    pub fn with_log(mut self, log: Arc<ChatLog>, last_id: u64, max_upload_bytes: u64) -> Self {
        self.log = Some(log);
        self.max_upload_bytes = max_upload_bytes;
        self.ids = Sequence::after(last_id);
        self
    }

    /// `presence_batch` members get at most one `presence` frame per
    /// `interval`.
    pub fn with_presence_interval(mut self, interval: Duration) -> Self {
        self.presence_interval = interval;
        self
    }

    /// Applies one event of the room stream. Room events are held until
    /// [`RoomDelivery::flush`] (or a change of membership) hands them out.
    pub fn handle(&mut self, event: RoomEvent) {
        match event {
            RoomEvent::MessagePosted {
                from,
                text,
                ts,
                attachment,
                read_at,
                id,
                ..
            } => {
                // A member's `joined` reaches everyone before its first
                // message, in a batch too.
                if self.presence.holds_join_of(&from) {
                    self.flush();
                    self.flush_presence();
                }
                let message = Logged {
                    id: self.ids.take(id),
                    from,
                    text,
                    ts,
                    attachment,
                };
                self.pending_last_id = message.id;
                let start = self.pending.len();
                self.append(&message.to_message(), Some(read_at));
                if let Some((view, count)) = &mut self.batch_view {
                    view.extend_from_slice(&self.pending[start..]);
                    *count += 1;
                }
                if let Some(log) = &self.log {
                    log.record(message);
                }
            }
            RoomEvent::MemberJoined {
                peer,
                name,
                from_queue,
                ts,
            } => {
                let joined = ServerMessage::Joined {
                    name: Cow::Borrowed(&name),
                    ts,
                };
                // Everything so far goes to the members before this one:
                // its stream starts with its welcome, then the pass's tail.
                self.append_membership(&joined);
                let entered = self.cut();
                if self.batched > 0 {
                    self.presence.joined(name.clone());
                    self.presence_opened
                        .get_or_insert_with(tokio::time::Instant::now);
                }
                let at = self.members.len();
                self.entries += 1;
                let order = self.entries;
                self.insert_member(at, peer.clone(), name.clone(), Some(entered), order);
                if let Some(names) = &mut self.names {
                    names.push(&name);
                }
                let welcome = self.welcome(&peer, &name, from_queue);
                let history = match &self.log {
                    Some(log) if peer.features().has(Feature::History) => {
                        Some((log.on_join_frame(), self.ids.last()))
                    }
                    _ => None,
                };
                // A member from the moment its welcome can reach it: a
                // promoted client's session is already reading, and a `say`
                // or `who` sent on the welcome must not find it still queued.
                peer.admit(welcome, history);
            }
            RoomEvent::MemberResumed {
                old,
                peer,
                name,
                after,
            } => {
                // What came before goes to the others; the one resuming
                // gets it from the history of what it missed.
                self.flush();
                let Some(i) = self.members.iter().position(|m| m.id == old) else {
                    return;
                };
                let gone = self.members.remove(i);
                self.batched -= usize::from(gone.batched);
                if gone.name != name {
                    self.names = None;
                }
                // Back in its place in join order.
                self.insert_member(i, peer.clone(), name.clone(), None, gone.order);
                let welcome = self.welcome(&peer, &name, false);
                let history = match &self.log {
                    Some(log) if peer.features().has(Feature::History) => {
                        Some((log.missed_frame(after), self.ids.last()))
                    }
                    _ => None,
                };
                peer.admit(welcome, history);
            }
            RoomEvent::MemberLeft {
                id,
                name,
                reason,
                ts,
            } => {
                // What came before the departure still goes to the one
                // leaving, as it would have one event at a time.
                if let Some(i) = self.members.iter().position(|m| m.id == id) {
                    let gone = self.members.remove(i);
                    self.batched -= usize::from(gone.batched);
                    self.names = None;
                    let left = self.cut();
                    self.departed.push(Departed {
                        peer: gone.peer,
                        batched: gone.batched,
                        entered: gone.entered,
                        left,
                    });
                }
                self.tell_left(name, reason, ts);
            }
            RoomEvent::RemoteJoined { id, name, ts } => self.remote_joined(id, name, ts),
            RoomEvent::RemoteLeft {
                id,
                name,
                reason,
                ts,
            } => self.remote_left(id, name, reason, ts),
        }
    }

    /// A member of another node: everyone here is told, and later welcomes
    /// list it.
    fn remote_joined(&mut self, id: ConnId, name: Arc<str>, ts: u64) {
        let joined = ServerMessage::Joined {
            name: Cow::Borrowed(&name),
            ts,
        };
        self.append_membership(&joined);
        if self.batched > 0 {
            self.presence.joined(name.clone());
            self.presence_opened
                .get_or_insert_with(tokio::time::Instant::now);
        }
        if let Some(names) = &mut self.names {
            names.push(&name);
        }
        self.entries += 1;
        self.remote.push((id, name, self.entries));
    }

    fn remote_left(&mut self, id: ConnId, name: Arc<str>, reason: LeftReason, ts: u64) {
        let Some(i) = self.remote.iter().position(|(r, _, _)| *r == id) else {
            return;
        };
        self.remote.remove(i);
        self.names = None;
        self.tell_left(name, reason, ts);
    }

    /// A departure, as the members here are told of it: `left`, or in the
    /// next `presence` batch.
    fn tell_left(&mut self, name: Arc<str>, reason: LeftReason, ts: u64) {
        let left = ServerMessage::Left {
            name: Cow::Borrowed(&name),
            reason,
            ts,
        };
        self.append_membership(&left);
        if self.batched > 0 {
            self.presence.left(name, reason);
            self.presence_opened
                .get_or_insert_with(tokio::time::Instant::now);
        }
    }

    /// Marks a change of membership in the pending pass.
    fn cut(&mut self) -> usize {
        let (view_bytes, view_count) = match &self.batch_view {
            Some((view, count)) => (view.len(), *count),
            None => (self.pending.len(), self.pending_count),
        };
        self.cuts.push(Cut {
            bytes: self.pending.len(),
            count: self.pending_count,
            view_bytes,
            view_count,
            posted: self.pending_posted.len(),
            last_id: self.pending_last_id,
        });
        self.cuts.len() - 1
    }

    fn insert_member(
        &mut self,
        at: usize,
        peer: Arc<Peer>,
        name: Arc<str>,
        entered: Option<usize>,
        order: u64,
    ) {
        let batched = peer.features().has(Feature::PresenceBatch);
        self.batched += usize::from(batched);
        let mark = (batched && !self.presence.is_empty()).then(|| self.presence.mark());
        self.members.insert(
            at,
            Member {
                id: peer.id,
                name,
                peer,
                batched,
                mark,
                entered,
                order,
            },
        );
    }

    /// The `welcome` for a member just (re)entered; it lists everyone.
    fn welcome(&mut self, peer: &Peer, name: &str, from_queue: bool) -> bytes::Bytes {
        let members = &self.members;
        let remote = &self.remote;
        let names = self.names.get_or_insert_with(|| {
            let mut names = EncodedNames::new();
            // Both lists are in join order: merged, the room's.
            let mut remote = remote.iter().peekable();
            for member in members {
                while let Some((_, name, _)) = remote.next_if(|(_, _, at)| *at < member.order) {
                    names.push(name);
                }
                names.push(&member.name);
            }
            for (_, name, _) in remote {
                names.push(name);
            }
            names
        });
        let grant = peer.grant();
        let resume = grant.and_then(|g| g.resume.as_ref());
        let welcome = ServerMessage::Welcome {
            name: Cow::Borrowed(name),
            users: Vec::new(),
            capacity: self.capacity,
            text: Cow::Borrowed(if from_queue {
                WELCOME_FROM_QUEUE
            } else {
                WELCOME_DIRECT
            }),
            features: grant.map(|g| g.features.names().into_iter().map(Cow::Borrowed).collect()),
            upload_token: grant.and_then(|g| g.upload_token.as_deref().map(Cow::Borrowed)),
            max_upload_bytes: grant
                .filter(|g| g.features.has(Feature::Files))
                .map(|_| self.max_upload_bytes),
            resume: resume.map(|r| Cow::Borrowed(&*r.token)),
            resumed: grant.and_then(|g| g.resumed),
            resume_grace_s: resume.map(|r| r.grace_s),
        };
        names.welcome_frame(&welcome)
    }

    fn append(&mut self, event: &ServerMessage<'_>, posted: Option<Instant>) {
        event.append_frame(&mut self.pending);
        self.pending_count += 1;
        self.pending_posted.extend(posted);
    }

    /// Appends a `joined` or `left`, which `presence_batch` members do not
    /// take: from here on the pass is theirs without it.
    fn append_membership(&mut self, event: &ServerMessage<'_>) {
        if self.batched > 0 && self.batch_view.is_none() {
            self.batch_view = Some((BytesMut::from(&self.pending[..]), self.pending_count));
        }
        self.append(event, None);
    }

    /// Hands the events held since the last flush to every member, as one
    /// run of frames shared by all of them (and one more for
    /// `presence_batch` members, if the pass held joins or leaves). Members
    /// that entered or left mid-pass get their part of it, one run per
    /// distinct part.
    pub fn flush(&mut self) {
        if self.pending_count == 0 {
            return;
        }
        let end = Cut {
            bytes: self.pending.len(),
            count: self.pending_count,
            view_bytes: self.batch_view.as_ref().map_or(0, |(v, _)| v.len()),
            view_count: self.batch_view.as_ref().map_or(0, |(_, c)| *c),
            posted: self.pending_posted.len(),
            last_id: self.pending_last_id,
        };
        let pass = Pass {
            bytes: self.pending.split().freeze(),
            view: self.batch_view.take().map(|(view, _)| view.freeze()),
            posted: std::mem::take(&mut self.pending_posted),
            cuts: std::mem::take(&mut self.cuts),
            end,
        };
        self.pending_count = 0;
        self.pending_last_id = 0;
        let run = pass.run(None, None, false);
        let batch_run = pass.view.is_some().then(|| pass.run(None, None, true));
        let mut parts = Parts::default();
        let skip = self.skip;
        for member in &mut self.members {
            let batched = member.batched && batch_run.is_some();
            let run = match member.entered.take() {
                Some(entered) => parts.get(&pass, Some(entered), None, batched),
                None if batched => batch_run.as_ref().unwrap_or(&run),
                None => &run,
            };
            if run.is_empty() {
                continue;
            }
            match member.peer.outbox.push_events(run, skip) {
                Push::Queued { depth } => self.deepest = self.deepest.max(depth),
                Push::Overflow => member.peer.cut_off_slow(),
                Push::Skipped => {
                    debug!(conn_id = member.id, "events skipped for slow consumer");
                }
                Push::Closed => {}
            }
        }
        for gone in std::mem::take(&mut self.departed) {
            let batched = gone.batched && batch_run.is_some();
            let run = parts.get(&pass, gone.entered, Some(gone.left), batched);
            if !run.is_empty() && gone.peer.outbox.push_events(run, skip) == Push::Overflow {
                gone.peer.cut_off_slow();
            }
        }
        // Its buffer back for the next pass.
        self.cuts = pass.cuts;
        self.cuts.clear();
    }

    /// When the pending presence batch is due, if one is pending.
    pub fn presence_due(&self) -> Option<tokio::time::Instant> {
        self.presence_opened.map(|at| at + self.presence_interval)
    }

    /// Sends the pending presence batch to the `presence_batch` members: one
    /// frame encoded once for all, and one of its own for a member that
    /// entered during the batch and needs more (see [`PresenceBatch`]).
    pub fn flush_presence(&mut self) {
        self.presence_opened = None;
        let Some(flushed) = self.presence.flush(anteroom_protocol::unix_millis()) else {
            return;
        };
        if self.batched == 0 {
            return;
        }
        if flushed.shared.is_some() {
            metrics()
                .presence_batch_changes
                .record(flushed.changes() as f64);
        }
        let shared = flushed
            .shared
            .clone()
            .map(|frame| EventRun::new(frame, 1, Vec::new()));
        let skip = self.skip;
        for member in self.members.iter_mut().filter(|m| m.batched) {
            let own = member.mark.take().and_then(|mark| flushed.for_member(mark));
            let pushed = match (own, &shared) {
                (Some(frame), _) => member.peer.outbox.push_event(frame, None, skip),
                (None, Some(shared)) => member.peer.outbox.push_events(shared, skip),
                // Nothing changed for this one.
                (None, None) => continue,
            };
            match pushed {
                Push::Queued { depth } => self.deepest = self.deepest.max(depth),
                Push::Overflow => member.peer.cut_off_slow(),
                Push::Skipped | Push::Closed => {}
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

/// A pass being handed out: its frames in both views, and where
/// membership changed in it.
struct Pass {
    bytes: Bytes,
    /// Without joins and leaves, for `presence_batch` members, when the
    /// pass held any.
    view: Option<Bytes>,
    posted: Vec<Instant>,
    cuts: Vec<Cut>,
    end: Cut,
}

impl Pass {
    /// The part of the pass between two cuts (`None`: its start, its end).
    fn run(&self, from: Option<usize>, to: Option<usize>, batched: bool) -> Arc<EventRun> {
        let from = from.map_or_else(Cut::default, |i| self.cuts[i]);
        let to = to.map_or(self.end, |i| self.cuts[i]);
        let (bytes, range, count) = match &self.view {
            Some(view) if batched => (
                view,
                from.view_bytes..to.view_bytes,
                to.view_count - from.view_count,
            ),
            _ => (&self.bytes, from.bytes..to.bytes, to.count - from.count),
        };
        // Its last message, if the part holds any.
        let last_id = if to.last_id > from.last_id {
            to.last_id
        } else {
            0
        };
        EventRun::up_to(
            bytes.slice(range),
            count,
            self.posted[from.posted..to.posted].to_vec(),
            last_id,
        )
    }
}

/// The parts of one pass handed out so far, each built once however many
/// members share it.
#[derive(Default)]
struct Parts(Vec<(PartOf, Arc<EventRun>)>);

/// A part of a pass: from a cut, to a cut, in the `presence_batch` view.
type PartOf = (Option<usize>, Option<usize>, bool);

impl Parts {
    fn get(
        &mut self,
        pass: &Pass,
        from: Option<usize>,
        to: Option<usize>,
        batched: bool,
    ) -> &Arc<EventRun> {
        let key = (from, to, batched);
        let i = match self.0.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.0.push((key, pass.run(from, to, batched)));
                self.0.len() - 1
            }
        };
        &self.0[i].1
    }
}

/// How often the lag gauge is refreshed when no events flow.
const LAG_SAMPLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Passes smaller than this yield once before they are handed out.
const COALESCE_BELOW: usize = 3;

/// The room delivery actor. Runs until the `room` topic closes.
///
/// Events are handled in passes of at most `batch` (a quarter of the outbox
/// limit). After a pass that left some member halfway to its outbox limit,
/// delivery waits until the writer shards have swept what was dirty: a burst
/// (a join storm, a flood of messages) then never runs far ahead of the
/// writes, and is not mistaken for a slow member. The shards never wait on a
/// socket, so this waits only for CPU.
pub async fn run(
    mut room: Receiver<RoomEvent>,
    mut delivery: RoomDelivery,
    outbox_limit: usize,
    shards: Arc<Shards>,
) {
    let m = metrics();
    let batch = (outbox_limit / 4).clamp(1, 64);
    let mut sample = tokio::time::interval(LAG_SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let presence_due = delivery.presence_due();
        let event = tokio::select! {
            event = room.recv_direct() => match event {
                Ok(event) => event,
                Err(_) => break,
            },
            // While the room is quiet, keep the lag gauge true: it falls
            // back to zero as writers drain.
            _ = sample.tick() => {
                m.lag_room_delivery.set((room.len() + delivery.deepest_now()) as f64);
                continue;
            }
            _ = tokio::time::sleep_until(presence_due.unwrap_or_else(tokio::time::Instant::now)), if presence_due.is_some() => {
                delivery.flush_presence();
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
        // A pass of one or two events: other sessions may already be woken
        // with a `say` read (their publish woke this task, which runs first
        // from the scheduler's LIFO slot). Letting them run once puts their
        // events in this pass instead of one pass each over every member.
        if handled < COALESCE_BELOW {
            tokio::task::yield_now().await;
            while handled < batch {
                let Ok(event) = room.try_recv() else { break };
                delivery.handle(event);
                handled += 1;
            }
        }
        delivery.flush();
        if delivery
            .presence_due()
            .is_some_and(|due| due <= tokio::time::Instant::now())
        {
            delivery.flush_presence();
        }
        // One gauge update per batch, not per event.
        let deepest = delivery.take_deepest();
        m.lag_room_delivery.set((room.len() + deepest) as f64);
        // A member halfway to its outbox limit: let the shards catch up
        // before handing out more. Only then, so that a room keeping up
        // never waits, and admission, publishing behind it, neither.
        if deepest >= outbox_limit / 2 {
            shards.caught_up().await;
        }
        if handled == batch {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests;
