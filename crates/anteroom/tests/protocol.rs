//! Framing, message types, names and error codes, over real sockets.

mod support;

use std::time::Duration;

use rmpv::Value;
use support::{Client, TestServer, frame_of, map};

#[tokio::test]
async fn welcome_lists_users_in_join_order_with_capacity_and_greeting() {
    let s = TestServer::start(|c| c.max_active = 5).await;
    let _ann = s.join("ann").await;
    let mut bob = s.connect().await;
    bob.hello("bob").await;
    let w = bob.recv().await;
    assert_eq!(
        w["type"].as_str(),
        Some("welcome"),
        "first frame is the welcome: {w}"
    );
    assert_eq!(w["name"].as_str(), Some("bob"));
    let users: Vec<&str> = w["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(users, ["ann", "bob"]);
    assert_eq!(w["capacity"].as_u64(), Some(5));
    assert!(!w["text"].as_str().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn joined_goes_to_others_and_messages_to_everyone_with_increasing_ids() {
    let s = TestServer::start(|_| {}).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    let j = ann.recv_type("joined").await;
    assert_eq!(j["name"].as_str(), Some("bob"));
    assert!(j["ts"].as_u64().unwrap() > 1_600_000_000_000);
    ann.say("one").await;
    bob.say("two").await;
    let mut ids = Vec::new();
    for c in [&mut ann, &mut bob] {
        let a = c.recv_type("message").await;
        let b = c.recv_type("message").await;
        assert_eq!(
            (a["from"].as_str(), a["text"].as_str()),
            (Some("ann"), Some("one"))
        );
        assert_eq!(
            (b["from"].as_str(), b["text"].as_str()),
            (Some("bob"), Some("two"))
        );
        assert!(a["ts"].is_u64());
        assert!(b["id"].as_u64() > a["id"].as_u64());
        ids.push((a["id"].as_u64(), b["id"].as_u64()));
    }
    assert_eq!(ids[0], ids[1], "every member sees the same ids");
    // The sender does not get a `joined` for itself.
    bob.expect_silence(Duration::from_millis(200)).await;
    s.stop().await;
}

#[tokio::test]
async fn who_lists_members_in_join_order() {
    let s = TestServer::start(|_| {}).await;
    let mut ann = s.join("ann").await;
    let bob = s.join("bob").await;
    let _cid = s.join("cid").await;
    assert_eq!(ann.recv_type("joined").await["name"].as_str(), Some("bob"));
    assert_eq!(ann.recv_type("joined").await["name"].as_str(), Some("cid"));
    drop(bob);
    let left = ann.recv_type("left").await;
    assert_eq!(left["name"].as_str(), Some("bob"));
    assert_eq!(left["reason"].as_str(), Some("disconnected"));
    ann.send_type("who", &[]).await;
    let u = ann.recv_type("users").await;
    let names: Vec<&str> = u["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "cid"]);
    s.stop().await;
}

#[tokio::test]
async fn ping_is_answered_with_the_same_id_or_none() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    // Works before hello too.
    c.send_type("ping", &[("id", 42.into())]).await;
    let p = c.recv().await;
    assert_eq!(p["type"].as_str(), Some("pong"));
    assert_eq!(p["id"].as_i64(), Some(42));
    c.send_type("ping", &[]).await;
    let p = c.recv().await;
    assert_eq!(p["type"].as_str(), Some("pong"));
    assert!(
        p.as_map()
            .unwrap()
            .iter()
            .all(|(k, _)| k.as_str() != Some("id")),
        "{p}"
    );
    // A pong from the client gets no answer.
    c.send_type("pong", &[("id", 1.into())]).await;
    c.expect_silence(Duration::from_millis(200)).await;
    s.stop().await;
}

#[tokio::test]
async fn bye_is_answered_and_others_see_left_bye() {
    let s = TestServer::start(|_| {}).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    ann.recv_type("joined").await;
    bob.send_type("bye", &[]).await;
    bob.expect_bye("bye").await;
    let l = ann.recv_type("left").await;
    assert_eq!(l["name"].as_str(), Some("bob"));
    assert_eq!(l["reason"].as_str(), Some("bye"));
    assert!(l["ts"].is_u64());
    s.stop().await;
}

#[tokio::test]
async fn oversized_length_is_a_protocol_error_then_close() {
    let s = TestServer::start(|c| {
        c.max_frame_bytes = 1024;
        c.max_message_bytes = 512;
    })
    .await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    ann.recv_type("joined").await;
    bob.send_raw(&1025u32.to_be_bytes()).await;
    bob.expect_error("frame_too_large").await;
    bob.expect_bye("protocol_error").await;
    let l = ann.recv_type("left").await;
    assert_eq!(l["reason"].as_str(), Some("protocol_error"));

    // A 4 GiB length prefix is refused the same way, without allocating it.
    let mut c = s.connect().await;
    c.send_raw(&u32::MAX.to_be_bytes()).await;
    c.expect_error("frame_too_large").await;
    c.expect_bye("protocol_error").await;
    s.stop().await;
}

#[tokio::test]
async fn a_frame_of_exactly_max_frame_bytes_is_accepted() {
    let s = TestServer::start(|c| {
        c.max_frame_bytes = 200;
        c.max_message_bytes = 136;
    })
    .await;
    let mut ann = s.join("ann").await;
    // Pad an unknown key so the payload is exactly 200 bytes.
    let base = frame_of(&map(&[("type", "ping".into()), ("pad", "".into())])).len() - 4;
    let pad = "x".repeat(200 - base - 1); // str8 header grows by one byte past 31
    let f = frame_of(&map(&[("type", "ping".into()), ("pad", pad.into())]));
    assert_eq!(f.len() - 4, 200);
    ann.send_raw(&f).await;
    ann.recv_type("pong").await;
    s.stop().await;
}

#[tokio::test]
async fn zero_length_frame_is_bad_frame_then_close() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    c.send_raw(&0u32.to_be_bytes()).await;
    c.expect_error("bad_frame").await;
    c.expect_bye("protocol_error").await;
    s.stop().await;
}

#[tokio::test]
async fn malformed_payloads_get_bad_frame_and_the_connection_stays() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    let mut trailing = frame_of(&map(&[("type", "ping".into())]));
    trailing.push(0xc0);
    trailing[3] += 1;
    let cases: Vec<Vec<u8>> = vec![
        frame_of(&Value::from(5)),               // not a map
        frame_of(&Value::Array(vec![])),         // not a map
        frame_of(&map(&[("name", "x".into())])), // no type
        frame_of(&map(&[("type", 3.into())])),   // type not a string
        vec![0, 0, 0, 2, 0x81, 0xc1],            // invalid MessagePack
        vec![0, 0, 0, 3, 0x81, 0xa1, b't'],      // truncated map
        trailing,                                // bytes after the value
    ];
    for case in cases {
        c.send_raw(&case).await;
        c.expect_error("bad_frame").await;
    }
    c.hello("ann").await;
    c.recv_type("welcome").await;
    s.stop().await;
}

#[tokio::test]
async fn unknown_type_and_bad_request() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    c.send_type("dance", &[]).await;
    c.expect_error("unknown_type").await;
    // Frame-level errors are judged before the handshake.
    c.send_type("say", &[]).await;
    c.expect_error("bad_request").await;
    c.send_type("hello", &[("name", 7.into())]).await;
    c.expect_error("bad_request").await;
    c.send_type("pong", &[]).await;
    c.expect_error("bad_request").await;
    c.send_type("ping", &[("id", "x".into())]).await;
    c.expect_error("bad_request").await;
    c.hello("ann").await;
    c.recv_type("welcome").await;
    c.send_type("say", &[("text", Value::Nil)]).await;
    c.expect_error("bad_request").await;
    // A second hello after joining.
    c.hello("ann2").await;
    c.expect_error("bad_request").await;
    // Unknown keys are ignored.
    c.send_type("say", &[("text", "hi".into()), ("colour", "red".into())])
        .await;
    assert_eq!(c.recv_type("message").await["text"].as_str(), Some("hi"));
    s.stop().await;
}

#[tokio::test]
async fn say_and_who_before_hello_need_the_handshake() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    c.say("hi").await;
    c.expect_error("handshake_required").await;
    c.send_type("who", &[]).await;
    c.expect_error("handshake_required").await;
    s.stop().await;
}

#[tokio::test]
async fn invalid_names_are_refused_and_the_client_may_retry() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    for bad in [
        "",
        "   ",
        "a\u{0}b",
        "a\u{7f}",
        "x\u{85}y",
        "\u{202e}nna",
        "ann\u{200b}",
        "\u{feff}ann",
        "a\u{2066}b\u{2069}",
        &"n".repeat(33),
        &"é".repeat(33),
    ] {
        c.hello(bad).await;
        c.expect_error("name_invalid").await;
    }
    c.hello("  \t🦀 crab \n").await;
    let w = c.recv_type("welcome").await;
    assert_eq!(w["name"].as_str(), Some("🦀 crab"), "stored trimmed");
    let mut d = s.connect().await;
    let long = "é".repeat(32);
    d.hello(&long).await;
    assert_eq!(
        d.recv_type("welcome").await["name"].as_str(),
        Some(long.as_str())
    );
    s.stop().await;
}

#[tokio::test]
async fn names_are_unique_case_insensitively_in_room_and_queue() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let mut ann = s.join("Ännä").await;
    let _queued = s.queue("Bob", 1).await;
    let mut c = s.connect().await;
    c.hello("äNNÄ").await;
    c.expect_error("name_taken").await;
    c.hello(" BOB ").await;
    c.expect_error("name_taken").await;
    c.hello("cid").await;
    assert_eq!(c.recv_type("queued").await["position"].as_u64(), Some(2));
    // A name is free again once its holder disconnects.
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    let mut again = s.connect().await;
    for _ in 0..50 {
        again.hello("ÄNNÄ").await;
        let v = again.recv().await;
        if v["type"].as_str() == Some("queued") {
            break;
        }
        assert_eq!(v["code"].as_str(), Some("name_taken"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn message_text_limits() {
    let s = TestServer::start(|c| c.max_message_bytes = 10).await;
    let mut c = s.join("ann").await;
    c.say("").await;
    c.expect_error("bad_request").await;
    c.say("ééééé").await; // 10 bytes: at the limit
    assert_eq!(c.recv_type("message").await["text"].as_str(), Some("ééééé"));
    c.say("éééééx").await; // 11 bytes
    c.expect_error("message_too_long").await;
    c.say("ok").await;
    assert_eq!(c.recv_type("message").await["text"].as_str(), Some("ok"));
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_refuses_messages_over_the_bucket() {
    let s = TestServer::start(|c| {
        c.rate_limit = 1.0;
        c.rate_burst = 3;
    })
    .await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    ann.recv_type("joined").await;
    for i in 0..5 {
        ann.say(&format!("m{i}")).await;
    }
    let mut delivered = Vec::new();
    let mut limited = 0;
    for _ in 0..5 {
        let v = ann.recv().await;
        match v["type"].as_str().unwrap() {
            "message" => delivered.push(v["text"].as_str().unwrap().to_string()),
            "error" => {
                assert_eq!(v["code"].as_str(), Some("rate_limited"));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(delivered, ["m0", "m1", "m2"]);
    assert_eq!(limited, 2);
    // Refused messages are not delivered to others either.
    for want in ["m0", "m1", "m2"] {
        assert_eq!(bob.recv_type("message").await["text"].as_str(), Some(want));
    }
    bob.expect_silence(Duration::from_millis(200)).await;
    // The bucket refills at rate_limit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ann.say("later").await;
    assert_eq!(
        ann.recv_type("message").await["text"].as_str(),
        Some("later")
    );
    s.stop().await;
}

#[tokio::test]
async fn pipelined_hello_and_say_are_judged_after_admission() {
    let s = TestServer::start(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    let mut burst = frame_of(&map(&[("type", "hello".into()), ("name", "ann".into())]));
    burst.extend(frame_of(&map(&[
        ("type", "say".into()),
        ("text", "first".into()),
    ])));
    c.send_raw(&burst).await;
    assert_eq!(c.recv().await["type"].as_str(), Some("welcome"));
    assert_eq!(c.recv().await["text"].as_str(), Some("first"));
    s.stop().await;
}

#[tokio::test]
async fn error_and_bye_survive_input_sent_after_a_protocol_error() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    // An oversized length, then a flood the server must discard, not reset on.
    let mut burst = u32::MAX.to_be_bytes().to_vec();
    burst.extend(std::iter::repeat_n(0x5a, 256 * 1024));
    let (mut rx, mut tx) = c.stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut tx, &burst).await;
        tx
    });
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut buf),
    )
    .await;
    assert!(
        read.expect("closed in time").is_ok(),
        "connection reset instead of closed"
    );
    let mut rest = &buf[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let v = rmpv::decode::read_value(&mut &rest[4..4 + len]).unwrap();
        frames.push(v["type"].as_str().unwrap().to_string());
        rest = &rest[4 + len..];
    }
    assert_eq!(frames, ["error", "bye"]);
    drop(writer);
    c = Client::connect(s.addr).await;
    c.send_type("ping", &[]).await;
    c.recv_type("pong").await;
    s.stop().await;
}

#[tokio::test]
async fn server_frames_may_exceed_max_frame_bytes() {
    let s = TestServer::start(|c| {
        c.max_frame_bytes = 128;
        c.max_message_bytes = 64;
    })
    .await;
    let mut members = Vec::new();
    for i in 0..20 {
        members.push(s.join(&format!("a-rather-long-name-{i:02}")).await);
    }
    let mut last = s.connect().await;
    last.hello("last").await;
    let w = last.recv_type("welcome").await;
    assert_eq!(w["users"].as_array().unwrap().len(), 21);
    s.stop().await;
}

#[tokio::test]
async fn ping_ids_of_any_integer_width_are_echoed() {
    let s = TestServer::start(|_| {}).await;
    let mut c = s.connect().await;
    for id in [
        Value::from(-5),
        Value::from(u64::MAX),
        Value::from(i64::MIN),
    ] {
        c.send_type("ping", &[("id", id.clone())]).await;
        assert_eq!(c.recv_type("pong").await["id"], id);
    }
    s.stop().await;
}
