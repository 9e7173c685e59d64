//! The newest messages of the log, in memory: the `history` after
//! `welcome` and most `history` requests are served from here without
//! touching the store.
//!
//! Room delivery adds every message as it hands it out, so what a new member
//! is sent here and the live messages that follow it meet exactly.

use std::collections::VecDeque;

use super::Logged;

/// The newest messages, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct Recent {
    messages: VecDeque<Logged>,
    capacity: usize,
    /// Whether the store holds messages older than the oldest here.
    older: bool,
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
        };
        for message in messages {
            recent.push(message);
        }
        recent
    }

    /// Adds the newest message, forgetting the oldest past the capacity.
    pub fn push(&mut self, message: Logged) {
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
            self.older = true;
        }
        self.messages.push_back(message);
    }

    /// The newest `limit` messages and whether older ones exist.
    pub fn newest(&self, limit: usize) -> (impl Iterator<Item = &Logged>, bool) {
        let skip = self.messages.len().saturating_sub(limit);
        (self.messages.iter().skip(skip), skip > 0 || self.older)
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
