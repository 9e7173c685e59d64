//! `lagging`: a member that falls behind is warned before it is cut off.

use std::time::Duration;

use crate::kit::{hello_with, unlimited};
use crate::support::{Client, TestServer, metric};

#[tokio::test]
async fn a_member_falling_behind_is_warned_ahead_of_its_backlog() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| {
        unlimited(c);
        c.outbox_limit = 256;
        c.max_message_bytes = 16_384;
        // The socket takes nothing until the test reads: it must not be
        // cut off for that.
        c.write_timeout = Duration::from_secs(120);
    })
    .await;
    // A small receive buffer: the server's writes stall after a few
    // kilobytes, and the rest waits in the outbox.
    let mut slow = Client::connect_small(s.addr).await;
    hello_with(&mut slow, "slow", &["lagging"]).await;
    slow.recv_type("welcome").await;
    let mut talker = Client::join(s.addr, "talker").await;
    // Talk until more than half of the limit waits for `slow`: the kernel's
    // buffers take a size of their own first, so the room delivery lag (the
    // deepest outbox) says when.
    let text = "x".repeat(16_000);
    let mut sent = 0;
    loop {
        for _ in 0..16 {
            talker.say(&text).await;
            talker.next_message().await;
            sent += 1;
        }
        // The gauge is set after each delivery pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let scrape = s.scrape().await;
        let lag = metric(
            &scrape,
            "anteroom_subscriber_lag{component=\"room_delivery\"}",
        )
        .unwrap();
        if lag > 136.0 {
            break;
        }
        assert!(sent < 1000, "the outbox never filled");
    }
    // Now read: the warning comes before the messages still waiting.
    let mut before = 0;
    let warning = loop {
        let v = slow.recv().await;
        match v["type"].as_str().unwrap() {
            "lagging" => break v,
            "message" => before += 1,
            "ping" | "joined" => {}
            other => panic!("unexpected {other}: {v}"),
        }
    };
    assert_eq!(warning["limit"].as_u64(), Some(256));
    assert!(warning["queued"].as_u64().unwrap() > 128, "{warning}");
    let mut after = 0;
    while after + before < sent {
        let v = slow.recv().await;
        match v["type"].as_str().unwrap() {
            "message" => after += 1,
            "ping" => {}
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(after > 128, "{before} before the warning, {after} after");
    assert_eq!(before + after, sent);
    // One warning per episode.
    slow.expect_silence(Duration::from_millis(300)).await;
    s.stop().await;
}
