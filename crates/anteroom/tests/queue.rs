//! The waiting queue: positions, exact texts, FIFO promotion under churn,
//! leaving the queue, and turning clients away when it is full.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{Client, TestServer};

const QUEUED_TEXT: &str = "We are dealing with a large amount of users and you are at";

#[tokio::test]
async fn a_full_room_queues_with_exact_text_and_positions() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let _ann = s.join("ann").await;
    for (i, name) in ["bob", "cid", "dan"].iter().enumerate() {
        let mut c = s.connect().await;
        c.hello(name).await;
        let q = c.recv().await;
        let position = i as u64 + 1;
        assert_eq!(q["type"].as_str(), Some("queued"));
        assert_eq!(q["position"].as_u64(), Some(position));
        assert_eq!(q["waiting"].as_u64(), Some(position));
        assert_eq!(
            q["text"].as_str().unwrap(),
            format!(
                "We are dealing with a large amount of users and you are at {position} in queue"
            )
        );
        std::mem::forget(c);
    }
    s.stop().await;
}

#[tokio::test]
async fn promotion_welcomes_the_head_and_moves_everyone_up() {
    let s = TestServer::start(|c| c.max_active = 2).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    ann.recv_type("joined").await;
    let mut cid = s.queue("cid", 1).await;
    let mut dan = s.queue("dan", 2).await;
    let mut eve = s.queue("eve", 3).await;

    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;

    let w = cid.recv().await;
    assert_eq!(w["type"].as_str(), Some("welcome"), "{w}");
    assert_eq!(
        w["text"].as_str(),
        Some("A spot has opened up! You are now connected to the chat.")
    );
    let users: Vec<&str> = w["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(users, ["bob", "cid"]);

    assert_eq!(bob.recv_type("left").await["name"].as_str(), Some("ann"));
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("cid"));

    let q = dan.recv_type("queued").await;
    assert_eq!(
        (q["position"].as_u64(), q["waiting"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(q["text"].as_str().unwrap().starts_with(QUEUED_TEXT));
    assert_eq!(eve.recv_type("queued").await["position"].as_u64(), Some(2));

    // The promoted member can talk, and nobody queued sees it.
    cid.say("hello from cid").await;
    assert_eq!(bob.recv_type("message").await["from"].as_str(), Some("cid"));
    dan.expect_silence(Duration::from_millis(400)).await;
    s.stop().await;
}

#[tokio::test]
async fn a_queued_client_leaving_moves_those_behind_up() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let _ann = s.join("ann").await;
    let bob = s.queue("bob", 1).await;
    let mut cid = s.queue("cid", 2).await;
    let mut dan = s.queue("dan", 3).await;
    drop(bob);
    assert_eq!(cid.recv_type("queued").await["position"].as_u64(), Some(1));
    let q = dan.recv_type("queued").await;
    assert_eq!(
        (q["position"].as_u64(), q["waiting"].as_u64()),
        (Some(2), Some(2))
    );
    // bye from the queue works and frees the place too.
    cid.send_type("bye", &[]).await;
    cid.expect_bye("bye").await;
    assert_eq!(dan.recv_type("queued").await["position"].as_u64(), Some(1));
    s.stop().await;
}

#[tokio::test]
async fn queued_clients_may_only_ping_pong_and_leave() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let _ann = s.join("ann").await;
    let mut bob = s.queue("bob", 1).await;
    bob.say("hi").await;
    bob.expect_error("not_admitted").await;
    bob.send_type("who", &[]).await;
    bob.expect_error("not_admitted").await;
    bob.hello("bob2").await;
    bob.expect_error("bad_request").await;
    bob.send_type("ping", &[("id", 9.into())]).await;
    assert_eq!(bob.recv_type("pong").await["id"].as_i64(), Some(9));
    bob.send_type("pong", &[("id", 1.into())]).await;
    bob.send_type("bye", &[]).await;
    bob.expect_bye("bye").await;
    s.stop().await;
}

#[tokio::test]
async fn a_full_queue_turns_clients_away() {
    let s = TestServer::start(|c| {
        c.max_active = 1;
        c.max_waiting = 2;
    })
    .await;
    let _ann = s.join("ann").await;
    let _bob = s.queue("bob", 1).await;
    let _cid = s.queue("cid", 2).await;
    let mut dan = s.connect().await;
    dan.hello("dan").await;
    dan.expect_bye("server_full").await;
    // With no queue at all, a full room turns clients away at once.
    let s2 = TestServer::start(|c| {
        c.max_active = 1;
        c.max_waiting = 0;
    })
    .await;
    let _ann = s2.join("ann").await;
    let mut bob = s2.connect().await;
    bob.hello("bob").await;
    bob.expect_bye("server_full").await;
    s.stop().await;
    s2.stop().await;
}

/// Members leave, queued clients give up at random: the order in which an
/// observing member sees clients join must be their arrival order, and each
/// queued client's position never goes up.
#[tokio::test]
async fn fifo_promotion_under_churn() {
    const SEATS: usize = 3;
    const QUEUED: usize = 24;
    let s = TestServer::start(|c| c.max_active = SEATS).await;
    let mut observer = s.join("observer").await;
    let mut members: Vec<Client> = Vec::new();
    for i in 1..SEATS {
        members.push(s.join(&format!("m{i}")).await);
    }
    let mut queued: Vec<(String, Client)> = Vec::new();
    for i in 0..QUEUED {
        let name = format!("q{i:02}");
        queued.push((name.clone(), s.queue(&name, i as u64 + 1).await));
    }
    // Every fourth queued client gives up.
    let mut remaining: Vec<(String, Client)> = Vec::new();
    for (i, entry) in queued.into_iter().enumerate() {
        if i % 4 != 1 {
            remaining.push(entry);
        }
    }
    let expected: Vec<String> = remaining.iter().map(|(n, _)| n.clone()).collect();
    // Wait until the queue has settled: the last one is told its new place.
    let last = remaining.len() as u64;
    let tail = &mut remaining.last_mut().unwrap().1;
    while tail.recv_type("queued").await["position"].as_u64() != Some(last) {}
    drop(members);
    let mut last_position: HashMap<String, u64> = HashMap::new();
    for (name, mut c) in remaining {
        loop {
            let v = c.recv().await;
            match v["type"].as_str().unwrap() {
                "queued" => {
                    let p = v["position"].as_u64().unwrap();
                    let before = last_position.insert(name.clone(), p);
                    assert!(
                        before.is_none_or(|b| p <= b),
                        "{name} position went up: {before:?} -> {p}"
                    );
                }
                "welcome" => break,
                _ => {}
            }
        }
        // Leave at once so the next one is promoted.
        drop(c);
    }
    let mut joined = Vec::new();
    while joined.len() < expected.len() {
        let v = observer.recv().await;
        if v["type"].as_str() == Some("joined") && v["name"].as_str().unwrap().starts_with('q') {
            joined.push(v["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(joined, expected);
    s.stop().await;
}

/// After a burst of departures, every queued client learns its true
/// position within a second.
#[tokio::test]
async fn latest_position_arrives_within_a_second() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let _ann = s.join("ann").await;
    let mut queued = Vec::new();
    for i in 0..40 {
        queued.push(s.queue(&format!("q{i}"), i + 1).await);
    }
    // The first 20 leave at once.
    let rest = queued.split_off(20);
    drop(queued);
    let started = std::time::Instant::now();
    for (i, mut c) in rest.into_iter().enumerate() {
        let want = i as u64 + 1;
        loop {
            let q = c.recv_type("queued").await;
            let p = q["position"].as_u64().unwrap();
            assert!(p >= want, "position below the truth");
            if p == want {
                break;
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    s.stop().await;
}
