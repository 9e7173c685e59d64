//! Asking for features in `hello`: what is granted, in `welcome` and in the
//! first `queued` only.

use rmpv::Value;

use crate::kit::{CHAT, granted, has_key, hello_with, join_with, strings, web};
use crate::support::{Client, TestServer};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn unknown_names_are_ignored_and_only_implemented_features_are_granted() {
    let s = TestServer::start(|c| {
        web(c);
        c.max_upload_bytes = 12_345;
    })
    .await;
    let (_c, welcome, history) = join_with(
        s.addr,
        "ann",
        &[
            "teleport",
            "history",
            "whisper",
            "files",
            "resume",
            "eta",
            "presence_batch",
            "lagging",
            "HISTORY",
        ],
    )
    .await;
    assert_eq!(
        sorted(granted(&welcome)),
        [
            "eta",
            "files",
            "history",
            "lagging",
            "presence_batch",
            "resume",
            "whisper"
        ],
        "{welcome}"
    );
    assert!(history.is_some());
    let token = welcome["upload_token"].as_str().expect("an upload token");
    assert!(!token.is_empty());
    assert_eq!(welcome["max_upload_bytes"].as_u64(), Some(12_345));
    assert!(welcome["resume"].as_str().is_some_and(|t| t.len() >= 32));
    assert_eq!(welcome["resume_grace_s"].as_u64(), Some(30));
    // A `hello` without a token is not answered `resumed`.
    assert!(!has_key(&welcome, "resumed"), "{welcome}");
    // Each connection gets its own token.
    let (_d, other, _) = join_with(s.addr, "bob", &["files"]).await;
    assert_eq!(granted(&other), ["files"]);
    assert_ne!(other["upload_token"].as_str(), Some(token));
    s.stop().await;
}

#[tokio::test]
async fn features_of_another_type_are_a_bad_request_and_the_connection_stays() {
    let s = TestServer::start(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    for wrong in [
        Value::from("history"),
        Value::from(1),
        Value::Array(vec![Value::from(1)]),
        Value::Map(vec![]),
    ] {
        c.send_type("hello", &[("name", "ann".into()), ("features", wrong)])
            .await;
        c.expect_error("bad_request").await;
    }
    // The refused hellos claimed nothing: the name is still free.
    hello_with(&mut c, "ann", &["history"]).await;
    let welcome = c.recv_type("welcome").await;
    assert_eq!(granted(&welcome), ["history"]);
    s.stop().await;
}

#[tokio::test]
async fn an_empty_list_is_granted_an_empty_list_and_nothing_else() {
    let s = TestServer::start(web).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut c, welcome, history) = join_with(s.addr, "none", &[]).await;
    assert!(has_key(&welcome, "features"), "{welcome}");
    assert_eq!(granted(&welcome), Vec::<String>::new());
    assert!(history.is_none());
    assert!(!has_key(&welcome, "upload_token"), "{welcome}");
    assert!(!has_key(&welcome, "max_upload_bytes"), "{welcome}");
    // No history frame: the next frame is live.
    ann.say("live").await;
    let next = c.recv().await;
    assert_eq!(next["type"].as_str(), Some("message"), "{next}");
    c.send_type("history", &[]).await;
    c.expect_error("unknown_type").await;
    s.stop().await;
}

#[tokio::test]
async fn files_is_granted_only_with_the_web_listener() {
    let off = TestServer::start(|_| {}).await;
    let (_c, welcome, _) = join_with(off.addr, "ann", CHAT).await;
    assert_eq!(sorted(granted(&welcome)), ["history", "whisper"]);
    assert!(!has_key(&welcome, "upload_token"), "{welcome}");
    assert!(!has_key(&welcome, "max_upload_bytes"), "{welcome}");
    off.stop().await;

    let on = TestServer::start(web).await;
    let (_c, welcome, _) = join_with(on.addr, "ann", CHAT).await;
    assert_eq!(sorted(granted(&welcome)), ["files", "history", "whisper"]);
    assert!(welcome["upload_token"].is_str(), "{welcome}");
    assert_eq!(welcome["max_upload_bytes"].as_u64(), Some(8_388_608));
    on.stop().await;
}

/// Reads `queued` frames until `position`; every one of them must lack
/// `features`.
async fn queued_until_without_features(c: &mut Client, position: u64) {
    loop {
        let q = c.recv_type("queued").await;
        assert!(!has_key(&q, "features"), "a later queued: {q}");
        if q["position"].as_u64() == Some(position) {
            return;
        }
    }
}

#[tokio::test]
async fn the_first_queued_carries_features_and_later_ones_do_not() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let mut ann = s.join("ann").await;

    let mut bob = Client::connect(s.addr).await;
    hello_with(&mut bob, "bob", &["history", "unknown"]).await;
    let q = bob.recv_type("queued").await;
    assert_eq!(q["position"].as_u64(), Some(1));
    assert_eq!(granted(&q), ["history"], "{q}");

    let mut old = Client::connect(s.addr).await;
    old.hello("old").await;
    let q = old.recv_type("queued").await;
    assert_eq!(q["position"].as_u64(), Some(2));
    assert!(!has_key(&q, "features"), "a version-1 queued: {q}");

    let mut cid = Client::connect(s.addr).await;
    cid.send_type(
        "hello",
        &[("name", "cid".into()), ("features", strings(&[]))],
    )
    .await;
    let q = cid.recv_type("queued").await;
    assert_eq!(q["position"].as_u64(), Some(3));
    assert_eq!(granted(&q), Vec::<String>::new(), "{q}");

    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    let w = bob.recv_type("welcome").await;
    assert_eq!(granted(&w), ["history"], "{w}");
    assert_eq!(bob.recv().await["type"].as_str(), Some("history"));
    queued_until_without_features(&mut old, 1).await;
    queued_until_without_features(&mut cid, 2).await;

    bob.send_type("bye", &[]).await;
    bob.expect_bye("bye").await;
    old.recv_type("welcome").await;
    queued_until_without_features(&mut cid, 1).await;
    s.stop().await;
}
