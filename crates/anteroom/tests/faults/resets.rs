//! Connections reset (RST) under the server: members and queued clients in
//! turn, and a member reset while the server is blocked writing to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::harness::{
    EVENTUALLY, ONE_AT_A_TIME, Served, UNLIMITED_RATE, expect_consistent, left_reason, say_frame,
};
use crate::support::{Client, recv_from};

#[tokio::test]
async fn resets_in_the_room_and_in_the_queue_leave_everything_consistent() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "2"], &[]).await;
    let mut ann = s.join("ann").await;
    let bob = s.join("bob").await;
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(s.queue(&format!("q{i}"), i + 1).await);
    }
    // Reset a queued client mid-queue and a member mid-room.
    queued.remove(1).client.reset();
    bob.reset();
    assert_eq!(left_reason(&mut ann, "bob").await, "disconnected");
    // q0 is promoted; q2 and q3 move up to 1 and 2.
    let (q0, users) = queued.remove(0).expect_welcome().await;
    assert_eq!(users, ["ann", "q0"]);
    expect_consistent(&s, &mut ann, &["ann", "q0"], &mut queued, 0).await;
    // Everyone resets: the server forgets them all.
    ann.reset();
    q0.reset();
    for w in queued {
        w.client.reset();
    }
    s.expect_clean().await;
}

/// The kernel's queues for one loopback connection, from /proc/net/tcp:
/// (bytes sent but not yet acknowledged, bytes received but not yet read)
/// on the side whose local address is `local`.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => unreachable!("the tests use IPv4"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reset_while_the_server_writes_to_it_is_replaced_from_the_queue() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const TEXT: usize = 4000;
    // More than the kernel may buffer on the server's side of one connection
    // (net.ipv4.tcp_wmem's maximum), with 2 MiB to spare.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let flood = (wmem_max + (2 << 20)) / TEXT;
    let s = Served::start(
        &["--max-active", "3", "--max-waiting", "4"],
        &[
            UNLIMITED_RATE[0],
            UNLIMITED_RATE[1],
            UNLIMITED_RATE[2],
            // Neither limit nor the write timeout may cut the stuck member
            // off first: the reset must be what ends it.
            ("ANTEROOM_OUTBOX_LIMIT", "100000"),
            ("ANTEROOM_MAX_OUTBOX_BYTES", "67108864"),
            ("ANTEROOM_WRITE_TIMEOUT", "60s"),
        ],
    )
    .await;
    let mut ann = s.join("ann").await;
    let mut stuck = s.connect_small().await;
    stuck.enter("stuck").await;
    let talker = s.join("talker").await;
    let q0 = s.queue("q0", 1).await;
    let mut q1 = s.queue("q1", 2).await;

    // A flood ann and the talker read, and the stuck member does not.
    let (mut talker_rx, mut talker_tx) = talker.stream.into_split();
    let count_messages = |mut r: tokio::net::tcp::OwnedReadHalf| async move {
        let mut n = 0;
        while n < flood {
            if recv_from(&mut r).await["type"].as_str() == Some("message") {
                n += 1;
            }
        }
        r
    };
    let (ann_rx, ann_tx) = ann.stream.into_split();
    let ann_reader = tokio::spawn(count_messages(ann_rx));
    let talker_reader = tokio::spawn(count_messages(talker_rx));
    let text = "w".repeat(TEXT);
    for _ in 0..flood {
        talker_tx.write_all(&say_frame(&text)).await.unwrap();
    }
    let ann_rx = ann_reader.await.unwrap();
    talker_rx = talker_reader.await.unwrap();
    ann = Client {
        stream: ann_rx.reunite(ann_tx).unwrap(),
    };

    // The server is in the middle of writing to the stuck member: its end
    // of the connection has bytes the client has not acknowledged, the
    // client's end is full, and most of the flood is still inside the
    // server, waiting for the socket to take it.
    let stuck_addr = stuck.stream.local_addr().unwrap();
    let deadline = Instant::now() + EVENTUALLY;
    let (unacked, unread) = loop {
        let server_side = tcp_queues(s.addr(), stuck_addr).expect("the server's end");
        let client_side = tcp_queues(stuck_addr, s.addr()).expect("the client's end");
        if server_side.0 > 0 && client_side.1 > 0 {
            break (server_side.0, client_side.1);
        }
        assert!(Instant::now() < deadline, "the socket never filled up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let flood_bytes = (flood * TEXT) as u64;
    assert!(
        unacked + unread + (1 << 20) <= flood_bytes,
        "the kernel holds {unacked} + {unread} of {flood_bytes} bytes: the server is not blocked"
    );

    let reset_at = Instant::now();
    stuck.reset();
    assert_eq!(left_reason(&mut ann, "stuck").await, "disconnected");
    let noticed = reset_at.elapsed();
    assert!(
        noticed < Duration::from_secs(5),
        "the reset was noticed after {noticed:?}"
    );
    let (q0, users) = q0.expect_welcome().await;
    assert_eq!(users, ["ann", "talker", "q0"]);
    expect_consistent(
        &s,
        &mut ann,
        &["ann", "talker", "q0"],
        std::slice::from_mut(&mut q1),
        0,
    )
    .await;
    drop((ann, q0, q1, talker_rx, talker_tx));
    s.expect_clean().await;
}
