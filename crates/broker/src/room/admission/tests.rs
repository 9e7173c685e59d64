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

#[tokio::test(start_paused = true)]
async fn a_held_seat_is_taken_back_or_released_after_the_grace() {
    let (bus, subscriptions) = Bus::new();
    let mut room = subscriptions.room_delivery;
    let mut queue = subscriptions.waitlist;
    let _others = subscriptions.roster;
    let grace = Duration::from_secs(30);
    let shared = shared(grace);
    let held = shared.held.clone();
    tokio::spawn(run(
        subscriptions.admission,
        bus.clone(),
        1,
        10,
        Entries::new(None),
        shared,
        CancellationToken::new(),
    ));
    let hold = |peer: &Arc<Peer>, token: &str| {
        held.hold(token, held_place(peer, "ann"));
        PresenceEvent::ClientDropped {
            id: peer.id,
            reason: LeftReason::Disconnected,
        }
    };
    let ann = resumable("t1");
    let arrived = PresenceEvent::ClientArrived {
        peer: ann.clone(),
        name: "ann".into(),
    };
    bus.presence.publish(arrived).await.unwrap();
    assert!(matches!(
        room.recv().await.unwrap(),
        RoomEvent::MemberJoined { .. }
    ));
    let bob = resumable("t2");
    let arrived = PresenceEvent::ClientArrived {
        peer: bob.clone(),
        name: "bob".into(),
    };
    bus.presence.publish(arrived).await.unwrap();
    assert!(matches!(
        queue.recv().await.unwrap(),
        QueueEvent::ClientQueued { .. }
    ));

    // Dropped, then back within the grace: nobody is told, bob still waits.
    bus.presence.publish(hold(&ann, "t1")).await.unwrap();
    tokio::time::sleep(grace - Duration::from_secs(1)).await;
    let taken = held.take("t1", "ANN").unwrap();
    let ann2 = resumable("t3");
    let resumed = PresenceEvent::ClientResumed {
        old: taken.id,
        peer: ann2.clone(),
        name: "ann".into(),
        after: 0,
    };
    bus.presence.publish(resumed).await.unwrap();
    match room.recv().await.unwrap() {
        RoomEvent::MemberResumed { old, peer, .. } => {
            assert_eq!((old, peer.id), (ann.id, ann2.id));
        }
        other => panic!("{other:?}"),
    }
    // The first hold's grace passes without effect.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(room.try_recv().is_err());
    assert!(queue.try_recv().is_err());

    // Dropped again, and never back: released as the drop, bob promoted.
    bus.presence.publish(hold(&ann2, "t3")).await.unwrap();
    let start = tokio::time::Instant::now();
    match room.recv().await.unwrap() {
        RoomEvent::MemberLeft { name, reason, .. } => {
            assert_eq!((&*name, reason), ("ann", LeftReason::Disconnected));
        }
        other => panic!("{other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= grace && waited < grace + Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(
        matches!(queue.recv().await.unwrap(), QueueEvent::ClientPromoted { id, .. } if id == bob.id)
    );
    assert!(held.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_held_queue_place_keeps_its_turn() {
    let (bus, subscriptions) = Bus::new();
    let mut queue = subscriptions.waitlist;
    let _others = (subscriptions.roster, subscriptions.room_delivery);
    let shared = shared(Duration::from_secs(30));
    let held = shared.held.clone();
    tokio::spawn(run(
        subscriptions.admission,
        bus.clone(),
        0,
        10,
        Entries::new(None),
        shared,
        CancellationToken::new(),
    ));
    let mut peers = Vec::new();
    for (i, name) in ["ann", "bob", "cy"].into_iter().enumerate() {
        let peer = resumable(&format!("t{i}"));
        let arrived = PresenceEvent::ClientArrived {
            peer: peer.clone(),
            name: name.into(),
        };
        bus.presence.publish(arrived).await.unwrap();
        assert!(matches!(
            queue.recv().await.unwrap(),
            QueueEvent::ClientQueued { .. }
        ));
        peers.push(peer);
    }
    held.hold("t1", held_place(&peers[1], "bob"));
    let dropped = PresenceEvent::ClientDropped {
        id: peers[1].id,
        reason: LeftReason::IdleTimeout,
    };
    bus.presence.publish(dropped).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let bob2 = resumable("t9");
    let resumed = PresenceEvent::ClientResumed {
        old: held.take("t1", "bob").unwrap().id,
        peer: bob2.clone(),
        name: "bob".into(),
        after: 0,
    };
    bus.presence.publish(resumed).await.unwrap();
    match queue.recv().await.unwrap() {
        QueueEvent::ClientResumed { old, position, .. } => {
            assert_eq!((old, position), (peers[1].id, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bob2.phase(), crate::conn::state::Phase::Waiting);
}
