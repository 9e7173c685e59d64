//! Faults against the real server over real sockets: half frames, resets,
//! silent floods, descriptor exhaustion. In every case the room and the
//! queue stay consistent and the server's connections and descriptors come
//! back to where they started.

mod support;

use std::time::{Duration, Instant};

use support::process::spawn;
use support::{Client, TestServer, http_get, metric, wait_metric};

/// Closes with a reset (RST) instead of FIN.
fn reset(client: Client) {
    let std = client.stream.into_std().unwrap();
    let socket = socket2::Socket::from(std);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn half_a_frame_then_silence_still_times_out() {
    let s = TestServer::start(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut c = s.connect().await;
    c.send_raw(&[0, 0, 0, 40, 0x82]).await; // promises 40 bytes, sends 1
    c.expect_bye("handshake_timeout").await;
    s.stop().await;
}

#[tokio::test]
async fn resets_in_the_room_and_in_the_queue_leave_everything_consistent() {
    let mut running = spawn(&["--max-active", "2"], &[]);
    let pid = running.child().id();
    let m = running.metrics_addr;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = open_descriptors(pid);
    let mut ann = Client::connect(running.addr).await;
    ann.hello("ann").await;
    ann.recv_type("welcome").await;
    let mut bob = Client::connect(running.addr).await;
    bob.hello("bob").await;
    bob.recv_type("welcome").await;
    ann.recv_type("joined").await;
    let mut queued = Vec::new();
    for i in 0..4 {
        let mut c = Client::connect(running.addr).await;
        c.hello(&format!("q{i}")).await;
        c.recv_type("queued").await;
        queued.push(c);
    }
    // Reset a queued client mid-queue and a member mid-room.
    reset(queued.remove(1));
    reset(bob);
    let left = ann.recv_type("left").await;
    assert_eq!(left["reason"].as_str(), Some("disconnected"));
    // q0 is promoted; q2 and q3 move up to 1 and 2.
    queued[0].recv_type("welcome").await;
    for (c, want) in queued[1..].iter_mut().zip([1u64, 2]) {
        loop {
            let v = c.recv_type("queued").await;
            if v["position"].as_u64() == Some(want) {
                break;
            }
        }
    }
    wait_metric(m, "anteroom_connections{state=\"active\"}", |v| v == 2.0).await;
    wait_metric(m, "anteroom_connections{state=\"waiting\"}", |v| v == 2.0).await;
    // Everyone resets: the server forgets them all.
    reset(ann);
    for c in queued {
        reset(c);
    }
    for state in ["active", "waiting", "handshake"] {
        wait_metric(
            m,
            &format!("anteroom_connections{{state=\"{state}\"}}"),
            |v| v == 0.0,
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_descriptors(pid) > baseline {
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: {} > {baseline}",
            open_descriptors(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_flood_does_not_slow_the_room() {
    // Both ends of 1,100 connections live in this process.
    anteroom::bench::raise_fd_limit();
    let s = TestServer::start(|c| {
        c.handshake_timeout = Duration::from_secs(30);
        c.rate_limit = 1000.0;
        c.rate_burst = 1000;
    })
    .await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    ann.recv_type("joined").await;
    // A thousand connections that never speak, and a hundred that stop mid-frame.
    let mut silent = Vec::new();
    for i in 0..1100 {
        let mut c = Client::connect(s.addr).await;
        if i % 11 == 0 {
            c.send_raw(&[0, 0, 1, 0, 0x82, 0xa4]).await;
        }
        silent.push(c);
    }
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let sent = Instant::now();
        ann.say(&format!("still here {i}")).await;
        let v = bob.recv_type("message").await;
        assert_eq!(v["text"].as_str().unwrap(), format!("still here {i}"));
        worst = worst.max(sent.elapsed());
        ann.recv_type("message").await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "a message took {worst:?} under the flood"
    );
    // And new members still get in at once.
    let started = Instant::now();
    let _cid = s.join("cid").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(silent);
    s.stop().await;
}

#[tokio::test]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    // The server may hold 64 descriptors: a few for itself, the rest for clients.
    let mut running = spawn(&[], &[("TEST_NOFILE", "64")]);
    let pid = running.child().id();
    let m = running.metrics_addr;
    let mut clients = Vec::new();
    for _ in 0..100 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(running.addr),
        )
        .await
        {
            clients.push(Client { stream });
        }
    }
    // The server is out of descriptors; it must not spin.
    let before = support::process::cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = support::process::cpu_seconds(pid) - before;
    assert!(spent < 0.5, "the accept loop spun: {spent} s of CPU in 2 s");
    drop(clients);
    // Once descriptors are free again, clients are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(running.addr).await;
        c.send_type("ping", &[]).await;
        if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(500), c.try_recv()).await {
            assert_eq!(v["type"].as_str(), Some("pong"));
            break;
        }
        assert!(Instant::now() < deadline, "the server never recovered");
    }
    let (_, body) = http_get(m, "/metrics").await;
    assert!(metric(&body, "anteroom_connections{state=\"handshake\"}").is_some());
}
