//! Frames cut short or impossibly long: half a frame then silence, 4 GiB
//! length prefixes from every state, and resets in the middle of a frame.

use std::time::{Duration, Instant};

use super::harness::{ONE_AT_A_TIME, Served, expect_consistent, left_reason, say_frame};
use crate::support::{frame_of, is_type, map};

#[tokio::test]
async fn half_a_frame_then_silence_still_times_out() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&[], &[("ANTEROOM_HANDSHAKE_TIMEOUT", "300ms")]).await;
    let mut c = s.connect().await;
    c.send_raw(&[0, 0, 0, 40, 0x82]).await; // promises 40 bytes, sends 1
    c.expect_bye("handshake_timeout").await;
    drop(c);
    s.expect_clean().await;
}

#[tokio::test]
async fn four_gib_length_prefixes_are_refused_without_allocating() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "2", "--max-waiting", "4"], &[]).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    let mut q0 = s.queue("q0", 1).await;
    let q1 = s.queue("q1", 2).await;
    let mut strangers = Vec::new();
    for _ in 0..16 {
        strangers.push(s.connect().await);
    }
    s.expect_connections(16, 2, 2).await;
    let usage = |pid| anteroom_bench::server::read_usage(pid).unwrap();
    let vm_size = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    let (rss_before, vm_before) = (usage(s.pid).rss_bytes, vm_size(s.pid));

    // 0xFFFFFFFF from connections in the handshake, in the queue and in the
    // room: each is answered at once, and none reserves its 4 GiB.
    let started = Instant::now();
    for c in &mut strangers {
        c.send_raw(&u32::MAX.to_be_bytes()).await;
    }
    q0.client.send_raw(&u32::MAX.to_be_bytes()).await;
    for c in strangers.iter_mut().chain([&mut q0.client]) {
        c.expect_error("frame_too_large").await;
        c.expect_bye("protocol_error").await;
    }
    bob.send_raw(&u32::MAX.to_be_bytes()).await;
    bob.expect_error("frame_too_large").await;
    bob.expect_bye("protocol_error").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let grown_rss = usage(s.pid).rss_bytes.saturating_sub(rss_before);
    let grown_vm = vm_size(s.pid).saturating_sub(vm_before);
    assert!(
        grown_rss < 32 << 20,
        "resident memory grew by {grown_rss} bytes"
    );
    assert!(
        grown_vm < 1 << 30,
        "virtual memory grew by {grown_vm} bytes"
    );

    // Nobody else is affected: bob's seat goes to the queue, in order.
    assert_eq!(left_reason(&mut ann, "bob").await, "protocol_error");
    let (mut q1, users) = q1.expect_welcome().await;
    assert_eq!(users, ["ann", "q1"]);
    expect_consistent(&s, &mut ann, &["ann", "q1"], &mut [], 0).await;
    ann.say("still here").await;
    let m = q1.recv_until(is_type("message")).await;
    assert_eq!(m["text"].as_str(), Some("still here"));
    assert_eq!(
        s.value("anteroom_rejected_total{reason=\"protocol_error\"}")
            .await,
        18.0
    );
    drop((ann, q1, bob, q0, strangers));
    s.expect_clean().await;
}

#[tokio::test]
async fn resets_in_the_middle_of_a_frame_leave_no_trace() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "2", "--max-waiting", "4"], &[]).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    let q0 = s.queue("q0", 1).await;
    let mut q1 = s.queue("q1", 2).await;
    let q2 = s.queue("q2", 3).await;
    let mut stranger = s.connect().await;
    s.expect_connections(1, 2, 3).await;

    // Each sends part of a frame, lets the server read it, and resets.
    let hello = frame_of(&map(&[("type", "hello".into()), ("name", "eve".into())]));
    let say = say_frame("this message must never be delivered");
    let ping = frame_of(&map(&[("type", "ping".into()), ("id", 7.into())]));
    stranger.send_raw(&hello[..hello.len() / 2]).await;
    bob.send_raw(&say[..say.len() / 2]).await;
    q1.client.send_raw(&ping[..3]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stranger.reset();
    bob.reset();
    q1.client.reset();

    // bob leaves as disconnected, having said nothing; q0 takes his seat and
    // q2 moves up past the reset q1.
    let v = ann
        .recv_until(|v| matches!(v["type"].as_str(), Some("left") | Some("message")))
        .await;
    assert_eq!(v["type"].as_str(), Some("left"), "{v}");
    assert_eq!(v["name"].as_str(), Some("bob"));
    assert_eq!(v["reason"].as_str(), Some("disconnected"));
    let (q0, users) = q0.expect_welcome().await;
    assert_eq!(users, ["ann", "q0"]);
    expect_consistent(&s, &mut ann, &["ann", "q0"], &mut [q2], 0).await;
    drop((ann, q0));
    s.expect_clean().await;
}
