//! `resume`: a dropped client's seat or queue place is held for
//! `resume_grace`, unseen by the others, and taken back with its token.

use std::time::{Duration, Instant};

use rmpv::Value;

use crate::kit::{has_key, hello_with, join_with, messages, strings, texts};
use crate::support::{Client, TestServer, metric, wait_metric};

const FEATURES: &[&str] = &["resume", "history", "whisper"];

fn grace(seconds: u64) -> impl FnOnce(&mut anteroom_broker::config::Config) {
    move |c| c.resume_grace = Duration::from_secs(seconds)
}

/// Sends a `hello` that takes a held place back.
async fn resume_hello(c: &mut Client, name: &str, token: &str, last_id: Option<u64>) {
    let mut fields = vec![
        ("name", Value::from(name)),
        ("features", strings(FEATURES)),
        ("resume", Value::from(token)),
    ];
    if let Some(id) = last_id {
        fields.push(("last_id", Value::from(id)));
    }
    c.send_type("hello", &fields).await;
}

fn token_of(frame: &Value) -> String {
    frame["resume"]
        .as_str()
        .unwrap_or_else(|| panic!("no resume token in {frame}"))
        .to_string()
}

#[tokio::test]
async fn a_dropped_member_comes_back_unseen_with_what_it_missed() {
    let _serial = crate::serial().await;
    let s = TestServer::start(grace(10)).await;
    let (ann, welcome, _) = join_with(s.addr, "ann", FEATURES).await;
    let token = token_of(&welcome);
    assert_eq!(welcome["resume_grace_s"].as_u64(), Some(10));
    let mut bob = Client::join(s.addr, "bob").await;
    bob.say("before").await;
    let seen = bob.next_message().await["id"].as_u64().unwrap();

    // The connection dies without a goodbye (a reset, as on a network drop).
    ann.reset();
    wait_metric(s.metrics_addr, "anteroom_held{place=\"seat\"}", |v| {
        v == 1.0
    })
    .await;
    // Held: the name stays taken, and whispers find nobody.
    let mut other = Client::connect(s.addr).await;
    other.hello("ANN").await;
    other.expect_error("name_taken").await;
    let (mut carl, _, _) = join_with(s.addr, "carl", FEATURES).await;
    carl.send_type("whisper", &[("to", "ann".into()), ("text", "hi".into())])
        .await;
    carl.expect_error("no_such_user").await;
    bob.say("while away 1").await;
    bob.say("while away 2").await;
    // bob sees carl join and its own messages: nothing about ann.
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("carl"));
    bob.next_message().await;
    bob.next_message().await;

    let mut back = Client::connect(s.addr).await;
    resume_hello(&mut back, "Ann", &token, Some(seen)).await;
    let welcome = back.recv_type("welcome").await;
    assert_eq!(welcome["resumed"].as_bool(), Some(true), "{welcome}");
    assert_eq!(welcome["name"].as_str(), Some("ann"));
    let users: Vec<&str> = welcome["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    // Its place in join order was kept.
    assert_eq!(users, ["ann", "bob", "carl"]);
    let new_token = token_of(&welcome);
    assert_ne!(new_token, token);
    let missed = back.recv().await;
    assert_eq!(missed["type"].as_str(), Some("history"), "{missed}");
    assert_eq!(texts(&missed), ["while away 1", "while away 2"]);
    assert_eq!(missed["more"].as_bool(), Some(false));
    // Live again, and nobody saw it go or come.
    bob.say("welcome back").await;
    assert_eq!(
        back.next_message().await["text"].as_str(),
        Some("welcome back")
    );
    assert_eq!(
        bob.next_message().await["text"].as_str(),
        Some("welcome back")
    );
    bob.expect_silence(Duration::from_millis(300)).await;
    let scrape = s.scrape().await;
    assert_eq!(metric(&scrape, "anteroom_held{place=\"seat\"}"), Some(0.0));
    assert_eq!(
        metric(&scrape, "anteroom_resumed_total{place=\"seat\"}"),
        Some(1.0)
    );

    // The spent token is worth nothing: an ordinary hello, told so.
    let mut again = Client::connect(s.addr).await;
    resume_hello(&mut again, "zed", &token, None).await;
    let welcome = again.recv_type("welcome").await;
    assert_eq!(welcome["resumed"].as_bool(), Some(false), "{welcome}");
    s.stop().await;
}

#[tokio::test]
async fn without_last_id_the_missed_messages_start_after_the_last_one_written() {
    let _serial = crate::serial().await;
    let s = TestServer::start(grace(10)).await;
    let mut bob = Client::join(s.addr, "bob").await;
    bob.say("old").await;
    bob.next_message().await;
    // ann is sent "old" in the history after its welcome, "seen" live.
    let (mut ann, welcome, history) = join_with(s.addr, "ann", FEATURES).await;
    assert_eq!(texts(&history.unwrap()), ["old"]);
    let token = token_of(&welcome);
    bob.say("seen").await;
    assert_eq!(ann.next_message().await["text"].as_str(), Some("seen"));
    ann.reset();
    wait_metric(s.metrics_addr, "anteroom_held{place=\"seat\"}", |v| {
        v == 1.0
    })
    .await;
    bob.say("missed").await;
    bob.next_message().await;
    bob.next_message().await;
    let mut back = Client::connect(s.addr).await;
    resume_hello(&mut back, "ann", &token, None).await;
    let welcome = back.recv_type("welcome").await;
    assert_eq!(welcome["resumed"].as_bool(), Some(true));
    let missed = back.recv().await;
    assert_eq!(texts(&missed), ["missed"], "{missed}");
    // Dropped again with no live message since: what that history frame
    // held counts as sent, and is not sent a third time.
    back.reset();
    wait_metric(s.metrics_addr, "anteroom_held{place=\"seat\"}", |v| {
        v == 1.0
    })
    .await;
    let mut again = Client::connect(s.addr).await;
    resume_hello(&mut again, "ann", &token_of(&welcome), None).await;
    assert_eq!(
        again.recv_type("welcome").await["resumed"].as_bool(),
        Some(true)
    );
    let missed = again.recv().await;
    assert_eq!(texts(&missed), Vec::<String>::new(), "{missed}");
    s.stop().await;
}

#[tokio::test]
async fn the_place_is_released_when_the_grace_ends_as_the_drop() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| {
        c.resume_grace = Duration::from_secs(1);
        c.max_active = 2;
    })
    .await;
    let (ann, _, _) = join_with(s.addr, "ann", FEATURES).await;
    let mut bob = Client::join(s.addr, "bob").await;
    let mut carl = Client::queue(s.addr, "carl", 1).await;
    let dropped = Instant::now();
    ann.reset();
    let left = bob.recv_type("left").await;
    let after = dropped.elapsed();
    assert_eq!(left["name"].as_str(), Some("ann"));
    assert_eq!(left["reason"].as_str(), Some("disconnected"));
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_millis(2500),
        "released after {after:?}"
    );
    // The queue moves only now.
    assert_eq!(
        carl.recv_type("welcome").await["name"].as_str(),
        Some("carl")
    );
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("carl"));
    // And the name is free.
    let _ann = Client::queue(s.addr, "ann", 1).await;
    s.stop().await;
}

#[tokio::test]
async fn a_goodbye_releases_at_once() {
    let _serial = crate::serial().await;
    let s = TestServer::start(grace(30)).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", FEATURES).await;
    let mut bob = Client::join(s.addr, "bob").await;
    let start = Instant::now();
    ann.send_type("bye", &[]).await;
    let left = bob.recv_type("left").await;
    assert_eq!(left["reason"].as_str(), Some("bye"));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        metric(&s.scrape().await, "anteroom_held{place=\"seat\"}"),
        Some(0.0)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_queued_client_keeps_its_turn() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| {
        c.resume_grace = Duration::from_secs(10);
        c.max_active = 1;
    })
    .await;
    let mut member = Client::join(s.addr, "member").await;
    let mut first = Client::connect(s.addr).await;
    hello_with(&mut first, "first", &["resume", "eta"]).await;
    let queued = first.recv_type("queued").await;
    assert_eq!(queued["position"].as_u64(), Some(1));
    let token = token_of(&queued);
    let mut second = Client::queue(s.addr, "second", 2).await;

    first.reset();
    wait_metric(s.metrics_addr, "anteroom_held{place=\"queue\"}", |v| {
        v == 1.0
    })
    .await;
    // Nobody behind moves up.
    second.expect_silence(Duration::from_millis(1500)).await;

    let mut back = Client::connect(s.addr).await;
    back.send_type(
        "hello",
        &[
            ("name", "first".into()),
            ("features", strings(&["resume", "eta"])),
            ("resume", token.as_str().into()),
        ],
    )
    .await;
    let queued = back.recv_type("queued").await;
    assert_eq!(queued["resumed"].as_bool(), Some(true), "{queued}");
    assert_eq!(queued["position"].as_u64(), Some(1));
    assert_eq!(
        metric(&s.scrape().await, "anteroom_resumed_total{place=\"queue\"}"),
        Some(1.0)
    );
    // Its turn comes first.
    member.send_type("bye", &[]).await;
    assert_eq!(
        back.recv_type("welcome").await["name"].as_str(),
        Some("first")
    );
    assert_eq!(
        second.recv_type("queued").await["position"].as_u64(),
        Some(1)
    );
    s.stop().await;
}

#[tokio::test]
async fn resume_is_not_granted_without_a_grace_and_a_version1_hello_is_untouched() {
    let _serial = crate::serial().await;
    let s = TestServer::start(grace(0)).await;
    let (_ann, welcome, _) = join_with(s.addr, "ann", FEATURES).await;
    assert!(!has_key(&welcome, "resume"), "{welcome}");
    let mut bob = Client::connect(s.addr).await;
    bob.send_type("hello", &[("name", "bob".into()), ("resume", "x".into())])
        .await;
    let welcome = bob.recv_type("welcome").await;
    for key in ["resume", "resumed", "features", "resume_grace_s"] {
        assert!(!has_key(&welcome, key), "{welcome}");
    }
    s.stop().await;
}

#[tokio::test]
async fn missed_messages_beyond_a_page_are_the_newest_with_more() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| {
        c.resume_grace = Duration::from_secs(10);
        c.history_page_max = 3;
        crate::kit::unlimited(c);
    })
    .await;
    let (ann, welcome, _) = join_with(s.addr, "ann", FEATURES).await;
    let token = token_of(&welcome);
    let mut bob = Client::join(s.addr, "bob").await;
    ann.reset();
    wait_metric(s.metrics_addr, "anteroom_held{place=\"seat\"}", |v| {
        v == 1.0
    })
    .await;
    for i in 0..5 {
        bob.say(&format!("m{i}")).await;
    }
    for _ in 0..5 {
        bob.next_message().await;
    }
    let mut back = Client::connect(s.addr).await;
    resume_hello(&mut back, "ann", &token, Some(0)).await;
    back.recv_type("welcome").await;
    let missed = back.recv().await;
    assert_eq!(texts(&missed), ["m2", "m3", "m4"]);
    assert_eq!(missed["more"].as_bool(), Some(true));
    assert_eq!(messages(&missed).len(), 3);
    s.stop().await;
}

#[tokio::test]
async fn a_token_of_a_connection_not_yet_seen_dead_takes_its_place_over() {
    let _serial = crate::serial().await;
    let s = TestServer::start(grace(10)).await;
    let (mut old, welcome, _) = join_with(s.addr, "ann", FEATURES).await;
    let token = token_of(&welcome);
    let mut bob = Client::join(s.addr, "bob").await;
    // The network failed, but the server has not noticed: the old
    // connection is still open when the client comes back.
    let mut back = Client::connect(s.addr).await;
    resume_hello(&mut back, "ann", &token, None).await;
    let welcome = back.recv_type("welcome").await;
    assert_eq!(welcome["resumed"].as_bool(), Some(true), "{welcome}");
    assert_eq!(
        back.recv_type("history").await["messages"],
        Value::Array(vec![])
    );
    // The old connection is closed; nobody saw ann leave or come back.
    old.expect_end().await;
    bob.say("hi").await;
    assert_eq!(back.next_message().await["text"].as_str(), Some("hi"));
    assert_eq!(bob.next_message().await["text"].as_str(), Some("hi"));
    bob.expect_silence(Duration::from_millis(300)).await;
    // A token under another name takes nothing over.
    let mut thief = Client::connect(s.addr).await;
    resume_hello(&mut thief, "mallory", &token_of(&welcome), None).await;
    assert_eq!(
        thief.recv_type("welcome").await["resumed"].as_bool(),
        Some(false)
    );
    back.say("still here").await;
    assert_eq!(
        back.next_message().await["text"].as_str(),
        Some("still here")
    );
    s.stop().await;
}
