//! The protocol rules the soak's clients check: what one client can judge
//! alone as frames arrive (ids strictly increasing, each sender's messages
//! in order, presence, its own messages echoed or refused, queue positions
//! never going up), and the two that need the whole run (nothing lost,
//! first in, first out).

use std::collections::HashMap;

use super::shared::Shared;
use crate::lock;

// The fixed texts come from the protocol's vocabulary: the soak checks that
// the server sends them, not what they say.
pub(super) use anteroom_protocol::server::{WELCOME_DIRECT, WELCOME_FROM_QUEUE, queued_text};

/// What a client saw that the protocol forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// A member missed a message others received while it was in the room.
    Lost,
    /// The same message twice.
    Duplicate,
    /// Message ids going down, or a sender's messages out of order.
    Order,
    /// A queue position that went up.
    PositionIncreased,
    /// A client admitted ahead of one queued before it.
    Fifo,
    /// A message from, or the departure of, a user not in the room.
    Presence,
    /// An error frame the client did not provoke.
    UnexpectedError,
    /// A goodbye the client did not provoke.
    UnexpectedBye,
    /// The connection closed under a client that did nothing to deserve it.
    UnexpectedClose,
    /// A frame that is not a valid event.
    Decode,
    /// Anything else the protocol rules out (texts, sequence of frames).
    Protocol,
    /// A timeout that fired before its configured value.
    Timing,
    /// The server process went away.
    ServerExit,
}

impl Kind {
    pub(super) const ALL: [Kind; 13] = [
        Kind::Lost,
        Kind::Duplicate,
        Kind::Order,
        Kind::PositionIncreased,
        Kind::Fifo,
        Kind::Presence,
        Kind::UnexpectedError,
        Kind::UnexpectedBye,
        Kind::UnexpectedClose,
        Kind::Decode,
        Kind::Protocol,
        Kind::Timing,
        Kind::ServerExit,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Duplicate => "duplicate",
            Kind::Order => "order",
            Kind::PositionIncreased => "position_increased",
            Kind::Fifo => "fifo",
            Kind::Presence => "presence",
            Kind::UnexpectedError => "unexpected_error",
            Kind::UnexpectedBye => "unexpected_bye",
            Kind::UnexpectedClose => "unexpected_close",
            Kind::Decode => "decode",
            Kind::Protocol => "protocol",
            Kind::Timing => "timing",
            Kind::ServerExit => "server_exit",
        }
    }
}

pub(super) type Finding = (Kind, String);

/// The room as one member sees it, and the rules it can check alone.
#[derive(Debug, Default)]
pub(super) struct RoomView {
    /// Users in the room, counted (a name can briefly belong to a user who
    /// left and one who came in, in either order).
    roster: HashMap<String, u32>,
    last_id: u64,
    /// Ids received since the welcome or the last `gap`, as runs.
    runs: Vec<(u64, u64)>,
    /// Runs of earlier stretches, closed by a `gap`.
    closed: Vec<Vec<(u64, u64)>>,
    /// Last sequence number seen from each other sender.
    senders: HashMap<u64, u64>,
}

impl RoomView {
    pub(super) fn new(users: &[String]) -> Self {
        let mut view = Self::default();
        for user in users {
            view.joined(user);
        }
        view
    }

    pub(super) fn joined(&mut self, name: &str) {
        *self.roster.entry(name.to_string()).or_default() += 1;
    }

    pub(super) fn left(&mut self, name: &str) -> Option<Finding> {
        match self.roster.get_mut(name) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                self.roster.remove(name);
            }
            None => {
                return Some((
                    Kind::Presence,
                    format!("`left` for {name}, not in the room"),
                ));
            }
        }
        None
    }

    /// A `message`; `sender` is the other client's connection and sequence
    /// number (none for one's own messages, checked by [`Echoes`]).
    pub(super) fn message(
        &mut self,
        id: u64,
        from: &str,
        sender: Option<(u64, u64)>,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        if !self.roster.contains_key(from) {
            findings.push((
                Kind::Presence,
                format!("message {id} from {from}, not in the room"),
            ));
        }
        if id <= self.last_id {
            let seen = self
                .runs
                .iter()
                .chain(self.closed.iter().flatten())
                .any(|&(a, b)| a <= id && id <= b);
            findings.push(if seen {
                (Kind::Duplicate, format!("message {id} again"))
            } else {
                (
                    Kind::Order,
                    format!("message {id} after message {}", self.last_id),
                )
            });
            return findings;
        }
        self.last_id = id;
        match self.runs.last_mut() {
            Some(run) if run.1 + 1 == id => run.1 = id,
            _ => self.runs.push((id, id)),
        }
        if let Some((uid, seq)) = sender {
            match self.senders.insert(uid, seq) {
                Some(last) if last == seq => findings.push((
                    Kind::Duplicate,
                    format!("message {seq} of connection {uid} again (id {id})"),
                )),
                Some(last) if last > seq => findings.push((
                    Kind::Order,
                    format!("message {seq} of connection {uid} after its message {last} (id {id})"),
                )),
                _ => {}
            }
        }
        findings
    }

    /// Frames were skipped (`skip` policy): ids jump legitimately here.
    pub(super) fn gap(&mut self) {
        let runs = std::mem::take(&mut self.runs);
        if !runs.is_empty() {
            self.closed.push(runs);
        }
    }

    /// The stretches of ids received without a break in membership.
    pub(super) fn stretches(mut self) -> Vec<Vec<(u64, u64)>> {
        self.gap();
        self.closed
    }
}

/// A client's own messages: each `say` is echoed back to it, in order, or
/// refused with an error. Replies and room frames leave the server through
/// one queue per connection, so by the time the echo of message s arrives,
/// every earlier `say` that was not echoed has had its refusal delivered.
#[derive(Debug, Default)]
pub(super) struct Echoes {
    last: u64,
    /// Refusals (`rate_limited`, `not_admitted`) not yet matched to a `say`.
    refusals: u64,
}

impl Echoes {
    pub(super) fn refused(&mut self) {
        self.refusals += 1;
    }

    pub(super) fn echoed(&mut self, seq: u64) -> Option<Finding> {
        if seq <= self.last {
            return Some(if seq == self.last {
                (Kind::Duplicate, format!("own message {seq} echoed twice"))
            } else {
                (
                    Kind::Order,
                    format!("own message {seq} echoed after {}", self.last),
                )
            });
        }
        let skipped = seq - self.last - 1;
        let explained = skipped.min(self.refusals);
        self.refusals -= explained;
        self.last = seq;
        (skipped > explained).then(|| {
            (
                Kind::Lost,
                format!(
                    "{} own message(s) before {seq} neither echoed nor refused",
                    skipped - explained
                ),
            )
        })
    }
}

/// A queued client's positions.
#[derive(Debug, Default)]
pub(super) struct QueueTrack {
    last: Option<u64>,
    pub(super) welcomed: bool,
}

impl QueueTrack {
    pub(super) fn queued(&mut self, position: u64, text: &str) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.welcomed {
            findings.push((Kind::Protocol, "`queued` after `welcome`".to_string()));
        }
        if position == 0 {
            findings.push((Kind::Protocol, "queue position 0".to_string()));
        }
        if let Some(last) = self.last.filter(|&last| position > last) {
            findings.push((
                Kind::PositionIncreased,
                format!("position {last} then {position}"),
            ));
        }
        let expected = queued_text(position);
        if text != expected {
            findings.push((Kind::Protocol, format!("queued text {text:?}")));
        }
        self.last = Some(position);
        findings
    }
}

/// One member's stretch of received ids, for the end-of-run check.
#[derive(Debug)]
pub(super) struct Stretch {
    pub(super) member: String,
    pub(super) runs: Vec<(u64, u64)>,
}

/// Ids missing inside a stretch that some member received: lost for that
/// member, which was in the room before and after them.
pub(super) fn lost_messages(stretches: &[Stretch]) -> Vec<(usize, u64)> {
    let top = stretches
        .iter()
        .flat_map(|s| s.runs.iter().map(|r| r.1))
        .max()
        .unwrap_or(0);
    let mut received = vec![0u64; top as usize / 64 + 1];
    for run in stretches.iter().flat_map(|s| &s.runs) {
        for id in run.0..=run.1 {
            received[id as usize / 64] |= 1 << (id % 64);
        }
    }
    let mut lost = Vec::new();
    for (index, stretch) in stretches.iter().enumerate() {
        for pair in stretch.runs.windows(2) {
            for id in pair[0].1 + 1..pair[1].0 {
                if received[id as usize / 64] & (1 << (id % 64)) != 0 {
                    lost.push((index, id));
                }
            }
        }
    }
    lost
}

/// When a client sent the `hello` that got it in, and when it learned it
/// was queued, on one clock shared by all clients.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    pub(super) hello: u64,
    pub(super) queued: Option<u64>,
}

/// Clients admitted ahead of one that was already queued when they sent
/// their `hello`, given the order in which the observer saw them join.
pub(super) fn fifo_violations(joined: &[String], stamps: &HashMap<String, Stamp>) -> Vec<String> {
    let mut latest: Option<(u64, &str)> = None;
    let mut found = Vec::new();
    for name in joined {
        let Some(stamp) = stamps.get(name) else {
            continue;
        };
        if let (Some(queued), Some((hello, other))) = (stamp.queued, latest)
            && hello > queued
        {
            found.push(format!(
                "{other} entered before {name}, though {name} was queued before {other} said hello"
            ));
        }
        if latest.is_none_or(|(hello, _)| stamp.hello > hello) {
            latest = Some((stamp.hello, name));
        }
    }
    found
}

/// A client's `say` text: who said it (connection and name), its number,
/// and when (microseconds since the run's epoch), padded at random.
pub(super) fn say_text(uid: u64, seq: u64, sent_us: u64, name: &str, pad: usize) -> String {
    format!("{uid} {seq} {sent_us} {name} {}", "x".repeat(pad))
}

/// What [`say_text`] wrote, read back from a message.
pub(super) struct Said<'a> {
    pub(super) uid: u64,
    pub(super) seq: u64,
    pub(super) sent_us: u64,
    pub(super) name: &'a str,
}

pub(super) fn parse_text(text: &str) -> Option<Said<'_>> {
    let mut parts = text.split(' ');
    Some(Said {
        uid: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        sent_us: parts.next()?.parse().ok()?,
        name: parts.next()?,
    })
}

/// How much the whole-run rules covered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Coverage {
    pub(super) stretches: u64,
    pub(super) stretch_ids: u64,
    pub(super) fifo_promotions: u64,
}

/// Applies the rules that need the whole run, given the joins the observer
/// saw, and reports their violations.
pub(super) fn check_whole_run(shared: &Shared, joins: &[String]) -> Coverage {
    let stretches = std::mem::take(&mut *lock(&shared.stretches));
    for (index, id) in lost_messages(&stretches) {
        shared.report(
            Kind::Lost,
            format!("{} missed message {id}", stretches[index].member),
        );
    }
    for what in fifo_violations(joins, &lock(&shared.stamps)) {
        shared.report(Kind::Fifo, what);
    }
    let stretch_ids: u64 = stretches
        .iter()
        .filter_map(|s| Some(s.runs.last()?.1 - s.runs.first()?.0 + 1))
        .sum();
    let fifo_promotions = {
        let stamps = lock(&shared.stamps);
        joins
            .iter()
            .filter(|n| stamps.get(*n).is_some_and(|s| s.queued.is_some()))
            .count() as u64
    };
    Coverage {
        stretches: stretches.len() as u64,
        stretch_ids,
        fifo_promotions,
    }
}
