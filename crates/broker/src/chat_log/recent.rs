//! The newest messages of the log, in memory: the `history` after
//! `welcome` and most `history` requests are served from here without
//! touching the store.
//!
//! Room delivery adds every message as it hands it out, so what a new member
//! is sent here and the live messages that follow it meet exactly. A
//! message leaves memory only once the committer is done with it (written,
//! or given up on): a page below memory then finds in the store everything
//! the log will ever hold there.

use std::collections::VecDeque;

use super::Logged;

/// The newest messages, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct Recent {
    messages: VecDeque<Logged>,
    capacity: usize,
    /// Whether the store holds messages older than the oldest here.
    older: bool,
    /// The `history` frame for joining members, until something changes.
    join_frame: Option<bytes::Bytes>,
}

/// A page as far as memory can answer it.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// The whole page: messages oldest first, and whether older ones exist.
    Complete { messages: Vec<Logged>, more: bool },
    /// Memory holds only the newest part (`tail`, possibly empty): the rest
    /// is `limit` messages before `before`, from the store.
    Store {
        tail: Vec<Logged>,
        before: u64,
        limit: usize,
    },
}

impl Recent {
    /// Starts from the newest messages of the store (`messages`, oldest
    /// first); `older` says whether the store holds more before them.
    pub fn new(capacity: usize, messages: Vec<Logged>, older: bool) -> Self {
        let capacity = capacity.max(1);
        let mut recent = Self {
            messages: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            older,
            join_frame: None,
        };
        for message in messages {
            recent.push(message, u64::MAX);
        }
        recent
    }

    /// Adds the newest message, forgetting the oldest past the capacity
    /// among those the committer is done with (ids up to `settled`).
    pub fn push(&mut self, message: Logged, settled: u64) {
        self.join_frame = None;
        self.messages.push_back(message);
        self.trim(settled);
    }

    /// Forgets the oldest messages past the capacity, as far as the
    /// committer is done with them.
    pub fn trim(&mut self, settled: u64) {
        while self.messages.len() > self.capacity
            && self.messages.front().is_some_and(|m| m.id <= settled)
        {
            self.messages.pop_front();
            self.older = true;
            self.join_frame = None;
        }
    }

    /// The cached `history` frame for joining members, built by `build`
    /// when something changed since the last one.
    pub fn join_frame(&mut self, build: impl FnOnce(&Recent) -> bytes::Bytes) -> bytes::Bytes {
        if let Some(frame) = &self.join_frame {
            return frame.clone();
        }
        let frame = build(self);
        self.join_frame = Some(frame.clone());
        frame
    }

    /// The oldest message's id, and whether older ones are thought to exist.
    pub fn oldest(&self) -> Option<(u64, bool)> {
        self.messages.front().map(|m| (m.id, self.older))
    }

    /// The store holds nothing older than `oldest` (as checked while it
    /// was still the oldest here).
    pub fn none_older_than(&mut self, oldest: u64) {
        if self.messages.front().is_some_and(|m| m.id == oldest) {
            self.older = false;
            self.join_frame = None;
        }
    }

    /// The newest `limit` messages and whether older ones exist.
    pub fn newest(&self, limit: usize) -> (impl Iterator<Item = &Logged>, bool) {
        let skip = self.messages.len().saturating_sub(limit);
        (self.messages.iter().skip(skip), skip > 0 || self.older)
    }

    /// The newest `limit` messages with an id above `after`, and whether
    /// older ones above it may exist (here, or in the store below memory).
    pub fn since(&self, after: u64, limit: usize) -> (impl Iterator<Item = &Logged>, bool) {
        let first = self.messages.partition_point(|m| m.id <= after);
        let missed = self.messages.len() - first;
        let skip = first + missed.saturating_sub(limit);
        let below_memory =
            first == 0 && self.older && self.messages.front().is_some_and(|m| m.id > after + 1);
        (
            self.messages.iter().skip(skip),
            missed > limit || below_memory,
        )
    }

    /// The newest `limit` messages with an id below `before`.
    pub fn page(&self, before: u64, limit: usize) -> Lookup {
        // Messages are in id order: the ones below `before` are a prefix.
        let end = self.messages.partition_point(|m| m.id < before);
        let start = end.saturating_sub(limit);
        let tail: Vec<Logged> = self.messages.range(start..end).cloned().collect();
        if tail.len() == limit || (start == 0 && !self.older) {
            return Lookup::Complete {
                more: start > 0 || self.older,
                messages: tail,
            };
        }
        let before = match self.messages.front() {
            Some(oldest) if end > 0 => oldest.id,
            _ => before,
        };
        Lookup::Store {
            limit: limit - tail.len(),
            tail,
            before,
        }
    }

    /// Forgets messages deleted by retention from the store.
    pub fn forget_before(&mut self, ts: u64) {
        while self.messages.front().is_some_and(|m| m.ts < ts) {
            self.messages.pop_front();
            self.join_frame = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn message(id: u64) -> Logged {
        Logged {
            id,
            from: Arc::from("ann"),
            text: Arc::from(id.to_string()),
            ts: id,
            attachment: None,
        }
    }

    fn ids(messages: &[Logged]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    #[test]
    fn what_a_resumed_member_missed() {
        let recent = Recent::new(5, (1..=8).map(message).collect(), false);
        let since = |after, limit| {
            let (messages, more) = recent.since(after, limit);
            (messages.map(|m| m.id).collect::<Vec<_>>(), more)
        };
        assert_eq!(since(6, 10), (vec![7, 8], false));
        assert_eq!(since(8, 10), (vec![], false));
        // More missed than a page: the newest, and `more`.
        assert_eq!(since(4, 2), (vec![7, 8], true));
        // Right at memory's edge: nothing below it was missed.
        assert_eq!(since(3, 10), (vec![4, 5, 6, 7, 8], false));
        // Below memory: the store may hold missed ones.
        assert_eq!(since(1, 10), (vec![4, 5, 6, 7, 8], true));
    }

    #[test]
    fn a_page_inside_memory_is_complete() {
        let recent = Recent::new(5, (1..=8).map(message).collect(), false);
        // Capacity 5: 4..=8 kept, and older ones exist.
        let (newest, more) = recent.newest(3);
        assert_eq!(newest.map(|m| m.id).collect::<Vec<_>>(), [6, 7, 8]);
        assert!(more);
        match recent.page(8, 2) {
            Lookup::Complete { messages, more } => {
                assert_eq!(ids(&messages), [6, 7]);
                assert!(more);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_page_past_memory_asks_the_store_for_the_rest() {
        let recent = Recent::new(5, (1..=8).map(message).collect(), false);
        assert_eq!(
            recent.page(6, 4),
            Lookup::Store {
                tail: vec![message(4), message(5)],
                before: 4,
                limit: 2
            }
        );
        assert_eq!(
            recent.page(3, 2),
            Lookup::Store {
                tail: vec![],
                before: 3,
                limit: 2
            }
        );
    }

    #[test]
    fn messages_not_yet_committed_stay_past_the_capacity() {
        let mut recent = Recent::new(3, Vec::new(), false);
        for id in 1..=5 {
            recent.push(message(id), 1);
        }
        // Only 1 was committed: 2 to 5 stay, and a page below 2 is whole
        // in the store.
        assert_eq!(recent.oldest(), Some((2, true)));
        recent.trim(5);
        assert_eq!(recent.oldest(), Some((3, true)));
        recent.none_older_than(2);
        assert_eq!(recent.oldest(), Some((3, true)));
        recent.none_older_than(3);
        assert_eq!(recent.oldest(), Some((3, false)));
    }

    #[test]
    fn a_log_held_whole_in_memory_never_asks_the_store() {
        let recent = Recent::new(50, (1..=8).map(message).collect(), false);
        match recent.page(u64::MAX, 20) {
            Lookup::Complete { messages, more } => {
                assert_eq!(messages.len(), 8);
                assert!(!more);
            }
            other => panic!("{other:?}"),
        }
        let (_, more) = recent.newest(8);
        assert!(!more);
    }

    proptest! {
        /// Memory and the store together give exactly the page a full log
        /// would: the newest `limit` ids below `before`, oldest first.
        #[test]
        fn memory_plus_store_is_the_whole_log(
            count in 0u64..40, capacity in 1usize..20, before in 0u64..45, limit in 1usize..15
        ) {
            let all: Vec<Logged> = (1..=count).map(message).collect();
            let recent = Recent::new(capacity, all.clone(), false);
            let expected: Vec<u64> = {
                let below: Vec<u64> = ids(&all).into_iter().filter(|id| *id < before).collect();
                below[below.len().saturating_sub(limit)..].to_vec()
            };
            let got = match recent.page(before, limit) {
                Lookup::Complete { messages, .. } => ids(&messages),
                Lookup::Store { tail, before, limit } => {
                    let below: Vec<u64> = ids(&all).into_iter().filter(|id| *id < before).collect();
                    let mut page = below[below.len().saturating_sub(limit)..].to_vec();
                    page.extend(ids(&tail));
                    page
                }
            };
            prop_assert_eq!(got, expected);
        }
    }
}
