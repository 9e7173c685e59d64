//! The WebSocket adapter's mapping onto the protocol's rules: text, empty
//! and oversized messages, and the close codes of every ending.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::kit::{self, Ws, decode};

#[tokio::test]
async fn a_text_message_is_a_bad_frame_and_the_connection_stays_open() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let mut ann = Ws::open(web, true).await;
    // Before joining and after: the same answer, nothing closed.
    let hello = r#"{"type":"hello","name":"ann"}"#;
    ann.send_message(Message::Text(hello.into())).await;
    ann.expect_error("bad_frame").await;
    ann.enter("ann").await;
    ann.send_message(Message::Text("hi".into())).await;
    ann.expect_error("bad_frame").await;
    ann.say("still here").await;
    assert_eq!(
        ann.next_message().await["text"].as_str(),
        Some("still here")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_empty_message_is_a_protocol_error_closed_with_1008() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let mut ann = Ws::join(web, "ann").await;
    let mut bob = server.join("bob").await;
    ann.recv_type("joined").await;
    ann.send_message(Message::Binary(Vec::new().into())).await;
    ann.expect_error("bad_frame").await;
    ann.expect_bye("protocol_error", 1008).await;
    let left = bob.recv_type("left").await;
    assert_eq!(left["name"].as_str(), Some("ann"));
    assert_eq!(left["reason"].as_str(), Some("protocol_error"));

    // Before `hello` too.
    let mut cy = Ws::open(web, true).await;
    cy.send_message(Message::Binary(Vec::new().into())).await;
    cy.expect_error("bad_frame").await;
    cy.expect_bye("protocol_error", 1008).await;
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_max_frame_bytes_is_refused_and_closed_with_1008() {
    let server = kit::start(|c| {
        c.max_frame_bytes = 1024;
        c.max_message_bytes = 512;
    })
    .await;
    let web = kit::web(&server);
    // At the limit: an ordinary frame (a map padded to exactly 1024 bytes).
    let mut ann = Ws::join(web, "ann").await;
    let mut exact = kit::encode(&crate::support::map(&[
        ("type", "who".into()),
        ("pad", "".into()),
    ]));
    let pad = 1024 - exact.len();
    exact = kit::encode(&crate::support::map(&[
        ("type", "who".into()),
        ("pad", "x".repeat(pad - 2).into()),
    ]));
    assert_eq!(exact.len(), 1024);
    ann.send_message(Message::Binary(exact.into())).await;
    ann.recv_type("users").await;

    // One byte over.
    ann.send_message(Message::Binary(vec![0x80; 1025].into()))
        .await;
    ann.expect_error("frame_too_large").await;
    ann.expect_bye("protocol_error", 1008).await;
    server.stop().await;
}

#[tokio::test]
async fn a_huge_message_still_gets_its_answer_while_the_client_is_sending() {
    // The server stops reading at the header of a 4 MiB message; the
    // client, still sending, must get the error, the bye and the close.
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let ann = Ws::join(web, "ann").await;
    let (mut sink, mut stream) = ann.socket.split();
    let sending = tokio::spawn(async move {
        let _ = sink.send(Message::Binary(vec![0x80; 4 << 20].into())).await;
        sink
    });
    let mut received = Vec::new();
    let ended = tokio::time::timeout(crate::support::RECV_TIMEOUT, async {
        while let Some(Ok(message)) = stream.next().await {
            received.push(message);
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection ends");
    let _ = sending.await;
    let maps: Vec<_> = received
        .iter()
        .filter_map(|m| match m {
            Message::Binary(payload) => Some(decode(payload)),
            _ => None,
        })
        .filter(|v| v["type"].as_str() != Some("ping"))
        .collect();
    assert_eq!(maps.len(), 2, "{received:?}");
    assert_eq!(maps[0]["type"].as_str(), Some("error"));
    assert_eq!(maps[0]["code"].as_str(), Some("frame_too_large"));
    assert_eq!(maps[1]["type"].as_str(), Some("bye"));
    assert_eq!(maps[1]["reason"].as_str(), Some("protocol_error"));
    let close = received.iter().find_map(|m| match m {
        Message::Close(Some(frame)) => Some(u16::from(frame.code)),
        _ => None,
    });
    assert_eq!(close, Some(1008), "{received:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_bye_ends_with_bye_and_close_1000() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let mut ann = Ws::join(web, "ann").await;
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye", 1000).await;

    // Queued, the same.
    let server_full = kit::start(|c| c.max_active = 1).await;
    let web = kit::web(&server_full);
    let _bob = server_full.join("bob").await;
    let mut cy = Ws::queue(web, "cy", 1).await;
    cy.send_type("bye", &[]).await;
    cy.expect_bye("bye", 1000).await;
    server_full.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn timeouts_say_bye_and_close_with_1000() {
    let server = kit::start(|c| {
        c.handshake_timeout = Duration::from_secs(1);
        c.heartbeat_interval = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let web = kit::web(&server);
    // Silent before `hello`, and silent in the room (the pings go
    // unanswered).
    let mut ann = Ws::open(web, true).await;
    let mut bob = Ws::join(web, "bob").await;
    ann.expect_bye("handshake_timeout", 1000).await;
    bob.expect_bye("idle_timeout", 1000).await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_says_bye_and_closes_with_1000() {
    let server = kit::start(|c| c.max_active = 1).await;
    let web = kit::web(&server);
    let mut ann = Ws::join(web, "ann").await;
    let mut bob = Ws::queue(web, "bob", 1).await;
    let mut cy = server.queue("cy", 2).await;
    let stopping = tokio::spawn(server.stop());
    ann.expect_bye("shutdown", 1000).await;
    bob.expect_bye("shutdown", 1000).await;
    cy.expect_bye("shutdown").await;
    stopping.await.expect("the server stops");
}
