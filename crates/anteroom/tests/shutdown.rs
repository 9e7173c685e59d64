//! Shutdown reaches every connection with `bye{reason:"shutdown"}`: those
//! still in the kernel's accept backlog, and members with a backlog of
//! frames (the `bye` goes ahead of it).

mod support;

use std::time::Duration;

use support::{Client, TestServer, frame_of, map};
use tokio::net::TcpStream;

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
