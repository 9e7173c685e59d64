//! The client library and `anteroom chat` over `ws://`.

use std::borrow::Cow;
use std::time::Duration;

use anteroom_client::protocol::{ByeReason, ClientMessage, LeftReason};
use anteroom_client::{Admission, ClientError, Connection, Event};

use crate::kit;
use crate::support::is_type;
use crate::support::process::Chat;

#[tokio::test]
async fn the_client_library_dials_ws_joins_and_chats() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let mut bob = server.join("bob").await;

    let mut ann = Connection::builder()
        .connect_timeout(Duration::from_secs(10))
        .dial(&format!("ws://{web}/ws"))
        .await
        .expect("dial ws://");
    match ann.join("ann").await.expect("join") {
        Admission::Welcome { users, .. } => assert_eq!(users, ["bob", "ann"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("ann"));

    ann.send(&ClientMessage::Say {
        text: Cow::Borrowed("hello from a WebSocket"),
        attachment: None,
    })
    .await
    .unwrap();
    let m = bob.next_message().await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("ann"), Some("hello from a WebSocket"))
    );
    // The sender's own copy, then bob's.
    bob.say("hello back").await;
    let mut texts = Vec::new();
    while texts.len() < 2 {
        if let Event::Message { text, .. } = ann.next_event().await.unwrap() {
            texts.push(text.into_owned());
        }
    }
    assert_eq!(texts, ["hello from a WebSocket", "hello back"]);

    // Leaving: the server's bye, then the end of the stream.
    ann.send(&ClientMessage::Bye).await.unwrap();
    match ann.next_event().await.unwrap() {
        Event::Bye { reason, .. } => assert_eq!(reason, ByeReason::Bye),
        other => panic!("{other:?}"),
    }
    assert!(matches!(ann.next_event().await, Err(ClientError::Closed)));
    let left = bob.recv_until(is_type("left")).await;
    assert_eq!(left["reason"].as_str(), Some(LeftReason::Bye.as_str()));

    // Dropping a connection is a disconnect.
    let mut cy = Connection::builder()
        .dial(&format!("ws://{web}"))
        .await
        .expect("dial ws:// with the default path");
    cy.join("cy").await.unwrap();
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("cy"));
    drop(cy);
    let left = bob.recv_type("left").await;
    assert_eq!(left["name"].as_str(), Some("cy"));
    server.stop().await;
}

#[tokio::test]
async fn a_refused_upgrade_is_a_connect_error() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    match Connection::builder()
        .dial(&format!("ws://{web}/not-here"))
        .await
    {
        Ok(_) => panic!("upgraded at a path that serves no WebSocket"),
        Err(error @ ClientError::Connect { .. }) => {
            assert!(error.to_string().contains("404"), "{error}")
        }
        Err(other) => panic!("{other}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anteroom_chat_talks_over_ws() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let mut ann = Chat::start_url(&format!("ws://{web}/ws"), "ann");
    ann.expect("* in the room: ann");
    let mut bob = server.join("bob").await;
    ann.expect("* bob joined");
    ann.type_line("hello over a WebSocket");
    let m = bob.next_message().await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("ann"), Some("hello over a WebSocket"))
    );
    bob.say("hi ann").await;
    ann.expect("<bob> hi ann");
    bob.next_message().await;
    ann.type_line("/users");
    ann.expect("* in the room: ann, bob");
    ann.type_line("/quit");
    ann.expect("* bye (bye): Goodbye!");
    ann.finish();
    let left = bob.recv_type("left").await;
    assert_eq!(
        (left["name"].as_str(), left["reason"].as_str()),
        (Some("ann"), Some("bye"))
    );
    server.stop().await;
}
