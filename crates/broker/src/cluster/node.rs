//! The `cluster` component: admission for this node's connections through
//! the cluster's scripts, and the cluster's log replayed onto this node's
//! bus, in its one order.
//!
//! It takes the place of the single node's admission and waitlist: it
//! consumes `presence` like admission, asks Redis to decide, and publishes
//! on `room` what the log says happened, with this node's members as
//! themselves and every other node's as remote members. Queued clients'
//! positions come from the global queue on the waitlist's conflation tick.
//!
//! When Redis cannot be reached, or this node's lease ran out, or the
//! epoch changed, the node stops admitting, says `bye{shutdown}` to its
//! clients, reports not ready, and joins again once Redis answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_broadcast::Receiver;
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::entry::{Entry, Owner, name_key};
use super::scripts::{self, Scripts};
use super::{Cluster, remote_id};
use crate::bus::{Bus, BusClosed, PresenceEvent, RoomEvent};
use crate::conn::handle::{ConnId, Peer};
use crate::conn::outbox::Push;
use crate::conn::state::Phase;
use crate::room::waitlist::{interval, queued_frame};
use crate::telemetry::metrics;
use anteroom_protocol::{ByeReason, Feature, LeftReason, ServerMessage, unix_millis};

/// How often the lease is renewed and dead nodes are looked for: a dead
/// node's places are freed within `cluster_lease` and this.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);

/// Log entries read at once.
const READ_COUNT: usize = 1024;

/// How long one read of the log waits for entries.
const READ_BLOCK_MS: usize = 250;

/// A connection of this node that holds a place in the cluster.
struct Local {
    peer: Arc<Peer>,
    name: Arc<str>,
    key: String,
    owner: String,
    /// While queued: when it queued and the position it was last told.
    queued: Option<(Instant, u64)>,
    /// Its `joined` was replayed: its `left` must be too.
    joined: bool,
    /// This node asked for its departure: its `left` in the log is that.
    departing: bool,
}

/// What the reader hands the component.
enum Read {
    /// Each with its log sequence number (none in an inbox), and `None`
    /// for an entry this node cannot read, which still takes its place in
    /// the sequence.
    Entries(Vec<(Option<u64>, Option<Entry>)>),
    Failed(String),
}

struct Node {
    cluster: Arc<Cluster>,
    scripts: Scripts,
    bus: Bus,
    locals: HashMap<ConnId, Local>,
    /// Members of other nodes, by `node|conn`, with their stand-in ids.
    remote: HashMap<String, (ConnId, Arc<str>)>,
    next_remote: u64,
    /// This node's joins the log carries for connections that are gone
    /// before they were replayed: their `left` is skipped too.
    skipped: HashSet<ConnId>,
    last_seq: u64,
    reader: Option<(mpsc::Receiver<Read>, tokio::task::JoinHandle<()>)>,
    ready: Arc<AtomicBool>,
    epoch: String,
    /// Redis was seen to have lost log entries this node had read: the
    /// next join starts a new epoch.
    lost_writes: bool,
}

/// Runs the component until the `presence` topic closes.
pub async fn run(
    mut presence: Receiver<PresenceEvent>,
    bus: Bus,
    cluster: Arc<Cluster>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let m = metrics();
    let mut node = Node {
        scripts: cluster.scripts.clone(),
        epoch: cluster.epoch(),
        cluster,
        bus,
        locals: HashMap::new(),
        remote: HashMap::new(),
        next_remote: 0,
        skipped: HashSet::new(),
        last_seq: 0,
        reader: None,
        ready,
        lost_writes: false,
    };
    if node.start().await.is_err() {
        return;
    }
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_positions = tokio::time::Instant::now();
    loop {
        let mut counted = false;
        let outcome = tokio::select! {
            event = presence.recv_direct() => match event {
                Ok(event) => node.presence(event, shutdown.is_cancelled()).await,
                Err(_) => break,
            },
            read = recv(&mut node.reader) => match read {
                Some(Read::Entries(entries)) => node.replay(entries).await,
                Some(Read::Failed(why)) => node.lose(&why).await,
                None => node.lose("the log reader stopped").await,
            },
            _ = renew.tick() => {
                counted = true;
                node.renew().await
            }
            // Idle while nobody here waits: one look every conflation tick.
            _ = tokio::time::sleep_until(next_positions) => match node.positions().await {
                Ok(queued) => {
                    next_positions = tokio::time::Instant::now() + interval(queued);
                    Ok(())
                }
                Err(closed) => Err(closed),
            },
        };
        if outcome.is_err() {
            break;
        }
        m.lag_admission.set(presence.len() as f64);
        // Counted on the lease tick, not per event: a count walks every
        // local connection.
        if counted {
            let waiting = node.locals.values().filter(|l| l.queued.is_some()).count();
            m.conn_active.set((node.locals.len() - waiting) as f64);
            m.conn_waiting.set(waiting as f64);
        }
    }
    if let Some((_, task)) = node.reader.take() {
        task.abort();
    }
    if node.serving() {
        let _ = node.scripts.leave().await;
    }
}

async fn recv(
    reader: &mut Option<(mpsc::Receiver<Read>, tokio::task::JoinHandle<()>)>,
) -> Option<Read> {
    match reader {
        Some((rx, _)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Node {
    /// Takes the room as it stands and starts reading the log after it.
    async fn start(&mut self) -> Result<(), BusClosed> {
        let snapshot = match self.scripts.snapshot().await {
            Ok(reply) if reply.len() >= 2 => reply,
            Ok(_) | Err(_) => return self.lose("the room could not be read from Redis").await,
        };
        let last_id = snapshot[0].clone();
        self.last_seq = snapshot[1].parse().unwrap_or(0);
        for raw in &snapshot[2..] {
            let Some(owner) = Owner::parse(raw) else {
                continue;
            };
            if *owner.node == *self.cluster.settings.node {
                continue;
            }
            self.remote_joined(owner).await?;
        }
        let mut conn = match self.cluster.reader_connection().await {
            Ok(conn) => conn,
            // What the snapshot added goes with the rest.
            Err(error) => return self.lose(&error.to_string()).await,
        };
        if self.cluster.settings.store_per_node {
            let after = self.cluster.last_id.load(Ordering::Relaxed);
            match logged_messages(&mut conn, &last_id, after).await {
                // Before this node has members: they reach the chat log, and
                // the history of those who join.
                Ok(messages) => {
                    for message in messages {
                        self.apply(message).await?;
                    }
                }
                Err(error) => return self.lose(&error.to_string()).await,
            }
        }
        let (tx, rx) = mpsc::channel(16);
        let inbox = scripts::inbox(&self.cluster.settings.node);
        let task = tokio::spawn(read_log(conn, last_id, inbox, tx));
        self.reader = Some((rx, task));
        self.cluster.serving.store(true, Ordering::SeqCst);
        self.ready.store(true, Ordering::SeqCst);
        metrics().cluster_nodes.set(1.0);
        Ok(())
    }

    fn owner_of(&self, peer: &Peer, name: &str) -> String {
        Owner::encode(
            &self.cluster.settings.node,
            peer.id,
            peer.features().has(Feature::Whisper),
            name,
        )
    }

    fn down(&mut self) {
        self.cluster.serving.store(false, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
    }

    fn serving(&self) -> bool {
        self.cluster.is_serving()
    }

    async fn presence(&mut self, event: PresenceEvent, closing: bool) -> Result<(), BusClosed> {
        match event {
            PresenceEvent::ClientArrived { peer, name } => self.arrive(peer, name, closing).await,
            PresenceEvent::ClientDeparted { id, reason }
            | PresenceEvent::ClientDropped { id, reason } => self.depart(id, reason).await,
            // Resume is not offered in a cluster; a stray one is a newcomer.
            PresenceEvent::ClientResumed { peer, name, .. } => {
                self.arrive(peer, name, closing).await
            }
        }
    }

    async fn arrive(
        &mut self,
        peer: Arc<Peer>,
        name: Arc<str>,
        closing: bool,
    ) -> Result<(), BusClosed> {
        if closing {
            peer.reject();
            if self.serving() {
                let owner = self.owner_of(&peer, &name);
                let _ = self
                    .scripts
                    .depart(&name_key(&name), &owner, LeftReason::Shutdown.as_str())
                    .await;
            }
            return Ok(());
        }
        if !self.serving() {
            refuse_shutdown(&peer);
            return Ok(());
        }
        let key = name_key(&name);
        let owner = self.owner_of(&peer, &name);
        let reply = match self.scripts.arrive(&key, &owner).await {
            Ok(reply) => reply,
            Err(error) => {
                refuse_shutdown(&peer);
                return self.lose(&error.to_string()).await;
            }
        };
        let queued = match reply.first().map(String::as_str) {
            Some("admitted") => None,
            Some("queued") => {
                let position = reply.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
                peer.queue(queued_frame(&peer, position, position, None, true));
                Some((Instant::now(), position))
            }
            Some("full") => {
                peer.reject();
                return Ok(());
            }
            Some("gone") => {
                refuse_shutdown(&peer);
                return self.lose("this node's lease ran out").await;
            }
            // The claim was released meanwhile (its lease ran out).
            _ => {
                refuse_shutdown(&peer);
                return Ok(());
            }
        };
        self.locals.insert(
            peer.id,
            Local {
                peer,
                name,
                key,
                owner,
                queued,
                joined: false,
                departing: false,
            },
        );
        Ok(())
    }

    async fn depart(&mut self, id: ConnId, reason: LeftReason) -> Result<(), BusClosed> {
        let Some(local) = self.locals.get(&id) else {
            return Ok(());
        };
        if !self.serving() {
            // Released when the node joins again.
            return self.forget(id).await;
        }
        match self
            .scripts
            .depart(&local.key, &local.owner, reason.as_str())
            .await
        {
            // Its `left` comes back through the log.
            Ok(reply) if reply.first().is_some_and(|r| r == "member") => {
                if let Some(local) = self.locals.get_mut(&id) {
                    local.queued = None;
                    local.departing = true;
                }
                Ok(())
            }
            Ok(_) => self.forget(id).await,
            Err(error) => {
                self.forget(id).await?;
                self.lose(&error.to_string()).await
            }
        }
    }

    /// Drops a local connection; a member's departure is told to this
    /// node's room at once.
    async fn forget(&mut self, id: ConnId) -> Result<(), BusClosed> {
        let Some(local) = self.locals.remove(&id) else {
            return Ok(());
        };
        if local.joined {
            let reason = local
                .peer
                .state()
                .closed
                .unwrap_or(LeftReason::Disconnected);
            self.bus
                .room
                .publish(RoomEvent::MemberLeft {
                    id,
                    name: local.name,
                    reason,
                    ts: unix_millis(),
                })
                .await?;
        }
        Ok(())
    }

    async fn replay(
        &mut self,
        entries: Vec<(Option<u64>, Option<Entry>)>,
    ) -> Result<(), BusClosed> {
        for (seq, entry) in entries {
            if let Some(seq) = seq {
                if self.last_seq != 0 && seq != self.last_seq + 1 {
                    // The log was trimmed past this node: what it missed
                    // cannot be replayed, so it starts over.
                    return self
                        .lose(&format!(
                            "missed log entries {}..{}",
                            self.last_seq + 1,
                            seq
                        ))
                        .await;
                }
                self.last_seq = seq;
            }
            if let Some(entry) = entry {
                self.apply(entry).await?;
            }
        }
        Ok(())
    }

    async fn apply(&mut self, entry: Entry) -> Result<(), BusClosed> {
        let here = |owner: &Owner| *owner.node == *self.cluster.settings.node;
        match entry {
            Entry::Joined { owner, from_queue } if here(&owner) => {
                let Some(local) = self.locals.get_mut(&owner.conn) else {
                    self.skipped.insert(owner.conn);
                    return Ok(());
                };
                local.queued = None;
                local.joined = true;
                let event = RoomEvent::MemberJoined {
                    peer: local.peer.clone(),
                    name: local.name.clone(),
                    from_queue,
                    ts: unix_millis(),
                };
                self.bus.room.publish(event).await
            }
            Entry::Joined { owner, .. } => self.remote_joined(owner).await,
            Entry::Left { owner, reason } if here(&owner) => {
                if self.skipped.remove(&owner.conn) {
                    return Ok(());
                }
                match self.locals.get(&owner.conn) {
                    None => return Ok(()),
                    // Another node released this one's places: its lease
                    // ran out while it was not looking.
                    Some(local) if !local.departing => {
                        return self.lose("this node's lease ran out").await;
                    }
                    Some(_) => {}
                }
                let joined = self.locals.remove(&owner.conn).is_some_and(|l| l.joined);
                if !joined {
                    return Ok(());
                }
                self.bus
                    .room
                    .publish(RoomEvent::MemberLeft {
                        id: owner.conn,
                        name: owner.name,
                        reason,
                        ts: unix_millis(),
                    })
                    .await
            }
            Entry::Left { owner, reason } => {
                let Some((id, name)) = self.remote.remove(&remote_key(&owner)) else {
                    return Ok(());
                };
                self.cluster.remote.remove(&name_key(&name));
                self.bus
                    .room
                    .publish(RoomEvent::RemoteLeft {
                        id,
                        name,
                        reason,
                        ts: unix_millis(),
                    })
                    .await
            }
            Entry::Message {
                owner,
                text,
                ts,
                id,
            } => {
                self.cluster.delivered(id);
                let logged = self.cluster.settings.store_per_node || here(&owner);
                self.bus
                    .room
                    .publish(RoomEvent::MessagePosted {
                        from: owner.name,
                        text,
                        ts,
                        attachment: None,
                        read_at: Instant::now(),
                        id: Some(id),
                        logged,
                    })
                    .await
            }
            Entry::Whisper { from, to, text, ts } => {
                let Some(local) = self.locals.get(&to.conn).filter(|l| l.joined) else {
                    return Ok(());
                };
                let state = local.peer.state();
                if state.phase != Phase::Active
                    || state.closed.is_some()
                    || !local.peer.features().has(Feature::Whisper)
                {
                    return Ok(());
                }
                let frame = ServerMessage::Whisper {
                    from: from.as_ref().into(),
                    to: local.name.as_ref().into(),
                    text: text.as_ref().into(),
                    ts,
                }
                .to_frame();
                if local.peer.outbox.push_reply(frame) == Push::Overflow {
                    local.peer.cut_off_slow();
                }
                Ok(())
            }
        }
    }

    async fn remote_joined(&mut self, owner: Owner) -> Result<(), BusClosed> {
        let key = remote_key(&owner);
        if self.remote.contains_key(&key) {
            return Ok(());
        }
        self.next_remote += 1;
        let id = remote_id(self.next_remote);
        self.remote.insert(key, (id, owner.name.clone()));
        let name = owner.name.clone();
        self.cluster.remote.insert(name_key(&name), owner);
        self.bus
            .room
            .publish(RoomEvent::RemoteJoined {
                id,
                name,
                ts: unix_millis(),
            })
            .await
    }

    async fn renew(&mut self) -> Result<(), BusClosed> {
        if !self.serving() {
            return self.recover().await;
        }
        match self.scripts.renew().await {
            Ok(reply) if reply.first().is_some_and(|r| r == "ok") => {
                let epoch = reply.get(1).cloned().unwrap_or_default();
                if epoch != self.epoch {
                    return self
                        .lose(&format!("the cluster's epoch changed ({} to {epoch}): Redis lost the room's state", self.epoch))
                        .await;
                }
                let nodes = reply
                    .get(2)
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(1.0);
                metrics().cluster_nodes.set(nodes);
                let seq: u64 = reply.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
                if seq < self.last_seq {
                    // A failover to a replica that had not received what
                    // this node already delivered: ids would repeat.
                    self.lost_writes = true;
                    return self
                        .lose(&format!(
                            "Redis lost log entries {}..={} that were delivered (a failover?)",
                            seq + 1,
                            self.last_seq
                        ))
                        .await;
                }
                Ok(())
            }
            Ok(_) => self.lose("this node's lease ran out").await,
            Err(error) => self.lose(&error.to_string()).await,
        }
    }

    /// Sends queued clients whose place in the global queue changed their
    /// new position.
    /// Returns how many of this node's clients wait.
    async fn positions(&mut self) -> Result<usize, BusClosed> {
        if !self.serving() {
            return Ok(0);
        }
        let queued: Vec<ConnId> = self
            .locals
            .iter()
            .filter(|(_, l)| l.queued.is_some())
            .map(|(id, _)| *id)
            .collect();
        if queued.is_empty() {
            return Ok(0);
        }
        let keys: Vec<&str> = queued
            .iter()
            .map(|id| self.locals[id].key.as_str())
            .collect();
        let reply = match self.scripts.ranks(&keys).await {
            Ok(reply) => reply,
            Err(error) => return self.lose(&error.to_string()).await.map(|()| 0),
        };
        let waiting: u64 = reply.first().and_then(|w| w.parse().ok()).unwrap_or(0);
        for (id, rank) in queued.iter().zip(reply.iter().skip(1)) {
            let Ok(position) = rank.parse::<u64>() else {
                continue;
            };
            let Some(local) = self.locals.get_mut(id) else {
                continue;
            };
            let Some((_, told)) = &mut local.queued else {
                continue;
            };
            if position == 0 || position == *told {
                continue;
            }
            *told = position;
            local.peer.outbox.set_position(queued_frame(
                &local.peer,
                position,
                waiting,
                None,
                false,
            ));
        }
        Ok(queued.len())
    }

    /// The node can no longer act for the cluster: it stops admitting, says
    /// goodbye to its clients, and forgets the room until it joins again.
    async fn lose(&mut self, why: &str) -> Result<(), BusClosed> {
        if self.serving() {
            warn!(
                why,
                "lost the cluster; not admitting until Redis answers again"
            );
        }
        self.down();
        if let Some((_, task)) = self.reader.take() {
            task.abort();
        }
        for (id, local) in std::mem::take(&mut self.locals) {
            refuse_shutdown(&local.peer);
            if local.joined {
                self.bus
                    .room
                    .publish(RoomEvent::MemberLeft {
                        id,
                        name: local.name,
                        reason: LeftReason::Shutdown,
                        ts: unix_millis(),
                    })
                    .await?;
            }
        }
        for (_, (id, name)) in std::mem::take(&mut self.remote) {
            self.bus
                .room
                .publish(RoomEvent::RemoteLeft {
                    id,
                    name,
                    reason: LeftReason::Disconnected,
                    ts: unix_millis(),
                })
                .await?;
        }
        self.cluster.remote.clear();
        self.skipped.clear();
        self.last_seq = 0;
        Ok(())
    }

    /// Joins again once Redis answers.
    async fn recover(&mut self) -> Result<(), BusClosed> {
        match self.cluster.rejoin(self.lost_writes).await {
            Ok(epoch) => {
                self.lost_writes = false;
                if epoch != self.epoch {
                    info!(from = %self.epoch, to = %epoch, "the cluster has a new epoch");
                }
                self.epoch = epoch;
                self.start().await?;
                if self.serving() {
                    info!("rejoined the cluster; admitting again");
                }
                Ok(())
            }
            Err(error @ super::ClusterError::Mismatch { .. }) => {
                // The others changed their configuration while this node was
                // away; it stays out rather than serve a different room.
                error!(%error, "not rejoining the cluster");
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }
}

/// A remote member's key: its node and connection.
fn remote_key(owner: &Owner) -> String {
    format!("{}|{}", owner.node, owner.conn)
}

/// Messages read from the log at once while a node takes the history.
const HISTORY_PAGE: usize = 1000;

/// With the `memory` store the cluster's log in Redis is the room's
/// history: the messages it still holds up to `until`, after id `after`.
async fn logged_messages(
    conn: &mut redis::aio::MultiplexedConnection,
    until: &str,
    after: u64,
) -> redis::RedisResult<Vec<Entry>> {
    let mut messages = Vec::new();
    let mut from = "-".to_string();
    loop {
        let page: redis::streams::StreamRangeReply = conn
            .xrange_count(scripts::LOG, &from, until, HISTORY_PAGE)
            .await?;
        for item in &page.ids {
            if let Ok((_, message @ Entry::Message { id, .. })) =
                Entry::parse(|field| item.get::<String>(field))
                && id > after
            {
                messages.push(message);
            }
        }
        match page.ids.last() {
            Some(last) if page.ids.len() == HISTORY_PAGE && last.id != until => {
                from = format!("({}", last.id);
            }
            _ => return Ok(messages),
        }
    }
}

/// Tells a client the node is not admitting.
fn refuse_shutdown(peer: &Peer) {
    peer.kick(LeftReason::Shutdown, Some(ByeReason::Shutdown.frame()));
}

/// Reads the log and this node's inbox, in order, until the component
/// stops listening or Redis fails.
async fn read_log(
    mut conn: redis::aio::MultiplexedConnection,
    mut last: String,
    inbox: String,
    tx: mpsc::Sender<Read>,
) {
    let mut last_inbox = "0-0".to_string();
    let options = StreamReadOptions::default()
        .block(READ_BLOCK_MS)
        .count(READ_COUNT);
    loop {
        let reply: StreamReadReply = match conn
            .xread_options(
                &[scripts::LOG, inbox.as_str()],
                &[last.as_str(), last_inbox.as_str()],
                &options,
            )
            .await
        {
            Ok(reply) => reply,
            Err(error) => {
                let _ = tx.send(Read::Failed(error.to_string())).await;
                return;
            }
        };
        let mut entries = Vec::new();
        for stream in reply.keys {
            let from_log = stream.key == scripts::LOG;
            for item in stream.ids {
                let seq = item.get::<String>("s").and_then(|s| s.parse().ok());
                let parsed = Entry::parse(|field| item.get::<String>(field));
                if from_log {
                    last = item.id.clone();
                } else {
                    last_inbox = item.id.clone();
                }
                match parsed {
                    Ok((_, entry)) => entries.push((seq, Some(entry))),
                    Err(error) => {
                        warn!(%error, id = item.id, "skipped");
                        entries.push((seq, None));
                    }
                }
            }
        }
        if !entries.is_empty() && tx.send(Read::Entries(entries)).await.is_err() {
            return;
        }
    }
}
