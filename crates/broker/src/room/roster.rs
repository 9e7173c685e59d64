//! The roster: who is in the room, in join order, for answering `who`.
//!
//! It follows the `room` topic like any other subscriber and keeps its own
//! view, shared with sessions behind a short lock. The encoded `users` frame
//! is cached until the next join or leave, so a burst of `who` requests costs
//! one encoding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_broadcast::Receiver;
use bytes::Bytes;

use crate::bus::RoomEvent;
use crate::conn::handle::ConnId;
use crate::telemetry::metrics;
use anteroom_protocol::ServerMessage;

#[derive(Debug, Default)]
struct Inner {
    /// Names by join sequence number: iteration is join order.
    by_seq: BTreeMap<u64, Arc<str>>,
    seq_of: HashMap<ConnId, u64>,
    next_seq: u64,
    users_frame: Option<Bytes>,
}

/// The room's members in join order.
#[derive(Debug, Default)]
pub struct Roster {
    inner: Mutex<Inner>,
    /// Told after every join and leave.
    changed: tokio::sync::Notify,
}

/// Longest a `who` waits for the roster to list the member asking.
const CATCH_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Roster {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a member entering the room.
    pub fn join(&self, id: ConnId, name: Arc<str>) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.by_seq.insert(seq, name);
        inner.seq_of.insert(id, seq);
        inner.users_frame = None;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// A resumed member keeps its place in join order under its new
    /// connection.
    pub fn rename(&self, old: ConnId, new: ConnId) {
        let mut inner = self.lock();
        if let Some(seq) = inner.seq_of.remove(&old) {
            inner.seq_of.insert(new, seq);
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Records a member leaving the room.
    pub fn leave(&self, id: ConnId) {
        let mut inner = self.lock();
        if let Some(seq) = inner.seq_of.remove(&id) {
            inner.by_seq.remove(&seq);
            inner.users_frame = None;
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The `users` frame for a member's `who`, once the roster lists that
    /// member. The roster follows the `room` topic beside room delivery, so
    /// a member who asks the moment its `welcome` arrives could otherwise be
    /// missing from the answer. Waits at most [`CATCH_UP_LIMIT`].
    pub async fn users_frame_for(&self, id: ConnId) -> Bytes {
        let _ = tokio::time::timeout(CATCH_UP_LIMIT, async {
            loop {
                let changed = self.changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if self.lock().seq_of.contains_key(&id) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        self.users_frame()
    }

    /// Member names in join order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.lock().by_seq.values().cloned().collect()
    }

    /// Members in the room.
    pub fn len(&self) -> usize {
        self.lock().by_seq.len()
    }

    /// Whether the room is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `users` frame answering `who`.
    pub fn users_frame(&self) -> Bytes {
        let mut inner = self.lock();
        if let Some(frame) = &inner.users_frame {
            return frame.clone();
        }
        let frame = ServerMessage::Users {
            names: inner
                .by_seq
                .values()
                .map(|n| std::borrow::Cow::Borrowed(&**n))
                .collect(),
        }
        .to_frame();
        inner.users_frame = Some(frame.clone());
        frame
    }
}

/// The roster actor. Runs until the `room` topic closes.
pub async fn run(mut room: Receiver<RoomEvent>, roster: Arc<Roster>) {
    let m = metrics();
    while let Ok(event) = room.recv_direct().await {
        match event {
            RoomEvent::MemberJoined { peer, name, .. } => roster.join(peer.id, name),
            RoomEvent::MemberLeft { id, .. } | RoomEvent::RemoteLeft { id, .. } => roster.leave(id),
            RoomEvent::RemoteJoined { id, name, .. } => roster.join(id, name),
            RoomEvent::MemberResumed { old, peer, .. } => roster.rename(old, peer.id),
            RoomEvent::MessagePosted { .. } => {}
        }
        m.lag_roster.set(room.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_join_order_and_caches_the_frame() {
        let r = Roster::new();
        r.join(1, "ann".into());
        r.join(2, "bob".into());
        r.join(3, "cid".into());
        r.leave(2);
        r.join(4, "bob".into());
        let names: Vec<String> = r.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["ann", "cid", "bob"]);
        let a = r.users_frame();
        assert_eq!(a, r.users_frame());
        r.leave(1);
        assert_ne!(a, r.users_frame());
    }
}
