//! Floods: a thousand connections that never finish their handshake, and a
//! member too slow for a busy room, which is cut off while everyone else
//! receives every message in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt};

use super::harness::{
    EVENTUALLY, ONE_AT_A_TIME, Served, UNLIMITED_RATE, expect_consistent, say_frame,
};
use crate::support::{Client, is_type, names, recv_from};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_flood_does_not_slow_the_room() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The test's ends of 1,100 connections, and the server's, which
    // inherits the limit.
    anteroom_bench::raise_fd_limit();
    let s = Served::start(
        &[],
        &[
            UNLIMITED_RATE[0],
            UNLIMITED_RATE[1],
            UNLIMITED_RATE[2],
            ("ANTEROOM_HANDSHAKE_TIMEOUT", "5s"),
        ],
    )
    .await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    // A thousand connections that never speak, and a hundred that stop mid-frame.
    let mut silent = Vec::new();
    for i in 0..1100 {
        let mut c = s.connect().await;
        if i % 11 == 0 {
            c.send_raw(&[0, 0, 1, 0, 0x82, 0xa4]).await;
        }
        silent.push(c);
    }
    s.expect_connections(1100, 2, 0).await;
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let sent = Instant::now();
        ann.say(&format!("still here {i}")).await;
        let v = bob.recv_until(is_type("message")).await;
        assert_eq!(v["text"].as_str().unwrap(), format!("still here {i}"));
        worst = worst.max(sent.elapsed());
        ann.recv_until(is_type("message")).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "a message took {worst:?} under the flood"
    );
    // And new members still get in at once.
    let started = Instant::now();
    let cid = s.join("cid").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every silent connection is then told its handshake timed out, and
    // the room is as it was.
    for c in &mut silent {
        c.expect_bye("handshake_timeout").await;
    }
    expect_consistent(&s, &mut ann, &["ann", "bob", "cid"], &mut [], 0).await;
    drop((silent, ann, bob, cid));
    s.expect_clean().await;
}

/// What one member saw of a flood.
#[derive(Debug, Default)]
struct Followed {
    /// Flood indexes received: the first and how many, all consecutive.
    first: Option<u64>,
    count: u64,
    /// Longest time from a `say` leaving the flooder to its `message` arriving.
    worst: Duration,
    /// Names in the `welcome`, for a member promoted during the flood.
    welcome: Option<Vec<String>>,
    /// `left` and `joined` frames, in order, as "left NAME REASON" / "joined NAME".
    presence: Vec<String>,
}

/// Follows the room until the flood's `end`: message ids and flood indexes
/// must each go up by exactly one, with nothing lost or repeated. `progress`
/// is the next index this member expects (`u64::MAX` until it has one).
async fn follow_flood<R: AsyncRead + Unpin>(
    r: &mut R,
    progress: &AtomicU64,
    seat_refilled: &AtomicBool,
    epoch: Instant,
) -> Followed {
    let mut seen = Followed::default();
    let mut last_id: Option<u64> = None;
    loop {
        let v = recv_from(r).await;
        match v["type"].as_str().unwrap() {
            "message" => {
                let id = v["id"].as_u64().unwrap();
                if let Some(last) = last_id {
                    assert_eq!(id, last + 1, "message ids skipped or repeated");
                }
                last_id = Some(id);
                let text = v["text"].as_str().unwrap();
                if text == "end" {
                    return seen;
                }
                let mut fields = text.split(' ');
                let index: u64 = fields.next().unwrap().parse().unwrap();
                let sent_us: u64 = fields.next().unwrap().parse().unwrap();
                match seen.first {
                    None => seen.first = Some(index),
                    Some(first) => assert_eq!(index, first + seen.count, "out of order"),
                }
                seen.count += 1;
                let latency = epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(sent_us));
                seen.worst = seen.worst.max(latency);
                progress.store(index + 1, Ordering::Release);
            }
            // Joins before the flood are not part of it.
            "left" | "joined" if seen.first.is_none() && seen.welcome.is_none() => {}
            "left" => {
                let name = v["name"].as_str().unwrap();
                seen.presence
                    .push(format!("left {name} {}", v["reason"].as_str().unwrap()));
            }
            "joined" => {
                // The seat the slow member left has been given to `next`:
                // the flood may end, and `next` will see its end. (Ending
                // on `left` could post the last message before the
                // promotion reached the room, so `next` would never see it.)
                let name = v["name"].as_str().unwrap();
                if name == "next" {
                    seat_refilled.store(true, Ordering::Release);
                }
                seen.presence.push(format!("joined {name}"));
            }
            "welcome" => seen.welcome = Some(names(&v["users"])),
            "queued" => assert_eq!(v["position"].as_u64(), Some(1)),
            "ping" => {}
            _ => panic!("unexpected frame during the flood: {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_in_a_busy_room_is_cut_off_and_the_others_miss_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const READERS: usize = 4;
    const LEAD: u64 = 32;
    const MAX_FLOOD: u64 = 50_000;
    let s = Served::start(
        &["--max-active", "6", "--max-waiting", "2"],
        &[
            UNLIMITED_RATE[0],
            UNLIMITED_RATE[1],
            UNLIMITED_RATE[2],
            ("ANTEROOM_OUTBOX_LIMIT", "64"),
            ("ANTEROOM_WRITE_TIMEOUT", "30s"),
        ],
    )
    .await;
    let mut members = Vec::new();
    for i in 0..READERS {
        members.push(s.join(&format!("r{i}")).await);
    }
    // The slow member reads its welcome, then nothing more.
    let mut slow = s.connect_small().await;
    slow.enter("slow").await;
    let flooder = s.join("flooder").await;
    let next_in_line = s.queue("next", 1).await;

    // Every member reads on its own; the flooder stays at most LEAD
    // messages ahead of the slowest of them, so only `slow` falls behind.
    let epoch = Instant::now();
    let progress: Arc<Vec<AtomicU64>> = Arc::new(
        (0..READERS + 2)
            .map(|i| AtomicU64::new(if i == READERS { u64::MAX } else { 0 }))
            .collect(),
    );
    let seat_refilled = Arc::new(AtomicBool::new(false));
    let (mut flood_rx, mut flood_tx) = flooder.stream.into_split();
    let mut readers = Vec::new();
    let streams = members
        .into_iter()
        .map(|c| c.stream)
        .chain([next_in_line.client.stream]);
    for (i, mut stream) in streams.enumerate() {
        let (progress, seat_refilled) = (progress.clone(), seat_refilled.clone());
        readers.push(tokio::spawn(async move {
            let seen = follow_flood(&mut stream, &progress[i], &seat_refilled, epoch).await;
            (Client { stream }, seen)
        }));
    }
    let own = {
        let (progress, seat_refilled) = (progress.clone(), seat_refilled.clone());
        tokio::spawn(async move {
            let seen =
                follow_flood(&mut flood_rx, &progress[READERS + 1], &seat_refilled, epoch).await;
            (flood_rx, seen)
        })
    };
    let padding = "x".repeat(1000);
    let mut sent = 0u64;
    while !seat_refilled.load(Ordering::Acquire) {
        assert!(
            sent < MAX_FLOOD,
            "the slow member was never cut off and replaced"
        );
        let waiting_since = Instant::now();
        loop {
            let slowest = progress.iter().map(|p| p.load(Ordering::Acquire)).min();
            if sent < slowest.unwrap().saturating_add(LEAD) {
                break;
            }
            assert!(
                waiting_since.elapsed() < EVENTUALLY,
                "the room stalled after {sent} messages"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let text = format!("{sent} {} {padding}", epoch.elapsed().as_micros());
        flood_tx.write_all(&say_frame(&text)).await.unwrap();
        sent += 1;
    }
    // One more after the refill was seen, so it follows `joined next` and
    // `next` is sure to get a message of the flood before its end.
    let text = format!("{sent} {} {padding}", epoch.elapsed().as_micros());
    flood_tx.write_all(&say_frame(&text)).await.unwrap();
    sent += 1;
    flood_tx.write_all(&say_frame("end")).await.unwrap();

    let mut clients = Vec::new();
    let mut worst = Duration::ZERO;
    for (i, reader) in readers.into_iter().enumerate() {
        let (client, seen) = reader.await.unwrap();
        worst = worst.max(seen.worst);
        if i < READERS {
            // Present from the start: every message, in order, and the
            // slow member's departure followed by the promotion.
            assert_eq!((seen.first, seen.count), (Some(0), sent), "r{i}");
            assert_eq!(seen.presence, ["left slow slow_consumer", "joined next"]);
        } else {
            // Promoted into the seat the slow member left: every message
            // from its entry on, and a welcome without the slow member.
            let users = seen.welcome.expect("next was promoted");
            assert_eq!(users, ["r0", "r1", "r2", "r3", "flooder", "next"]);
            assert_eq!(seen.first.unwrap() + seen.count, sent, "next");
            assert!(seen.presence.is_empty(), "{:?}", seen.presence);
        }
        clients.push(client);
    }
    let (flood_rx, seen) = own.await.unwrap();
    assert_eq!((seen.first, seen.count), (Some(0), sent), "flooder");
    assert_eq!(seen.presence, ["left slow slow_consumer", "joined next"]);
    worst = worst.max(seen.worst);
    assert!(
        worst < Duration::from_secs(2),
        "a message took {worst:?} to arrive"
    );

    // The slow member's stream ends: whatever the kernel held, maybe its
    // best-effort bye, then the close.
    slow.expect_end().await;
    assert_eq!(
        s.value(
            "anteroom_subscribers_dropped_total{component=\"room_delivery\",reason=\"slow_consumer\"}"
        )
        .await,
        1.0
    );
    expect_consistent(
        &s,
        &mut clients[0],
        &["r0", "r1", "r2", "r3", "flooder", "next"],
        &mut [],
        0,
    )
    .await;
    drop((clients, slow, flood_rx, flood_tx));
    s.expect_clean().await;
}
