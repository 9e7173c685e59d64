//! Whispers: direct messages between members granted `whisper`.

use rmpv::Value;

use crate::kit::{CHAT, hello_with, join_with};
use crate::support::{Client, TestServer};

fn whisper_fields(to: &str, text: &str) -> [(&'static str, Value); 2] {
    [("to", to.into()), ("text", text.into())]
}

/// A ping answered by the next frame: nothing else was waiting for `c`.
async fn nothing_pending(c: &mut Client, id: i64) {
    c.send_type("ping", &[("id", id.into())]).await;
    let next = c.recv().await;
    assert_eq!(
        next["type"].as_str(),
        Some("pong"),
        "expected nothing, got {next}"
    );
    assert_eq!(next["id"].as_i64(), Some(id));
}

fn check_whisper(w: &Value, from: &str, to: &str, text: &str) {
    assert_eq!(w["type"].as_str(), Some("whisper"), "{w}");
    assert_eq!(w["from"].as_str(), Some(from), "{w}");
    assert_eq!(w["to"].as_str(), Some(to), "{w}");
    assert_eq!(w["text"].as_str(), Some(text), "{w}");
    assert!(
        w["ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000),
        "{w}"
    );
}

#[tokio::test]
async fn a_whisper_reaches_the_recipient_and_the_sender_with_stored_names() {
    let s = TestServer::start(|_| {}).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(s.addr, "  Bob ", CHAT).await;
    let (mut zoe, _, _) = join_with(s.addr, "Zoë", &["whisper"]).await;
    let (mut cid, _, _) = join_with(s.addr, "cid", CHAT).await;
    for c in [&mut ann, &mut bob, &mut zoe] {
        c.recv_until(|v| v["type"].as_str() == Some("joined") && v["name"].as_str() == Some("cid"))
            .await;
    }

    ann.send_type("whisper", &whisper_fields("bOB", "hello bob"))
        .await;
    check_whisper(&bob.recv().await, "ann", "Bob", "hello bob");
    check_whisper(&ann.recv().await, "ann", "Bob", "hello bob");

    // Matched after Unicode lower-casing.
    bob.send_type("whisper", &whisper_fields("ZOË", "à toi"))
        .await;
    check_whisper(&zoe.recv().await, "Bob", "Zoë", "à toi");
    check_whisper(&bob.recv().await, "Bob", "Zoë", "à toi");

    // To oneself: once.
    ann.send_type("whisper", &whisper_fields("ANN", "note to self"))
        .await;
    check_whisper(&ann.recv().await, "ann", "ann", "note to self");
    nothing_pending(&mut ann, 1).await;

    // Nobody else sees any of it.
    nothing_pending(&mut cid, 2).await;
    nothing_pending(&mut bob, 3).await;
    nothing_pending(&mut zoe, 4).await;
    s.stop().await;
}

#[tokio::test]
async fn whisper_errors() {
    let s = TestServer::start(|c| c.max_active = 4).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(s.addr, "bob", CHAT).await;
    let mut old = s.join("old").await;
    let (mut plain, _, _) = join_with(s.addr, "plain", &["history"]).await;
    let mut cid = Client::connect(s.addr).await;
    hello_with(&mut cid, "cid", CHAT).await;
    cid.recv_type("queued").await;
    for c in [&mut ann, &mut bob, &mut old] {
        c.recv_until(|v| v["name"].as_str() == Some("plain")).await;
    }

    for (to, code) in [
        ("zed", "no_such_user"),
        ("cid", "no_such_user"),
        ("CID", "no_such_user"),
        ("old", "whisper_unsupported"),
        ("plain", "whisper_unsupported"),
    ] {
        ann.send_type("whisper", &whisper_fields(to, "hi")).await;
        ann.expect_error(code).await;
    }
    ann.send_type("whisper", &whisper_fields("bob", "")).await;
    ann.expect_error("bad_request").await;
    ann.send_type("whisper", &whisper_fields("bob", &"x".repeat(4097)))
        .await;
    ann.expect_error("message_too_long").await;
    ann.send_type("whisper", &[("text", "no recipient".into())])
        .await;
    ann.expect_error("bad_request").await;
    ann.send_type("whisper", &[("to", 7.into()), ("text", "hi".into())])
        .await;
    ann.expect_error("bad_request").await;
    // At the limit exactly: allowed.
    ann.send_type("whisper", &whisper_fields("bob", &"y".repeat(4096)))
        .await;
    assert_eq!(bob.recv().await["text"].as_str().map(str::len), Some(4096));
    ann.recv_type("whisper").await;

    cid.send_type("whisper", &whisper_fields("ann", "from the queue"))
        .await;
    cid.expect_error("not_admitted").await;
    // Without the feature, the request does not exist.
    plain
        .send_type("whisper", &whisper_fields("ann", "hi"))
        .await;
    plain.expect_error("unknown_type").await;

    nothing_pending(&mut bob, 1).await;
    nothing_pending(&mut old, 2).await;
    nothing_pending(&mut ann, 3).await;
    s.stop().await;
}

#[tokio::test]
async fn whispers_and_says_share_one_rate_limit() {
    let s = TestServer::start(|c| {
        // Refills in 10 s: nothing comes back during the test.
        c.rate_limit = 0.1;
        c.rate_burst = 3;
    })
    .await;
    let (mut ann, _, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(s.addr, "bob", CHAT).await;
    ann.recv_type("joined").await;
    ann.say("one").await;
    ann.next_message().await;
    ann.send_type("whisper", &whisper_fields("bob", "two"))
        .await;
    ann.recv_type("whisper").await;
    ann.say("three").await;
    ann.next_message().await;
    ann.send_type("whisper", &whisper_fields("bob", "four"))
        .await;
    ann.expect_error("rate_limited").await;
    ann.say("five").await;
    ann.expect_error("rate_limited").await;

    // The other way round: whispers use up what says would.
    assert_eq!(bob.next_message().await["text"].as_str(), Some("one"));
    check_whisper(&bob.recv().await, "ann", "bob", "two");
    assert_eq!(bob.next_message().await["text"].as_str(), Some("three"));
    for i in 0..3 {
        let text = format!("w{i}");
        bob.send_type("whisper", &whisper_fields("ann", &text))
            .await;
        check_whisper(&bob.recv().await, "bob", "ann", &text);
    }
    bob.say("over").await;
    bob.expect_error("rate_limited").await;
    s.stop().await;
}
