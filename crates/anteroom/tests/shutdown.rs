//! Shutdown reaches every connection with `bye{reason:"shutdown"}`: those
//! still in the kernel's accept backlog, members with a backlog of frames
//! (the `bye` goes ahead of it), and sessions waiting on a full bus topic.

mod support;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anteroom_broker::bus::{Bus, PresenceEvent, RoomEvent};
use anteroom_broker::config::Config;
use anteroom_broker::gateway::Gateway;
use anteroom_broker::gateway::session::run_session;
use anteroom_broker::gateway::transport::ByteStream;
use anteroom_broker::room::roster::Roster;
use anteroom_protocol::ServerMessage;
use support::{Client, TestServer, frame_of, map};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn connections_still_in_the_accept_backlog_get_bye() {
    let s = TestServer::start(|_| {}).await;
    // Blocking connects: the kernel accepts them into the backlog while
    // this single-threaded runtime gives the server no chance to run.
    let waiting: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
        .collect();
    s.shutdown.cancel();
    for stream in waiting {
        stream.set_nonblocking(true).unwrap();
        let mut c = Client {
            stream: TcpStream::from_std(stream).unwrap(),
        };
        c.expect_bye("shutdown").await;
    }
}

#[tokio::test]
async fn a_member_with_a_backlog_gets_its_bye_ahead_of_it() {
    const FLOOD: usize = 20_000;
    let s = TestServer::start(|c| {
        // Nothing but the shutdown ends the slow member: no cut-off.
        c.outbox_limit = 1_000_000;
        c.max_outbox_bytes = 1 << 30;
        c.write_timeout = Duration::from_secs(60);
        c.rate_limit = 1e9;
        c.rate_burst = 1_000_000_000;
        c.request_rate = 0.0;
    })
    .await;
    let mut slow = Client::connect_small(s.addr).await;
    slow.enter("slow").await;
    let flooder = s.join("flooder").await;
    let (mut from_room, mut to_room) = flooder.stream.into_split();
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < FLOOD {
            let v = support::recv_from(&mut from_room).await;
            seen += usize::from(v["type"].as_str() == Some("message"));
        }
    });
    // 20 MB: far more than the kernel buffers of a connection hold.
    let text = "x".repeat(1000);
    let mut burst = Vec::new();
    for _ in 0..FLOOD {
        burst.extend(frame_of(&map(&[
            ("type", "say".into()),
            ("text", text.as_str().into()),
        ])));
    }
    tokio::io::AsyncWriteExt::write_all(&mut to_room, &burst)
        .await
        .unwrap();
    // Once the flooder has every message, so has the slow member's outbox.
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the flood was not delivered")
        .unwrap();

    s.shutdown.cancel();
    let mut before_bye = 0;
    loop {
        let v = slow.recv().await;
        match v["type"].as_str() {
            Some("bye") => {
                assert_eq!(v["reason"].as_str(), Some("shutdown"), "{v}");
                break;
            }
            _ => before_bye += 1,
        }
    }
    slow.expect_closed().await;
    // What the kernel already held and the write in progress come first;
    // the rest of the backlog never does.
    assert!(
        before_bye < FLOOD / 2,
        "{before_bye} frames of a backlog of {FLOOD} came before the bye"
    );
}

#[tokio::test]
async fn a_session_waiting_on_a_full_topic_still_sees_the_shutdown() {
    // A broker whose bus nobody drains: admission and delivery are played
    // by the test, so the room topic stays full.
    let (bus, mut subscriptions) = Bus::new();
    let shutdown = CancellationToken::new();
    let gateway = Arc::new(Gateway::new(
        Config::default(),
        bus.clone(),
        Arc::new(Roster::new()),
        anteroom_broker::conn::shards::Shards::for_current_runtime(),
        anteroom_broker::chat_log::Chat::memory(&Config::default()),
        Arc::new(anteroom_broker::room::held::HeldPlaces::new()),
        shutdown.clone(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut ann = Client::connect(listener.local_addr().unwrap()).await;
    let (stream, _) = listener.accept().await.unwrap();
    let (reader, writer) = stream.into_split();
    tokio::spawn(run_session(gateway, ByteStream::new(reader, writer)));

    ann.hello("ann").await;
    let Ok(PresenceEvent::ClientArrived { peer, name }) = subscriptions.admission.recv().await
    else {
        panic!("no arrival");
    };
    peer.admit(
        ServerMessage::Welcome {
            name: Cow::Borrowed(&name),
            users: vec![Cow::Borrowed(&name)],
            capacity: 1,
            text: Cow::Borrowed("welcome"),
            features: None,
            max_upload_bytes: None,
            upload_token: None,
            resume: None,
            resume_grace_s: None,
            resumed: None,
        }
        .to_frame(),
        None,
    );
    ann.recv_type("welcome").await;

    // All but one place of the room topic taken: the first `say` fills it,
    // the second waits.
    let capacity = anteroom_broker::bus::TOPIC_CAPACITY;
    for _ in 1..capacity {
        let filler = RoomEvent::MessagePosted {
            from: "filler".into(),
            text: "x".into(),
            ts: 0,
            read_at: std::time::Instant::now(),
            attachment: None,
            id: None,
            logged: true,
        };
        bus.room.publish(filler).await.unwrap();
    }
    ann.say("fills the topic").await;
    ann.say("waits for room").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscriptions.room_delivery.len() < capacity {
        assert!(Instant::now() < deadline, "the first say was not published");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the session reach the second publication and wait there.
    tokio::time::sleep(Duration::from_millis(200)).await;

    shutdown.cancel();
    ann.expect_bye("shutdown").await;
    drop(subscriptions);
}
