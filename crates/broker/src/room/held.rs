//! Held places: the seats and queue places of dropped `resume` clients,
//! under their tokens, until they are taken back or the grace ends.
//!
//! The session of a dropped connection puts its place here (with its name
//! claim, so the name stays taken) before it tells admission. A `hello`
//! with the token takes it out; admission takes it out when the grace ends.
//! Whoever takes it first owns it, so a place is either resumed or
//! released, never both, and a token works once.
//!
//! Tokens of connections still open are known too. A client whose network
//! failed usually reconnects before the server has noticed the old
//! connection is dead (that takes `idle_timeout`, or a failed write); its
//! token then names a live connection, which is ended as dropped so that
//! the new one takes its place at once ([`HeldPlaces::take_over`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anteroom_protocol::LeftReason;
use tokio::sync::Notify;

use crate::conn::handle::{ConnId, Peer};
use crate::room::names::NameClaim;

/// Longest a `hello` waits for a live connection it ends to give up its
/// place: the old session holds it as soon as it sees the end.
const TAKE_OVER_LIMIT: Duration = Duration::from_secs(2);

/// One held place.
#[derive(Debug)]
pub struct HeldPlace {
    /// The connection that dropped.
    pub id: ConnId,
    /// Its name, as stored.
    pub name: Arc<str>,
    /// Keeps the name taken while the place is held.
    pub claim: Option<NameClaim>,
    /// The last `message` written to the old connection.
    pub written_id: u64,
}

/// The held places, and the open connections that could hold one, by
/// token.
#[derive(Debug, Default)]
pub struct HeldPlaces {
    by_token: Mutex<HashMap<Box<str>, HeldPlace>>,
    live: Mutex<HashMap<Box<str>, Live>>,
    /// Told whenever a place is held.
    held: Notify,
}

#[derive(Debug)]
struct Live {
    peer: Weak<Peer>,
    name: Arc<str>,
}

/// Names compare case-insensitively.
fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

impl HeldPlaces {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, HeldPlace>> {
        // Every critical section is one map operation.
        self.by_token.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An open connection was given `token`.
    pub fn open(&self, token: &str, peer: &Arc<Peer>, name: Arc<str>) {
        let peer = Arc::downgrade(peer);
        self.live().insert(token.into(), Live { peer, name });
    }

    /// The connection with `token` ended without its place being held.
    pub fn closed(&self, token: &str) {
        self.live().remove(token);
    }

    /// Holds `place` under `token`.
    pub fn hold(&self, token: &str, place: HeldPlace) {
        self.live().remove(token);
        self.lock().insert(token.into(), place);
        self.held.notify_waiters();
    }

    /// A resuming `hello`: the place held under `token`, if its name is
    /// `name` (compared like names are). A wrong name leaves it held.
    pub fn take(&self, token: &str, name: &str) -> Option<HeldPlace> {
        let mut places = self.lock();
        let place = places.get(token)?;
        if !same_name(&place.name, name) {
            return None;
        }
        places.remove(token)
    }

    /// [`HeldPlaces::take`], and if `token` belongs to a connection still
    /// open under `name`, ends that connection as dropped and takes the
    /// place it leaves.
    pub async fn take_over(&self, token: &str, name: &str) -> Option<HeldPlace> {
        if let Some(place) = self.take(token, name) {
            return Some(place);
        }
        let old = {
            let live = self.live();
            let entry = live.get(token)?;
            if !same_name(&entry.name, name) {
                return None;
            }
            entry.peer.upgrade()?
        };
        let held = self.held.notified();
        tokio::pin!(held);
        held.as_mut().enable();
        old.kick(LeftReason::Disconnected, None);
        tokio::time::timeout(TAKE_OVER_LIMIT, async {
            loop {
                if let Some(place) = self.take(token, name) {
                    return Some(place);
                }
                held.as_mut().await;
                held.set(self.held.notified());
                held.as_mut().enable();
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The grace ended: the place under `token`, unless a `hello` took it.
    pub fn release(&self, token: &str) -> Option<HeldPlace> {
        self.lock().remove(token)
    }

    /// Places held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no place is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(id: ConnId, name: &str) -> HeldPlace {
        HeldPlace {
            id,
            name: name.into(),
            claim: None,
            written_id: 0,
        }
    }

    #[test]
    fn a_token_works_once_and_for_its_name_only() {
        let held = HeldPlaces::new();
        held.hold("t", place(1, "Ann"));
        assert!(held.take("t", "bob").is_none());
        assert!(held.take("x", "ann").is_none());
        assert_eq!(held.take("t", "aNN").map(|p| p.id), Some(1));
        assert!(held.take("t", "ann").is_none());
        assert!(held.release("t").is_none());
    }

    #[test]
    fn release_and_take_exclude_each_other() {
        let held = HeldPlaces::new();
        held.hold("t", place(1, "ann"));
        assert!(held.release("t").is_some());
        assert!(held.take("t", "ann").is_none());
        assert!(held.is_empty());
    }
}
