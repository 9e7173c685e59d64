//! WebSocket members in the same room and queue as TCP members.

use crate::kit::{self, SUBPROTOCOL, Ws};
use rmpv::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Client, names};

fn text(message: &Value) -> String {
    message["text"].as_str().expect("a text").to_string()
}

/// Reads `queued` updates (they may be conflated) until `position`.
async fn wait_position(client: &mut Client, position: u64) {
    loop {
        let q = client.recv_type("queued").await;
        let now = q["position"].as_u64().unwrap();
        assert!(now >= position, "moved past {position}: {q}");
        if now == position {
            return;
        }
    }
}

#[tokio::test]
async fn a_websocket_member_chats_with_a_tcp_member_in_one_order() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);

    let mut ann = Ws::open(web, true).await;
    assert_eq!(
        ann.protocol.as_deref(),
        Some(SUBPROTOCOL),
        "an offered subprotocol is selected"
    );
    ann.hello("ann").await;
    let welcome = ann.recv_type("welcome").await;
    assert_eq!(names(&welcome["users"]), ["ann"]);

    let mut bob = server.join("bob").await;
    let joined = ann.recv_type("joined").await;
    assert_eq!(joined["name"].as_str(), Some("bob"));

    // Alternating senders; both see every message, in one id order.
    for i in 0..5 {
        ann.say(&format!("ann {i}")).await;
        bob.say(&format!("bob {i}")).await;
    }
    let mut seen_by_ann = Vec::new();
    let mut seen_by_bob = Vec::new();
    for _ in 0..10 {
        let m = ann.next_message().await;
        seen_by_ann.push((m["id"].as_u64().unwrap(), text(&m)));
        let m = bob.next_message().await;
        seen_by_bob.push((m["id"].as_u64().unwrap(), text(&m)));
    }
    assert_eq!(seen_by_ann, seen_by_bob, "one order for every member");
    assert!(
        seen_by_ann.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase"
    );
    for who in ["ann", "bob"] {
        let texts: Vec<_> = seen_by_ann
            .iter()
            .map(|(_, t)| t.clone())
            .filter(|t| t.starts_with(who))
            .collect();
        let sent: Vec<_> = (0..5).map(|i| format!("{who} {i}")).collect();
        assert_eq!(texts, sent, "{who}'s messages in the order sent");
    }

    ann.send_type("who", &[]).await;
    assert_eq!(
        names(&ann.recv_type("users").await["names"]),
        ["ann", "bob"]
    );

    bob.send_type("bye", &[]).await;
    bob.expect_bye("bye").await;
    let left = ann.recv_type("left").await;
    assert_eq!(left["name"].as_str(), Some("bob"));
    assert_eq!(left["reason"].as_str(), Some("bye"));

    // The WebSocket member leaving is seen by a TCP member too.
    let mut cy = server.join("cy").await;
    ann.recv_type("joined").await;
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye", 1000).await;
    let left = cy.recv_type("left").await;
    assert_eq!(left["name"].as_str(), Some("ann"));
    assert_eq!(left["reason"].as_str(), Some("bye"));
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_offers_no_subprotocol_is_served_too() {
    let server = kit::start(|_| {}).await;
    let web = kit::web(&server);
    let mut ann = Ws::open(web, false).await;
    assert_eq!(ann.protocol, None, "nothing selected when nothing offered");
    ann.enter("ann").await;
    let mut bob = server.join("bob").await;
    bob.say("hello ann").await;
    let m = ann.next_message().await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("bob"), Some("hello ann"))
    );
    bob.next_message().await;
    ann.say("hello bob").await;
    assert_eq!(bob.next_message().await["text"].as_str(), Some("hello bob"));
    server.stop().await;
}

#[tokio::test]
async fn websocket_clients_wait_in_the_queue_and_are_promoted() {
    let server = kit::start(|c| c.max_active = 1).await;
    let web = kit::web(&server);
    let mut ann = server.join("ann").await;
    let mut bob = Ws::open(web, true).await;
    bob.hello("bob").await;
    let queued = bob.recv_type("queued").await;
    assert_eq!(queued["position"].as_u64(), Some(1));
    assert_eq!(queued["waiting"].as_u64(), Some(1));
    assert_eq!(
        queued["text"].as_str(),
        Some("We are dealing with a large amount of users and you are at 1 in queue")
    );
    let mut cy = Ws::queue(web, "cy", 2).await;
    let mut dee = Client::queue(server.addr, "dee", 3).await;

    // Queued clients may ping and leave, not talk.
    bob.say("let me in").await;
    bob.expect_error("not_admitted").await;

    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    let welcome = bob.recv_type("welcome").await;
    assert_eq!(
        welcome["text"].as_str(),
        Some("A spot has opened up! You are now connected to the chat.")
    );
    assert_eq!(names(&welcome["users"]), ["bob"]);
    let queued = cy.recv_type("queued").await;
    assert_eq!(
        queued["text"].as_str(),
        Some("We are dealing with a large amount of users and you are at 1 in queue")
    );
    wait_position(&mut dee, 2).await;

    bob.say("made it").await;
    let m = bob.next_message().await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("bob"), Some("made it"))
    );

    // A queued WebSocket client that goes away leaves the queue at once.
    drop(cy);
    wait_position(&mut dee, 1).await;
    bob.send_type("bye", &[]).await;
    bob.expect_bye("bye", 1000).await;
    dee.recv_type("welcome").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_member_that_reads_late_and_slowly_gets_every_message_in_order() {
    // Backpressure: the WebSocket's socket fills, its writes wait and
    // resume, and nothing is lost, repeated or reordered.
    let server = kit::start(|c| {
        c.rate_limit = 1e6;
        c.rate_burst = 1_000_000;
        c.request_rate = 0.0;
    })
    .await;
    let web = kit::web(&server);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(web).await.unwrap();
    let request = format!("ws://{web}/ws").into_client_request().unwrap();
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let mut ann = Ws {
        socket,
        protocol: None,
    };
    ann.enter("ann").await;
    let mut bob = server.join("bob").await;
    ann.recv_type("joined").await;

    const COUNT: usize = 300;
    let texts: Vec<String> = (0..COUNT)
        .map(|i| format!("{i:04} {}", "x".repeat(2000 + i * 7 % 2000)))
        .collect();
    for text in &texts {
        bob.say(text).await;
    }
    // Not reading for a while: the server's writes for ann wait.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (i, want) in texts.iter().enumerate() {
        let m = ann.next_message().await;
        assert_eq!(m["text"].as_str(), Some(want.as_str()), "message {i}");
        if i % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // Still a member, and the room still works both ways.
    ann.say("caught up").await;
    assert_eq!(ann.next_message().await["text"].as_str(), Some("caught up"));
    server.stop().await;
}
