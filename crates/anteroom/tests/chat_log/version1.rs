//! A client that asks for no features is a version-1 client, whatever the
//! server can do: no new fields in its `welcome`, no `history` frame, no new
//! request types; it still gets every member's messages.

use crate::kit::{CHAT, has_key, join_with, token, upload_ok, web};
use crate::support::{Client, TestServer};

#[tokio::test]
async fn a_version_1_client_gets_version_1_frames_only() {
    let s = TestServer::start(web).await;
    let web_addr = s.web_addr.unwrap();
    let (mut ann, ann_welcome, _) = join_with(s.addr, "ann", CHAT).await;
    ann.say("said before old came").await;
    ann.next_message().await;

    let mut old = Client::connect(s.addr).await;
    old.hello("old").await;
    let welcome = old.recv_type("welcome").await;
    for key in ["features", "upload_token", "max_upload_bytes"] {
        assert!(
            !has_key(&welcome, key),
            "{key} in a version-1 welcome: {welcome}"
        );
    }
    ann.recv_type("joined").await;

    // No `history` frame: the next frame is a live one.
    ann.say("live").await;
    let next = old.recv().await;
    assert_eq!(next["type"].as_str(), Some("message"), "{next}");
    assert_eq!(next["text"].as_str(), Some("live"));
    ann.next_message().await;

    old.send_type("history", &[]).await;
    old.expect_error("unknown_type").await;
    old.send_type("history", &[("limit", 5.into())]).await;
    old.expect_error("unknown_type").await;
    old.send_type("whisper", &[("to", "ann".into()), ("text", "psst".into())])
        .await;
    old.expect_error("unknown_type").await;

    // A file another member posts reaches it, with the extra key.
    let file = upload_ok(web_addr, &token(&ann_welcome), "notes.txt", b"some notes").await;
    let url = file["url"].as_str().unwrap();
    ann.send_type("say", &[("text", "".into()), ("attachment", url.into())])
        .await;
    let m = old.next_message().await;
    assert_eq!(m["from"].as_str(), Some("ann"));
    assert_eq!(m["text"].as_str(), Some(""));
    assert_eq!(m["attachment"]["url"].as_str(), Some(url), "{m}");
    assert_eq!(m["attachment"]["name"].as_str(), Some("notes.txt"));
    assert_eq!(m["attachment"]["size"].as_u64(), Some(10));
    assert_eq!(m["attachment"]["mime"].as_str(), Some("text/plain"));
    ann.next_message().await;

    // Its own `attachment` is an unknown key, ignored: a plain message.
    old.send_type(
        "say",
        &[("text", "plain".into()), ("attachment", url.into())],
    )
    .await;
    let m = old.next_message().await;
    assert_eq!(m["text"].as_str(), Some("plain"));
    assert!(!has_key(&m, "attachment"), "{m}");
    let m = ann.next_message().await;
    assert!(!has_key(&m, "attachment"), "{m}");

    // And its messages reach members that asked for features.
    old.say("from old").await;
    assert_eq!(ann.next_message().await["text"].as_str(), Some("from old"));
    s.stop().await;
}
