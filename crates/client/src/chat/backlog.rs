//! The chat log as the client pages through it (version 1.1, feature
//! `history`): which messages are already shown, the oldest of them (what
//! `/history` asks before), and whether the server has older ones.
//!
//! Pages overlap what is shown: a reconnected client gets the newest
//! messages again after its `welcome`. Each message is shown once, by id;
//! ids compare only within one `epoch` (the store's name), so a new epoch
//! forgets what was seen.

use std::collections::BTreeSet;

use crate::Event;
use crate::protocol::{Feature, Features};

/// Ids remembered to show each message once. A page asks before the oldest
/// shown, so only the newest ids can come again (in the page after a
/// reconnect); the bound keeps a long session's memory flat.
const MAX_SEEN: usize = 20_000;

/// Messages `/history` asks for when no number is given.
pub const DEFAULT_PAGE: u32 = 20;

/// The most `/history` asks for at once: the largest `history_page_max` a
/// server can be configured with. The server sends at most its own cap (200
/// by default), with `more` when older messages remain.
pub const MAX_PAGE: u32 = 1000;

/// Where the history stands for the connection of the moment.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// The server granted `history` to this connection.
    enabled: bool,
    /// The store the ids below belong to.
    epoch: Option<String>,
    seen: BTreeSet<u64>,
    /// The smallest id shown in this epoch.
    oldest: Option<u64>,
    /// Whether messages older than `oldest` exist, as the server last said.
    more: Option<bool>,
    /// The next `history` frame is the one after `welcome`.
    join_page_due: bool,
    /// A `history` request is waiting for its answer.
    asked: bool,
}

/// A `history` request: the `limit` messages with ids below `before` (the
/// newest when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub before: Option<i64>,
    pub limit: i64,
}

/// Which `history` frame a page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// The newest messages, sent after `welcome`.
    Join,
    /// The answer to a `history` request.
    Requested,
}

/// A `history` frame, with what it adds to what is shown.
#[derive(Debug)]
pub struct Page<'e> {
    pub kind: PageKind,
    /// The `message` maps of the page not shown before, oldest first.
    pub new: Vec<&'e Event>,
    /// The server has messages older than the oldest now shown.
    pub more: bool,
}

impl Backlog {
    /// A new connection entered the room with `features`: the `history`
    /// frame comes next if it has `history`.
    pub fn entered(&mut self, features: Features) {
        self.enabled = features.has(Feature::History);
        self.join_page_due = self.enabled;
        self.asked = false;
    }

    /// Whether the server keeps history for this connection.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A request is out and not yet answered.
    pub fn asked(&self) -> bool {
        self.asked
    }

    /// A request was refused (an `error` came instead of a page, which the
    /// client cannot tell apart from errors for other requests): asking
    /// again is allowed.
    pub fn refused(&mut self) {
        self.asked = false;
    }

    /// Notes a live `message`.
    pub fn live(&mut self, id: u64) {
        self.remember(id);
    }

    fn remember(&mut self, id: u64) -> bool {
        self.oldest = Some(self.oldest.map_or(id, |o| o.min(id)));
        let new = self.seen.insert(id);
        while self.seen.len() > MAX_SEEN {
            self.seen.pop_first();
        }
        new
    }

    /// Takes in a `history` frame and returns what it adds.
    pub fn page<'e>(&mut self, messages: &'e [Event], more: bool, epoch: &str) -> Page<'e> {
        let kind = if self.join_page_due {
            self.join_page_due = false;
            PageKind::Join
        } else {
            self.asked = false;
            PageKind::Requested
        };
        if self.epoch.as_deref() != Some(epoch) {
            // Another store: its ids say nothing about those shown.
            self.seen.clear();
            self.oldest = None;
            self.more = None;
            self.epoch = Some(epoch.to_string());
        }
        let oldest_before = self.oldest;
        let mut page_oldest = None::<u64>;
        let mut new = Vec::new();
        for message in messages {
            if let Event::Message { id, .. } = message {
                page_oldest = Some(page_oldest.map_or(*id, |o| o.min(*id)));
                if self.remember(*id) {
                    new.push(message);
                }
            }
        }
        // A page says whether older messages exist before its own oldest;
        // that is news only if the page reaches back as far as what is shown
        // (a reconnection's page may hold only the newest).
        let reaches_back = match (page_oldest, oldest_before) {
            (_, None) => true,
            (Some(page), Some(shown)) => page <= shown,
            (None, Some(_)) => kind == PageKind::Requested,
        };
        if reaches_back {
            self.more = Some(more);
        }
        Page {
            kind,
            new,
            more: self.more.unwrap_or(more),
        }
    }

    /// The `history` request for the `limit` messages before the oldest
    /// shown, or why there is none to make.
    pub fn request(&mut self, limit: u32) -> Result<Ask, &'static str> {
        if !self.enabled {
            return Err("this server keeps no history for this client");
        }
        if self.asked {
            return Err("earlier messages are on their way");
        }
        if self.more == Some(false) {
            return Err("no older messages");
        }
        self.asked = true;
        Ok(Ask {
            before: self.oldest.map(|id| i64::try_from(id).unwrap_or(i64::MAX)),
            limit: i64::from(limit.clamp(1, MAX_PAGE)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64) -> Event {
        Event::Message {
            id,
            from: "bob".into(),
            text: format!("m{id}").into(),
            ts: id,
            attachment: None,
        }
    }

    fn ids(page: &Page<'_>) -> Vec<u64> {
        page.new
            .iter()
            .map(|m| match m {
                Event::Message { id, .. } => *id,
                _ => unreachable!(),
            })
            .collect()
    }

    fn history() -> Features {
        Features::NONE.with(Feature::History)
    }

    #[test]
    fn pages_show_each_message_once_and_ask_before_the_oldest() {
        let mut b = Backlog::default();
        b.entered(history());
        let join: Vec<_> = (10..=12).map(message).collect();
        let page = b.page(&join, true, "e1");
        assert_eq!(
            (page.kind, ids(&page), page.more),
            (PageKind::Join, vec![10, 11, 12], true)
        );
        b.live(13);
        assert_eq!(
            b.request(5),
            Ok(Ask {
                before: Some(10),
                limit: 5
            })
        );
        assert_eq!(b.request(5), Err("earlier messages are on their way"));
        let older: Vec<_> = (7..=9).map(message).collect();
        let page = b.page(&older, false, "e1");
        assert_eq!(
            (page.kind, ids(&page), page.more),
            (PageKind::Requested, vec![7, 8, 9], false)
        );
        assert_eq!(b.request(5), Err("no older messages"));
        // Reconnected: the newest again, only the missed one is new, and
        // what is known about older messages stays.
        b.entered(history());
        let again: Vec<_> = (11..=14).map(message).collect();
        let page = b.page(&again, true, "e1");
        assert_eq!(
            (page.kind, ids(&page), page.more),
            (PageKind::Join, vec![14], false)
        );
    }

    #[test]
    fn a_new_epoch_forgets_the_ids_seen() {
        let mut b = Backlog::default();
        b.entered(history());
        b.page(&[message(5)], false, "old");
        b.entered(history());
        let again = [message(1), message(5)];
        let page = b.page(&again, true, "new");
        assert_eq!(ids(&page), [1, 5]);
        assert_eq!(
            b.request(5000),
            Ok(Ask {
                before: Some(1),
                limit: MAX_PAGE as i64
            })
        );
    }

    #[test]
    fn without_history_nothing_is_asked() {
        let mut b = Backlog::default();
        b.entered(Features::NONE);
        assert_eq!(
            b.request(1),
            Err("this server keeps no history for this client")
        );
        // An empty room: nothing before the first live message either.
        b.entered(history());
        b.page(&[], false, "e");
        b.live(1);
        assert_eq!(b.request(1), Err("no older messages"));
    }

    #[test]
    fn a_refused_request_can_be_made_again() {
        let mut b = Backlog::default();
        b.entered(history());
        b.page(&[message(3)], true, "e");
        assert!(b.request(1).is_ok());
        b.refused();
        assert!(b.request(1).is_ok());
    }
}
