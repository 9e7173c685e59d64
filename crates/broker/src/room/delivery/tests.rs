use super::*;
use crate::conn::outbox::Batch;

fn said(from: &str, text: &str) -> RoomEvent {
    RoomEvent::MessagePosted {
        from: from.into(),
        text: text.into(),
        ts: 0,
        read_at: Instant::now(),
        attachment: None,
        id: None,
        logged: true,
    }
}

fn joined(peer: &Arc<Peer>, name: &str) -> RoomEvent {
    RoomEvent::MemberJoined {
        peer: peer.clone(),
        name: name.into(),
        from_queue: false,
        ts: 0,
    }
}

fn left(peer: &Arc<Peer>, name: &str) -> RoomEvent {
    RoomEvent::MemberLeft {
        id: peer.id,
        name: name.into(),
        reason: anteroom_protocol::LeftReason::Bye,
        ts: 0,
    }
}

/// What the peer's writer would send now, as (type, text or name) pairs,
/// and how many entries carried them.
fn sent(peer: &Peer) -> (Vec<(String, String)>, usize) {
    let mut batch = Batch::default();
    if futures_util::FutureExt::now_or_never(peer.outbox.next_batch(&mut batch)).is_none() {
        return (Vec::new(), 0);
    }
    let frames = batch
        .frames()
        .map(|frame| {
            let v = rmpv::decode::read_value(&mut &frame[4..]).unwrap();
            let kind = v["type"].as_str().unwrap().to_string();
            let detail = v["text"].as_str().or(v["name"].as_str()).unwrap_or("");
            (kind, detail.to_string())
        })
        .collect();
    (frames, batch.entries.len())
}

fn kinds(frames: &[(String, String)]) -> Vec<&str> {
    frames
        .iter()
        .map(|(k, d)| {
            if k == "message" {
                d.as_str()
            } else {
                k.as_str()
            }
        })
        .collect()
}

/// A room with one member, `a`, whose welcome has been read.
fn room_of_one(skip: bool, outbox_limit: usize) -> (RoomDelivery, Arc<Peer>) {
    let mut delivery = RoomDelivery::new(10, skip);
    let a = Arc::new(Peer::new(outbox_limit));
    delivery.handle(joined(&a, "a"));
    delivery.flush();
    sent(&a);
    (delivery, a)
}

#[test]
fn a_pass_reaches_each_member_as_one_entry_in_order() {
    let (mut delivery, a) = room_of_one(false, 256);
    for text in ["one", "two", "three"] {
        delivery.handle(said("a", text));
    }
    assert_eq!(sent(&a).1, 0, "nothing is handed out before the flush");
    delivery.flush();
    let (frames, entries) = sent(&a);
    assert_eq!(kinds(&frames), ["one", "two", "three"]);
    assert_eq!(entries, 1, "one run for the whole pass");
}

#[test]
fn a_member_joining_mid_pass_starts_with_its_welcome() {
    let mut delivery = RoomDelivery::new(10, false);
    let (a, b) = (Arc::new(Peer::new(256)), Arc::new(Peer::new(256)));
    delivery.handle(joined(&a, "a"));
    delivery.handle(said("a", "before"));
    delivery.handle(joined(&b, "b"));
    delivery.handle(said("a", "after"));
    delivery.flush();
    assert_eq!(kinds(&sent(&a).0), ["welcome", "before", "joined", "after"]);
    assert_eq!(kinds(&sent(&b).0), ["welcome", "after"]);
}

#[test]
fn a_member_leaving_mid_pass_gets_what_came_before_and_not_its_own_left() {
    let mut delivery = RoomDelivery::new(10, false);
    let (a, b) = (Arc::new(Peer::new(256)), Arc::new(Peer::new(256)));
    delivery.handle(joined(&a, "a"));
    delivery.handle(joined(&b, "b"));
    delivery.flush();
    sent(&a);
    sent(&b);
    delivery.handle(said("a", "bye soon"));
    delivery.handle(left(&b, "b"));
    delivery.handle(said("a", "gone"));
    delivery.flush();
    assert_eq!(kinds(&sent(&a).0), ["bye soon", "left", "gone"]);
    assert_eq!(kinds(&sent(&b).0), ["bye soon"]);
}

#[test]
fn a_skipped_run_counts_every_event_in_the_gap() {
    let (mut delivery, a) = room_of_one(true, 4);
    for pass in 0..3 {
        for n in 0..3 {
            delivery.handle(said("a", &format!("{pass}.{n}")));
        }
        delivery.flush();
    }
    // The first run fits the limit of 4; the two after it do not, and the
    // gap after it counts all six of their events.
    let mut batch = Batch::default();
    futures_util::FutureExt::now_or_never(a.outbox.next_batch(&mut batch)).unwrap();
    let frames: Vec<_> = batch.frames().collect();
    assert_eq!(frames.len(), 4);
    let gap = rmpv::decode::read_value(&mut &frames[3][4..]).unwrap();
    assert_eq!(
        (gap["type"].as_str(), gap["missed"].as_u64()),
        (Some("gap"), Some(6))
    );
}

#[test]
fn a_member_past_its_limit_is_cut_off_under_disconnect() {
    let (mut delivery, a) = room_of_one(false, 4);
    for _ in 0..2 {
        for n in 0..3 {
            delivery.handle(said("a", &n.to_string()));
        }
        delivery.flush();
    }
    assert_eq!(
        a.state().closed,
        Some(anteroom_protocol::LeftReason::SlowConsumer)
    );
}

fn batch_peer() -> Arc<Peer> {
    let peer = Arc::new(Peer::new(256));
    peer.set_grant(crate::conn::handle::Grant {
        features: anteroom_protocol::Features::NONE.with(Feature::PresenceBatch),
        upload_token: None,
        resume: None,
        resumed: None,
    });
    peer
}

#[test]
fn a_join_storm_reaches_each_member_as_one_entry_per_pass() {
    let mut delivery = RoomDelivery::new(100, false);
    let peers: Vec<_> = (0..20).map(|_| Arc::new(Peer::new(256))).collect();
    for (i, peer) in peers.iter().enumerate() {
        delivery.handle(joined(peer, &format!("u{i:02}")));
    }
    delivery.flush();
    for (i, peer) in peers.iter().enumerate() {
        let (frames, entries) = sent(peer);
        // Its welcome, then the joins after its own, in one run.
        assert_eq!(frames[0].0, "welcome");
        let later: Vec<_> = frames[1..].iter().map(|(_, name)| name.clone()).collect();
        let expected: Vec<_> = (i + 1..20).map(|j| format!("u{j:02}")).collect();
        assert_eq!(later, expected, "member {i}");
        assert_eq!(entries, if i == 19 { 1 } else { 2 }, "member {i}");
    }
}

#[test]
fn a_member_entering_and_leaving_in_one_pass_sees_only_what_came_between() {
    let (mut delivery, a) = room_of_one(false, 256);
    let b = Arc::new(Peer::new(256));
    delivery.handle(said("a", "before"));
    delivery.handle(joined(&b, "b"));
    delivery.handle(said("a", "while"));
    delivery.handle(left(&b, "b"));
    delivery.handle(said("a", "after"));
    delivery.flush();
    assert_eq!(
        kinds(&sent(&a).0),
        ["before", "joined", "while", "left", "after"]
    );
    assert_eq!(kinds(&sent(&b).0), ["welcome", "while"]);
}

#[test]
fn batch_members_entering_or_leaving_mid_pass_get_their_part_without_presence() {
    let mut delivery = RoomDelivery::new(100, false);
    let (a, b, c) = (batch_peer(), batch_peer(), Arc::new(Peer::new(256)));
    delivery.handle(joined(&a, "a"));
    delivery.handle(joined(&c, "c"));
    delivery.flush();
    delivery.flush_presence();
    sent(&a);
    sent(&c);
    delivery.handle(said("c", "one"));
    delivery.handle(joined(&b, "b"));
    delivery.handle(said("c", "two"));
    delivery.handle(left(&a, "a"));
    delivery.handle(said("c", "three"));
    delivery.flush();
    assert_eq!(kinds(&sent(&a).0), ["one", "two"]);
    assert_eq!(kinds(&sent(&b).0), ["welcome", "two", "three"]);
    assert_eq!(
        kinds(&sent(&c).0),
        ["one", "joined", "two", "left", "three"]
    );
}

#[test]
fn a_part_of_a_pass_carries_the_id_of_its_own_last_message() {
    let (mut delivery, a) = room_of_one(false, 256);
    let b = Arc::new(Peer::new(256));
    delivery.handle(said("a", "one"));
    delivery.handle(joined(&b, "b"));
    delivery.handle(left(&a, "a"));
    delivery.flush();
    let mut batch = Batch::default();
    futures_util::FutureExt::now_or_never(a.outbox.next_batch(&mut batch)).unwrap();
    assert_eq!(batch.entries.iter().map(|e| e.last_id()).max(), Some(1));
    let mut batch = Batch::default();
    futures_util::FutureExt::now_or_never(b.outbox.next_batch(&mut batch)).unwrap();
    assert_eq!(
        batch.entries.iter().map(|e| e.last_id()).max(),
        Some(0),
        "b was sent no message"
    );
}

/// The `users` of the welcome the peer has waiting.
fn welcome_users(peer: &Peer) -> Vec<String> {
    let mut batch = Batch::default();
    futures_util::FutureExt::now_or_never(peer.outbox.next_batch(&mut batch)).unwrap();
    let frame = batch.frames().next().unwrap();
    let v = rmpv::decode::read_value(&mut &frame[4..]).unwrap();
    assert_eq!(v["type"].as_str(), Some("welcome"));
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn welcomes_list_the_room_across_joins_departures_and_resumes() {
    let mut delivery = RoomDelivery::new(100, false);
    let peers: Vec<_> = (0..5).map(|_| Arc::new(Peer::new(256))).collect();
    for (peer, name) in peers.iter().zip(["a", "b", "c"]) {
        delivery.handle(joined(peer, name));
    }
    assert_eq!(welcome_users(&peers[2]), ["a", "b", "c"]);
    delivery.handle(left(&peers[1], "b"));
    delivery.handle(joined(&peers[3], "d"));
    assert_eq!(welcome_users(&peers[3]), ["a", "c", "d"]);
    delivery.handle(RoomEvent::MemberResumed {
        old: peers[0].id,
        peer: peers[4].clone(),
        name: "a".into(),
        after: 0,
    });
    assert_eq!(welcome_users(&peers[4]), ["a", "c", "d"]);
    // The last in join order resumes, then someone joins.
    let (d2, e) = (Arc::new(Peer::new(256)), Arc::new(Peer::new(256)));
    delivery.handle(RoomEvent::MemberResumed {
        old: peers[3].id,
        peer: d2.clone(),
        name: "d".into(),
        after: 0,
    });
    assert_eq!(welcome_users(&d2), ["a", "c", "d"]);
    delivery.handle(joined(&e, "e"));
    assert_eq!(welcome_users(&e), ["a", "c", "d", "e"]);
}

#[test]
fn remote_members_are_told_and_listed_in_join_order() {
    let mut delivery = RoomDelivery::new(100, false);
    let (a, c) = (Arc::new(Peer::new(256)), Arc::new(Peer::new(256)));
    delivery.handle(joined(&a, "a"));
    welcome_users(&a);
    let remote = |id, name: &str| RoomEvent::RemoteJoined {
        id,
        name: name.into(),
        ts: 0,
    };
    delivery.handle(remote(1 << 62, "b"));
    delivery.handle(said("b", "from afar"));
    delivery.flush();
    let (frames, _) = sent(&a);
    assert_eq!(kinds(&frames), ["joined", "from afar"]);
    delivery.handle(joined(&c, "c"));
    delivery.handle(remote((1 << 62) + 1, "d"));
    assert_eq!(welcome_users(&c), ["a", "b", "c"]);
    delivery.flush();
    // After a departure the names are encoded again, still in join order.
    delivery.handle(RoomEvent::RemoteLeft {
        id: 1 << 62,
        name: "b".into(),
        reason: anteroom_protocol::LeftReason::Disconnected,
        ts: 0,
    });
    delivery.handle(left(&a, "a"));
    let e = Arc::new(Peer::new(256));
    delivery.handle(joined(&e, "e"));
    assert_eq!(welcome_users(&e), ["c", "d", "e"]);
    delivery.flush();
    let (frames, _) = sent(&c);
    assert_eq!(kinds(&frames), ["joined", "left", "left", "joined"]);
    // A remote departure nobody knows of changes nothing.
    delivery.handle(RoomEvent::RemoteLeft {
        id: 7,
        name: "x".into(),
        reason: anteroom_protocol::LeftReason::Disconnected,
        ts: 0,
    });
    delivery.flush();
    assert_eq!(sent(&c).0.len(), 0);
}

#[test]
fn messages_keep_the_ids_the_cluster_gave_them() {
    let (mut delivery, a) = room_of_one(false, 64);
    let mut given = said("a", "x");
    if let RoomEvent::MessagePosted { id, .. } = &mut given {
        *id = Some(41);
    }
    delivery.handle(given);
    delivery.handle(said("a", "y"));
    delivery.flush();
    let mut batch = Batch::default();
    futures_util::FutureExt::now_or_never(a.outbox.next_batch(&mut batch)).unwrap();
    let ids: Vec<u64> = batch
        .frames()
        .map(|f| {
            rmpv::decode::read_value(&mut &f[4..]).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [41, 42]);
}
