//! Presence batches: the joins and leaves a `presence_batch` member is told
//! at most once per `presence_interval`, as one `presence` frame.
//!
//! [`PresenceBatch`] records the room's changes in order and, when room
//! delivery flushes it, reduces them to the net change: who was not in the
//! room when the batch opened and is now (`joined`), who was and is not
//! (`left`, with the reason of the last departure), and who left and came
//! back (both lists, applied `left` first). A name that joined and left
//! within the batch appears in neither. The frame is encoded once and shared
//! by every member that takes batches.
//!
//! A member that entered while the batch was open started from its
//! `welcome`'s list of users, not from the batch's start. Applying the
//! shared frame to that list is right for every name (a `joined` it already
//! has and a `left` it never had change nothing) except a name that entered
//! before it and left again within the batch: the shared frame mentions
//! neither, yet the member has it. Such a member gets its own frame with
//! those names added to `left` ([`Flushed::for_member`]); in a room under
//! churn that is rare, so nearly everyone shares one encoding.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use anteroom_protocol::{LeftReason, PresenceLeft, ServerMessage};

#[derive(Debug, Clone)]
struct Change {
    name: Arc<str>,
    /// `None`: joined; `Some(reason)`: left.
    left: Option<LeftReason>,
}

/// The changes since the last flush.
#[derive(Debug, Default)]
pub struct PresenceBatch {
    changes: Vec<Change>,
    /// Names whose latest change in the batch is a join: a message from one
    /// of them must not overtake its `joined`.
    joined_now: HashMap<Arc<str>, ()>,
}

/// What a flush produced: the shared frame, and what a member that entered
/// during the batch may need besides.
#[derive(Debug)]
pub struct Flushed {
    /// The frame for every member that was in the room when the batch
    /// opened.
    pub shared: Bytes,
    /// Names that entered and left again within the batch, with the change
    /// index of their first entry and of their last departure.
    vanished: Vec<(Arc<str>, usize, usize, LeftReason)>,
    joined: Vec<Arc<str>>,
    left: Vec<(Arc<str>, LeftReason)>,
    ts: u64,
}

impl PresenceBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Changes pending.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Where the batch stands: a member entering now records this, and its
    /// frame is judged from here ([`Flushed::for_member`]).
    pub fn mark(&self) -> usize {
        self.changes.len()
    }

    /// `name` entered the room.
    pub fn joined(&mut self, name: Arc<str>) {
        self.joined_now.insert(name.clone(), ());
        self.changes.push(Change { name, left: None });
    }

    /// `name` left the room.
    pub fn left(&mut self, name: Arc<str>, reason: LeftReason) {
        self.joined_now.remove(&name);
        self.changes.push(Change {
            name,
            left: Some(reason),
        });
    }

    /// Whether the pending batch holds the `joined` of `name`, which must
    /// then be sent before that member's first message.
    pub fn holds_join_of(&self, name: &str) -> bool {
        !self.joined_now.is_empty() && self.joined_now.contains_key(name)
    }

    /// Reduces the pending changes to one frame stamped `ts` and starts a new
    /// batch; `None` when nothing is pending.
    pub fn flush(&mut self, ts: u64) -> Option<Flushed> {
        if self.changes.is_empty() {
            return None;
        }
        self.joined_now.clear();
        let changes = std::mem::take(&mut self.changes);
        // Per name, in order of first appearance: its first and last change.
        let mut order: Vec<Arc<str>> = Vec::new();
        let mut seen: HashMap<&str, (usize, usize)> = HashMap::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            seen.entry(&change.name)
                .and_modify(|(_, last)| *last = i)
                .or_insert_with(|| {
                    order.push(change.name.clone());
                    (i, i)
                });
        }
        let mut joined = Vec::new();
        let mut left = Vec::new();
        let mut vanished = Vec::new();
        for name in order {
            let (first, last) = seen[&*name];
            let was_in = changes[first].left.is_some();
            match (was_in, changes[last].left) {
                (true, Some(reason)) => left.push((name, reason)),
                (false, None) => joined.push(name),
                (true, None) => {
                    // Left and came back: the reason is the last departure's.
                    let reason = changes[..last]
                        .iter()
                        .rev()
                        .find(|c| c.name == name)
                        .and_then(|c| c.left)
                        .unwrap_or(LeftReason::Disconnected);
                    left.push((name.clone(), reason));
                    joined.push(name);
                }
                (false, Some(reason)) => vanished.push((name, first, last, reason)),
            }
        }
        let shared = encode(&joined, &left, &[], ts);
        Some(Flushed {
            shared,
            vanished,
            joined,
            left,
            ts,
        })
    }
}

impl Flushed {
    /// The frame for a member that entered at `mark` during this batch: the
    /// shared one, unless names it was given in its `welcome` vanished
    /// again within the batch.
    pub fn for_member(&self, mark: usize) -> Option<Bytes> {
        // Entered before the member and left after it: the member has it.
        let extra: Vec<(Arc<str>, LeftReason)> = self
            .vanished
            .iter()
            .filter(|(_, first, last, _)| *first < mark && *last >= mark)
            .map(|(name, _, _, reason)| (name.clone(), *reason))
            .collect();
        (!extra.is_empty()).then(|| encode(&self.joined, &self.left, &extra, self.ts))
    }

    /// Names in the shared frame, for the batch size metric.
    pub fn changes(&self) -> usize {
        self.joined.len() + self.left.len()
    }
}

fn encode(
    joined: &[Arc<str>],
    left: &[(Arc<str>, LeftReason)],
    extra: &[(Arc<str>, LeftReason)],
    ts: u64,
) -> Bytes {
    ServerMessage::Presence {
        joined: joined.iter().map(|n| Cow::Borrowed(&**n)).collect(),
        left: left
            .iter()
            .chain(extra)
            .map(|(name, reason)| PresenceLeft {
                name: Cow::Borrowed(name),
                reason: *reason,
            })
            .collect(),
        ts,
    }
    .to_frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn decode(frame: &Bytes) -> (Vec<String>, Vec<(String, LeftReason)>) {
        match ServerMessage::decode(&frame[4..]).unwrap() {
            ServerMessage::Presence { joined, left, .. } => (
                joined.into_iter().map(|n| n.into_owned()).collect(),
                left.into_iter()
                    .map(|l| (l.name.into_owned(), l.reason))
                    .collect(),
            ),
            other => panic!("not a presence frame: {other:?}"),
        }
    }

    fn apply(users: &mut BTreeSet<String>, frame: &Bytes) {
        let (joined, left) = decode(frame);
        for (name, _) in left {
            users.remove(&name);
        }
        users.extend(joined);
    }

    #[test]
    fn nets_out_each_name() {
        let mut b = PresenceBatch::new();
        b.joined("ann".into());
        b.left("bob".into(), LeftReason::Bye);
        b.joined("cy".into());
        b.left("cy".into(), LeftReason::IdleTimeout);
        b.left("dee".into(), LeftReason::Disconnected);
        b.joined("dee".into());
        let f = b.flush(7).unwrap();
        let (joined, left) = decode(&f.shared);
        assert_eq!(joined, ["ann", "dee"]);
        assert_eq!(
            left,
            [
                ("bob".to_string(), LeftReason::Bye),
                ("dee".to_string(), LeftReason::Disconnected)
            ]
        );
        assert!(b.flush(8).is_none());
    }

    #[test]
    fn a_pending_join_is_known_until_left_or_flushed() {
        let mut b = PresenceBatch::new();
        b.joined("ann".into());
        assert!(b.holds_join_of("ann"));
        b.left("ann".into(), LeftReason::Bye);
        assert!(!b.holds_join_of("ann"));
        b.joined("bob".into());
        b.flush(1);
        assert!(!b.holds_join_of("bob"));
    }

    #[test]
    fn a_member_entering_mid_batch_loses_what_vanished_after_it() {
        let mut b = PresenceBatch::new();
        b.joined("ann".into());
        let mark = b.mark();
        b.left("ann".into(), LeftReason::Bye);
        let f = b.flush(1).unwrap();
        assert_eq!(decode(&f.shared), (vec![], vec![]));
        let own = f.for_member(mark).unwrap();
        assert_eq!(decode(&own).1, [("ann".to_string(), LeftReason::Bye)]);
        // One who entered before ann did not have her.
        assert!(f.for_member(0).is_none());
    }

    proptest! {
        /// Whenever a member entered, applying its frame to the users it
        /// was given leaves exactly the room as it is.
        #[test]
        fn every_member_ends_with_the_room(
            start in proptest::collection::btree_set(0u8..8, 0..8),
            steps in proptest::collection::vec(0u8..8, 0..40),
        ) {
            let name = |n: u8| format!("u{n}");
            let mut room: BTreeSet<String> = start.iter().map(|&n| name(n)).collect();
            let mut b = PresenceBatch::new();
            // Snapshots of the room a member would have been welcomed with.
            let mut entered = vec![(0, room.clone())];
            for step in steps {
                let n = name(step);
                if room.remove(&n) {
                    b.left(n.as_str().into(), LeftReason::Bye);
                } else {
                    room.insert(n.clone());
                    b.joined(n.as_str().into());
                }
                entered.push((b.mark(), room.clone()));
            }
            let Some(f) = b.flush(0) else { return Ok(()) };
            for (mark, mut users) in entered {
                let frame = f.for_member(mark).unwrap_or_else(|| f.shared.clone());
                apply(&mut users, &frame);
                prop_assert_eq!(&users, &room);
            }
        }
    }
}
