use super::*;
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

#[test]
fn fills_the_room_then_queues_then_rejects() {
    let mut a = Admission::new(2, 1);
    assert_eq!(a.arrive(1), Decision::Admitted);
    assert_eq!(a.arrive(2), Decision::Admitted);
    assert_eq!(a.arrive(3), Decision::Queued { position: 1 });
    assert_eq!(a.arrive(4), Decision::Rejected);
    assert_eq!(a.depart(&1), Departure::Member { promoted: Some(3) });
    assert_eq!(a.depart(&4), Departure::Unknown);
    assert_eq!((a.active_len(), a.waiting_len()), (2, 0));
}

/// The name of a room event, and whether it is a join.
fn joined_or_left(event: RoomEvent) -> (bool, String) {
    match event {
        RoomEvent::MemberJoined { name, .. } => (true, name.to_string()),
        RoomEvent::MemberLeft { name, .. } => (false, name.to_string()),
        RoomEvent::MessagePosted { .. } => panic!("a message"),
        RoomEvent::MemberResumed { name, .. } => panic!("{name} resumed"),
        RoomEvent::RemoteJoined { name, .. } | RoomEvent::RemoteLeft { name, .. } => {
            panic!("{name} is remote")
        }
    }
}

fn shared(grace: Duration) -> Shared {
    Shared {
        held: Arc::new(HeldPlaces::new()),
        grace,
        estimate: Arc::new(WaitEstimate::new()),
    }
}

#[tokio::test(start_paused = true)]
async fn entries_wait_for_the_join_rate_and_one_withdrawn_is_never_seen() {
    let (bus, subscriptions) = Bus::new();
    let mut room = subscriptions.room_delivery;
    let _others = (subscriptions.roster, subscriptions.waitlist);
    let actor = tokio::spawn(run(
        subscriptions.admission,
        bus.clone(),
        10,
        10,
        Entries::new(Rate::new(1.0, 1)),
        shared(Duration::from_secs(30)),
        CancellationToken::new(),
    ));
    let arrive = |name: &str| {
        let peer = Arc::new(Peer::new(16));
        peer.arrive();
        let id = peer.id;
        let event = PresenceEvent::ClientArrived {
            peer,
            name: name.into(),
        };
        (id, event)
    };
    let depart = |id| PresenceEvent::ClientDeparted {
        id,
        reason: LeftReason::Bye,
    };
    let start = tokio::time::Instant::now();
    let (ann, event) = arrive("ann");
    bus.presence.publish(event).await.unwrap();
    assert_eq!(
        joined_or_left(room.recv().await.unwrap()),
        (true, "ann".into())
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "within the burst");
    // Bob gets a seat but must wait a second to enter; he leaves first,
    // and nobody ever hears of him. Cid takes the next turn.
    let (bob, event) = arrive("bob");
    bus.presence.publish(event).await.unwrap();
    bus.presence.publish(depart(bob)).await.unwrap();
    let (_, event) = arrive("cid");
    bus.presence.publish(event).await.unwrap();
    assert_eq!(
        joined_or_left(room.recv().await.unwrap()),
        (true, "cid".into())
    );
    assert!(start.elapsed() >= Duration::from_secs(1));
    // Departures never wait.
    bus.presence.publish(depart(ann)).await.unwrap();
    assert_eq!(
        joined_or_left(room.recv().await.unwrap()),
        (false, "ann".into())
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    bus.close();
    actor.await.unwrap();
    assert!(room.try_recv().is_err(), "nothing about bob");
}

#[test]
fn a_closed_room_promotes_nobody() {
    let mut a = Admission::new(1, 5);
    a.arrive(1);
    a.arrive(2);
    a.close();
    assert_eq!(a.depart(&1), Departure::Member { promoted: None });
    assert_eq!(a.depart(&2), Departure::Queued);
    assert_eq!(a.arrive(3), Decision::Rejected);
}

#[test]
fn leaving_the_queue_moves_those_behind_up() {
    let mut a = Admission::new(1, 10);
    a.arrive(0);
    for k in 1..=4 {
        a.arrive(k);
    }
    assert_eq!(a.depart(&2), Departure::Queued);
    assert_eq!(a.queue().copied().collect::<Vec<_>>(), vec![1, 3, 4]);
    assert_eq!(a.depart(&0), Departure::Member { promoted: Some(1) });
}

#[derive(Debug, Clone)]
enum Op {
    Arrive,
    /// Departure of the n-th connected client (modulo how many there are).
    Depart(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![3 => Just(Op::Arrive), 2 => any::<usize>().prop_map(Op::Depart)],
        0..400,
    )
}

proptest! {
    /// Against a simple model: FIFO promotion, nobody lost or admitted
    /// twice, capacity never exceeded, and no one waits while a seat is free.
    #[test]
    fn admission_keeps_its_invariants(max_active in 1usize..6, max_waiting in 0usize..8, ops in ops()) {
        let mut a = Admission::new(max_active, max_waiting);
        let mut next = 0u32;
        let mut connected: Vec<u32> = Vec::new();
        let mut model_active: HashSet<u32> = HashSet::new();
        let mut model_queue: VecDeque<u32> = VecDeque::new();
        let mut ever_admitted: HashSet<u32> = HashSet::new();
        for op in ops {
            match op {
                Op::Arrive => {
                    let k = next;
                    next += 1;
                    match a.arrive(k) {
                        Decision::Admitted => {
                            prop_assert!(model_active.len() < max_active && model_queue.is_empty());
                            prop_assert!(ever_admitted.insert(k));
                            model_active.insert(k);
                            connected.push(k);
                        }
                        Decision::Queued { position } => {
                            prop_assert!(model_queue.len() < max_waiting);
                            model_queue.push_back(k);
                            prop_assert_eq!(position, model_queue.len());
                            connected.push(k);
                        }
                        Decision::Rejected => {
                            prop_assert!(model_active.len() == max_active || !model_queue.is_empty());
                            prop_assert_eq!(model_queue.len(), max_waiting);
                        }
                    }
                }
                Op::Depart(i) if !connected.is_empty() => {
                    let k = connected.remove(i % connected.len());
                    match a.depart(&k) {
                        Departure::Member { promoted } => {
                            prop_assert!(model_active.remove(&k));
                            let expected = model_queue.pop_front();
                            prop_assert_eq!(promoted, expected);
                            if let Some(p) = promoted {
                                prop_assert!(ever_admitted.insert(p), "admitted twice");
                                model_active.insert(p);
                            }
                        }
                        Departure::Queued => {
                            let pos = model_queue.iter().position(|q| *q == k);
                            prop_assert!(pos.is_some());
                            model_queue.remove(pos.unwrap());
                        }
                        Departure::Unknown => prop_assert!(false, "connected client {} unknown", k),
                    }
                }
                Op::Depart(_) => {}
            }
            prop_assert!(a.active_len() <= max_active);
            prop_assert_eq!(a.active_len(), model_active.len());
            prop_assert_eq!(a.queue().copied().collect::<Vec<_>>(), model_queue.iter().copied().collect::<Vec<_>>());
            prop_assert!(model_queue.is_empty() || a.active_len() == max_active);
            for k in &connected {
                prop_assert!(a.contains(k), "client {} lost", k);
            }
        }
    }
}

fn held_place(peer: &Peer, name: &str) -> crate::room::held::HeldPlace {
    crate::room::held::HeldPlace {
        id: peer.id,
        name: name.into(),
        claim: None,
        written_id: 0,
    }
}

/// A peer granted `resume` under `token`, arrived.
fn resumable(token: &str) -> Arc<Peer> {
    let peer = Arc::new(Peer::new(16));
    peer.set_grant(crate::conn::handle::Grant {
        features: anteroom_protocol::Features::NONE.with(Feature::Resume),
        upload_token: None,
        resume: Some(crate::conn::handle::ResumeGrant {
            token: token.into(),
            grace_s: 30,
        }),
        resumed: None,
    });
    peer.arrive();
    peer
}

/// An admission actor with a 30 s grace, and the topics it publishes on.
struct Harness {
    bus: Bus,
    room: async_broadcast::Receiver<RoomEvent>,
    queue: async_broadcast::Receiver<QueueEvent>,
    held: Arc<HeldPlaces>,
    _roster: async_broadcast::Receiver<RoomEvent>,
}

const GRACE: Duration = Duration::from_secs(30);

impl Harness {
    fn start(max_active: usize) -> Self {
        let (bus, subscriptions) = Bus::new();
        let shared = shared(GRACE);
        let held = shared.held.clone();
        tokio::spawn(run(
            subscriptions.admission,
            bus.clone(),
            max_active,
            10,
            Entries::new(None),
            shared,
            CancellationToken::new(),
        ));
        Self {
            bus,
            room: subscriptions.room_delivery,
            queue: subscriptions.waitlist,
            held,
            _roster: subscriptions.roster,
        }
    }

    /// `name` arrives granted `resume` under `token`.
    async fn arrive(&self, name: &str, token: &str) -> Arc<Peer> {
        let peer = resumable(token);
        let arrived = PresenceEvent::ClientArrived {
            peer: peer.clone(),
            name: name.into(),
        };
        self.bus.presence.publish(arrived).await.unwrap();
        peer
    }

    /// `peer`'s connection drops, as its session holds it under `token`.
    async fn drop_held(&self, peer: &Peer, name: &str, token: &str) {
        self.held.hold(token, held_place(peer, name));
        let dropped = PresenceEvent::ClientDropped {
            id: peer.id,
            reason: LeftReason::Disconnected,
        };
        self.bus.presence.publish(dropped).await.unwrap();
    }

    /// A new connection takes back the place held under `token`.
    async fn resume(&self, name: &str, token: &str, new_token: &str) -> Arc<Peer> {
        let peer = resumable(new_token);
        // As a session does: the name as held, whatever case it was asked in.
        let place = self.held.take(token, name).unwrap();
        let resumed = PresenceEvent::ClientResumed {
            old: place.id,
            peer: peer.clone(),
            name: place.name.clone(),
            after: 0,
        };
        self.bus.presence.publish(resumed).await.unwrap();
        peer
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_seat_is_taken_back_or_released_after_the_grace() {
    let mut h = Harness::start(1);
    let ann = h.arrive("ann", "t1").await;
    assert!(matches!(
        h.room.recv().await.unwrap(),
        RoomEvent::MemberJoined { .. }
    ));
    let bob = h.arrive("bob", "t2").await;
    assert!(matches!(
        h.queue.recv().await.unwrap(),
        QueueEvent::ClientQueued { .. }
    ));

    // Dropped, then back within the grace: nobody is told, bob still waits.
    h.drop_held(&ann, "ann", "t1").await;
    tokio::time::sleep(GRACE - Duration::from_secs(1)).await;
    let ann2 = h.resume("ANN", "t1", "t3").await;
    match h.room.recv().await.unwrap() {
        RoomEvent::MemberResumed { old, peer, .. } => {
            assert_eq!((old, peer.id), (ann.id, ann2.id));
        }
        other => panic!("{other:?}"),
    }
    // The first hold's grace passes without effect.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.room.try_recv().is_err());
    assert!(h.queue.try_recv().is_err());

    // Dropped again, and never back: released as the drop, bob promoted.
    h.drop_held(&ann2, "ann", "t3").await;
    let start = tokio::time::Instant::now();
    match h.room.recv().await.unwrap() {
        RoomEvent::MemberLeft { name, reason, .. } => {
            assert_eq!((&*name, reason), ("ann", LeftReason::Disconnected));
        }
        other => panic!("{other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= GRACE && waited < GRACE + Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(
        matches!(h.queue.recv().await.unwrap(), QueueEvent::ClientPromoted { id, .. } if id == bob.id)
    );
    assert!(h.held.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_held_queue_place_keeps_its_turn() {
    let mut h = Harness::start(0);
    let mut peers = Vec::new();
    for (i, name) in ["ann", "bob", "cy"].into_iter().enumerate() {
        peers.push(h.arrive(name, &format!("t{i}")).await);
        assert!(matches!(
            h.queue.recv().await.unwrap(),
            QueueEvent::ClientQueued { .. }
        ));
    }
    h.drop_held(&peers[1], "bob", "t1").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let bob2 = h.resume("bob", "t1", "t9").await;
    match h.queue.recv().await.unwrap() {
        QueueEvent::ClientResumed { old, position, .. } => {
            assert_eq!((old, position), (peers[1].id, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bob2.phase(), crate::conn::state::Phase::Waiting);
}

#[tokio::test(start_paused = true)]
async fn a_held_place_whose_turn_comes_enters_only_when_back() {
    let mut h = Harness::start(1);
    let ann = h.arrive("ann", "a").await;
    assert!(matches!(
        h.room.recv().await.unwrap(),
        RoomEvent::MemberJoined { .. }
    ));
    let bob = h.arrive("bob", "b").await;
    assert!(matches!(
        h.queue.recv().await.unwrap(),
        QueueEvent::ClientQueued { .. }
    ));
    // bob drops while queued; ann leaves: bob's turn comes while away.
    h.drop_held(&bob, "bob", "b").await;
    let bye = PresenceEvent::ClientDeparted {
        id: ann.id,
        reason: LeftReason::Bye,
    };
    h.bus.presence.publish(bye).await.unwrap();
    assert!(matches!(
        h.room.recv().await.unwrap(),
        RoomEvent::MemberLeft { .. }
    ));
    assert!(
        matches!(h.queue.recv().await.unwrap(), QueueEvent::ClientPromoted { id, .. } if id == bob.id)
    );
    // Nobody is told bob joined while it is away.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.room.try_recv().is_err());
    // Back: it enters now, seen by all.
    let bob2 = h.resume("bob", "b", "b2").await;
    match h.room.recv().await.unwrap() {
        RoomEvent::MemberJoined {
            peer, from_queue, ..
        } => {
            assert_eq!(peer.id, bob2.id);
            assert!(from_queue);
        }
        other => panic!("{other:?}"),
    }
}
