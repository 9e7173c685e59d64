//! Timeouts, heartbeats and slow consumers.

mod support;

use std::time::{Duration, Instant};

use anteroom_broker::config::SlowConsumerPolicy;
use support::{Client, TestServer};

#[tokio::test]
async fn a_silent_connection_gets_handshake_timeout_on_time() {
    let s = TestServer::start(|c| c.handshake_timeout = Duration::from_millis(400)).await;
    let started = Instant::now();
    let mut c = s.connect().await;
    c.expect_bye("handshake_timeout").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "fired early: {took:?}");
    assert!(took < Duration::from_millis(1400), "fired late: {took:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_failed_hello_does_not_extend_the_handshake_deadline() {
    let s = TestServer::start(|c| c.handshake_timeout = Duration::from_millis(400)).await;
    let mut c = s.connect().await;
    c.hello("").await;
    c.expect_error("name_invalid").await;
    c.expect_bye("handshake_timeout").await;
    s.stop().await;
}

#[tokio::test]
async fn silent_members_are_pinged_then_dropped_for_idleness() {
    let s = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(1000);
    })
    .await;
    let mut ann = s.join("ann").await;
    // bob's silence starts when the server reads his hello, after this.
    let silent_since = Instant::now();
    let mut bob = s.join("bob").await;
    ann.recv_type("joined").await;
    // bob stays silent: pinged with an id, then cut off.
    let ping = bob.recv().await;
    assert_eq!(ping["type"].as_str(), Some("ping"));
    assert!(ping["id"].is_i64());
    assert!(silent_since.elapsed() >= Duration::from_millis(300));
    // ann answers pings and stays.
    let keep_alive = tokio::spawn(async move {
        for _ in 0..6 {
            let v = ann.recv().await;
            if v["type"].as_str() == Some("ping") {
                ann.send_type("pong", &[("id", v["id"].clone())]).await;
            }
            if v["type"].as_str() == Some("left") {
                assert_eq!(v["name"].as_str(), Some("bob"));
                assert_eq!(v["reason"].as_str(), Some("idle_timeout"));
                return ann;
            }
        }
        panic!("no left for bob");
    });
    bob.expect_bye("idle_timeout").await;
    let took = silent_since.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "idle fired early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "idle fired late: {took:?}"
    );
    let mut ann = keep_alive.await.unwrap();
    ann.say("still here").await;
    assert_eq!(
        ann.recv_type("message").await["text"].as_str(),
        Some("still here")
    );
    s.stop().await;
}

#[tokio::test]
async fn any_frame_counts_as_activity() {
    let s = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(300);
        c.idle_timeout = Duration::from_millis(600);
    })
    .await;
    let mut c = s.join("ann").await;
    // Keep talking (even nonsense) more often than the heartbeat: no ping, no bye.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.send_type("dance", &[]).await;
        c.expect_error("unknown_type").await;
    }
    s.stop().await;
}

#[tokio::test]
async fn a_queued_client_is_also_subject_to_idle_timeout() {
    let s = TestServer::start(|c| {
        c.max_active = 1;
        c.heartbeat_interval = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut ann = s.join("ann").await;
    let mut bob = s.queue("bob", 1).await;
    let mut cid = s.queue("cid", 2).await;
    let keep_ann = tokio::spawn(async move {
        loop {
            let v = ann.recv().await;
            if v["type"].as_str() == Some("ping") {
                ann.send_type("pong", &[("id", v["id"].clone())]).await;
            }
        }
    });
    let keep_cid = tokio::spawn(async move {
        loop {
            let v = cid.recv().await;
            match v["type"].as_str().unwrap() {
                "ping" => cid.send_type("pong", &[("id", v["id"].clone())]).await,
                "queued" if v["position"].as_u64() == Some(1) => return,
                _ => {}
            }
        }
    });
    bob.expect_bye("idle_timeout").await;
    tokio::time::timeout(Duration::from_secs(5), keep_cid)
        .await
        .unwrap()
        .unwrap();
    keep_ann.abort();
    s.stop().await;
}

/// A client whose receive window is tiny, so a stalled reader backs up fast.
async fn stalled_member(s: &TestServer, name: &str) -> Client {
    let mut c = Client::connect_small(s.addr).await;
    c.hello(name).await;
    c.recv_type("welcome").await;
    c
}

/// Floods the room from a new member while `reader` must keep receiving
/// every message in order. The talker drains its own copies as it goes.
/// Returns the talker's socket, write half, to say more later.
async fn flood_and_check(
    s: &TestServer,
    reader: &mut Client,
    count: usize,
) -> (tokio::net::tcp::OwnedWriteHalf, Vec<rmpv::Value>) {
    let talker = s.join("talker").await;
    reader.recv_type("joined").await;
    let (mut talker_rx, mut talker_tx) = talker.stream.into_split();
    tokio::spawn(async move {
        let mut sink = vec![0u8; 1 << 16];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut talker_rx, &mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let text = "x".repeat(2000);
    let frame = support::frame_of(&support::map(&[
        ("type", "say".into()),
        ("text", text.into()),
    ]));
    // The reader is a healthy member: the talker stays at most 100 messages
    // ahead of it, so only the stalled member falls behind.
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let mut others = Vec::new();
    let reader_task = async {
        let mut last_id = 0;
        while seen.load(std::sync::atomic::Ordering::Relaxed) < count {
            let v = reader.recv().await;
            if v["type"].as_str() == Some("message") {
                let id = v["id"].as_u64().unwrap();
                assert!(id > last_id);
                last_id = id;
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                others.push(v);
            }
        }
    };
    let talker_task = async {
        for sent in 0..count {
            while sent > seen.load(std::sync::atomic::Ordering::Relaxed) + 100 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::io::AsyncWriteExt::write_all(&mut talker_tx, &frame)
                .await
                .unwrap();
        }
    };
    tokio::join!(reader_task, talker_task);
    (talker_tx, others)
}

/// Waits for `left` of `name`, looking first at frames already received.
async fn left_of(name: &str, seen: Vec<rmpv::Value>, reader: &mut Client) -> rmpv::Value {
    let is_it =
        |v: &rmpv::Value| v["type"].as_str() == Some("left") && v["name"].as_str() == Some(name);
    if let Some(v) = seen.into_iter().find(is_it) {
        return v;
    }
    reader.recv_until(is_it).await
}

fn flood_config(c: &mut anteroom_broker::config::Config) {
    c.outbox_limit = 32;
    c.rate_limit = 1e9;
    c.rate_burst = 1_000_000_000;
    c.request_rate = 0.0;
    c.write_timeout = Duration::from_secs(30);
}

#[tokio::test]
async fn a_member_that_stops_reading_is_cut_off_while_others_keep_receiving() {
    let s = TestServer::start(flood_config).await;
    let mut slow = stalled_member(&s, "slow").await;
    let mut reader = s.join("reader").await;
    // Enough to fill the kernel buffers and then the 32-frame outbox.
    let (_talker, seen) = flood_and_check(&s, &mut reader, 6000).await;
    let left = left_of("slow", seen, &mut reader).await;
    assert_eq!(left["name"].as_str(), Some("slow"));
    assert_eq!(left["reason"].as_str(), Some("slow_consumer"));
    // The slow member's stream ends with the best-effort bye (or a cut).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = None;
        while let Some(v) = slow.try_recv().await {
            last = Some(v["type"].as_str().unwrap().to_string());
        }
        last
    })
    .await
    .expect("slow member not disconnected");
    assert!(matches!(
        ended.as_deref(),
        Some("bye") | Some("message") | Some("joined")
    ));
    let scrape = s.scrape().await;
    let dropped = support::metric(
        &scrape,
        "anteroom_subscribers_dropped_total{component=\"room_delivery\",reason=\"slow_consumer\"}",
    );
    assert!(dropped.unwrap_or(0.0) >= 1.0, "{scrape}");
    s.stop().await;
}

#[tokio::test]
async fn a_socket_that_accepts_nothing_for_write_timeout_is_cut_off() {
    let s = TestServer::start(|c| {
        flood_config(c);
        c.outbox_limit = 1_000_000;
        c.write_timeout = Duration::from_millis(500);
    })
    .await;
    let _slow = stalled_member(&s, "slow").await;
    let mut reader = s.join("reader").await;
    let (_talker, seen) = flood_and_check(&s, &mut reader, 4000).await;
    let left = left_of("slow", seen, &mut reader).await;
    assert_eq!(left["reason"].as_str(), Some("slow_consumer"));
    s.stop().await;
}

#[tokio::test]
async fn under_skip_a_slow_member_gets_gap_and_carries_on() {
    let s = TestServer::start(|c| {
        flood_config(c);
        c.slow_consumer = SlowConsumerPolicy::Skip;
    })
    .await;
    let mut slow = stalled_member(&s, "slow").await;
    let mut reader = s.join("reader").await;
    let (mut talker, _) = flood_and_check(&s, &mut reader, 6000).await;
    // The stalled member delays neither new connections nor other members.
    let newcomer = tokio::time::timeout(Duration::from_secs(2), s.join("newcomer")).await;
    assert!(
        newcomer.is_ok(),
        "joining took too long while a member is stalled"
    );
    // Now read everything that was kept: somewhere there is a gap.
    let mut missed = 0;
    let mut messages = 0;
    let mut last_id = 0;
    while let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(500), slow.try_recv()).await
    {
        match v["type"].as_str().unwrap() {
            "gap" => missed += v["missed"].as_u64().unwrap(),
            "message" => {
                let id = v["id"].as_u64().unwrap();
                assert!(id > last_id, "ids keep increasing across a gap");
                last_id = id;
                messages += 1;
            }
            _ => {}
        }
    }
    assert!(missed > 0, "no gap reported");
    // The joined frame for the talker may be among the dropped ones.
    let accounted = messages + missed as usize;
    assert!(
        (6000..=6001).contains(&accounted),
        "{messages} delivered + {missed} missed"
    );
    // It carries on with newer events.
    let after = support::frame_of(&support::map(&[
        ("type", "say".into()),
        ("text", "after the flood".into()),
    ]));
    tokio::io::AsyncWriteExt::write_all(&mut talker, &after)
        .await
        .unwrap();
    assert_eq!(
        slow.recv_type("message").await["text"].as_str(),
        Some("after the flood")
    );
    // Still a member.
    slow.say("I am back").await;
    assert_eq!(
        slow.recv_type("message").await["text"].as_str(),
        Some("I am back")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_member_behind_by_more_than_max_outbox_bytes_is_cut_off() {
    let s = TestServer::start(|c| {
        flood_config(c);
        // Far more frames than will ever queue; the byte cap must act first.
        c.outbox_limit = 1_000_000;
        c.max_outbox_bytes = 256 * 1024;
    })
    .await;
    let _slow = stalled_member(&s, "slow").await;
    let mut reader = s.join("reader").await;
    let (_talker, seen) = flood_and_check(&s, &mut reader, 6000).await;
    let left = left_of("slow", seen, &mut reader).await;
    assert_eq!(left["reason"].as_str(), Some("slow_consumer"));
    s.stop().await;
}
