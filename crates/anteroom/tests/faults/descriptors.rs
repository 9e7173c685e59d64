//! Descriptors: the server raises its soft limit to the hard one and fits
//! its connection cap under it, so clients beyond it are told `server_full`;
//! and should descriptors run out all the same, it backs off instead of
//! spinning, says so once per burst, and serves clients again once
//! descriptors free.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::harness::{EVENTUALLY, ONE_AT_A_TIME, Served};
use crate::support::Client;
use crate::support::process::{cpu_seconds, set_descriptor_limit};

const BACKING_OFF: &str = "accept failed; backing off until it succeeds";

/// The connection cap the server logged at start-up.
async fn logged_cap(s: &Served) -> usize {
    const CAP: &str = "accepting at most ";
    s.running.wait_logged(CAP, 1, EVENTUALLY).await;
    let line = s
        .running
        .line_containing(CAP)
        .expect("the server logs its connection cap");
    let (_, rest) = line.split_once(CAP).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Connects and says `ping`: `Some(true)` for a `pong` (the client is kept
/// in `open`, holding its place), `Some(false)` for `bye{server_full}`,
/// `None` for anything else, silence included.
async fn ping_or_full(s: &Served, open: &mut Vec<Client>) -> Option<bool> {
    let mut c = s.connect().await;
    c.send_type("ping", &[]).await;
    let v = tokio::time::timeout(Duration::from_secs(5), c.try_recv())
        .await
        .ok()??;
    match v["type"].as_str()? {
        "pong" => {
            open.push(c);
            Some(true)
        }
        "bye" if v["reason"].as_str() == Some("server_full") => Some(false),
        _ => None,
    }
}

#[tokio::test]
async fn a_low_descriptor_limit_caps_connections_with_server_full() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&[], &[("TEST_NOFILE", "64")]).await;
    let cap = logged_cap(&s).await;
    assert!(
        (1..64).contains(&cap),
        "a cap of {cap} does not fit 64 descriptors"
    );
    // Every client beyond the cap is told so, instead of finding a server
    // out of descriptors that answers nothing.
    let mut open = Vec::new();
    let mut served = 0;
    for i in 0..cap + 20 {
        match ping_or_full(&s, &mut open).await {
            Some(true) => served += 1,
            Some(false) => {}
            None => panic!("client {i} (cap {cap}) got neither pong nor server_full"),
        }
    }
    assert_eq!(served, cap);
    assert_eq!(s.running.logged(BACKING_OFF), 0, "descriptors ran out");
    drop(open);
    s.expect_clean().await;
}

#[tokio::test]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&[], &[("TEST_NOFILE", "64:1024")]).await;
    let cap = logged_cap(&s).await;
    assert!(
        (900..1024).contains(&cap),
        "a cap of {cap} for a hard limit of 1024"
    );
    // More than 64 descriptors' worth of clients, all served.
    let mut open = Vec::new();
    for i in 0..100 {
        assert_eq!(ping_or_full(&s, &mut open).await, Some(true), "client {i}");
    }
    assert_eq!(s.running.logged(BACKING_OFF), 0);
    drop(open);
    s.expect_clean().await;
}

#[tokio::test]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const ACCEPTING: &str = "accepting again";
    // The server may hold 64 descriptors: a few for itself, the rest for
    // clients. Lowered under the running server, which sized its
    // connection cap for the limit it started with.
    let s = Served::start(&[], &[]).await;
    set_descriptor_limit(s.pid, 64, 64);
    for burst in 1..=2 {
        let mut clients = Vec::new();
        for _ in 0..100 {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(s.addr())).await
            {
                clients.push(Client { stream });
            }
        }
        // The server is out of descriptors; it must not spin, and it says
        // so once for the whole burst: each time it starts backing off, one
        // line, then one more only after it has accepted again. (Clients
        // left in the listen backlog may exhaust it again after a recovery:
        // that is a new burst.)
        let before = cpu_seconds(s.pid);
        let (off_before, on_before) = (s.running.logged(BACKING_OFF), s.running.logged(ACCEPTING));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let spent = cpu_seconds(s.pid) - before;
        assert!(spent < 0.5, "the accept loop spun: {spent} s of CPU in 2 s");
        let (off, on) = (s.running.logged(BACKING_OFF), s.running.logged(ACCEPTING));
        // A descriptor freed meanwhile (a client of the last burst, accepted
        // late from the backlog and gone) lets it accept and run out again:
        // one more line, after its recovery line, never more.
        assert!(
            off - off_before <= on - on_before + 1,
            "burst {burst}: {} back-off lines for {} recoveries in 2 s",
            off - off_before,
            on - on_before
        );
        assert_eq!(
            off,
            on + 1,
            "burst {burst}: {off} backing-off lines, {on} recoveries"
        );
        drop(clients);
        // Once descriptors are free again, clients are served.
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let mut c = s.connect().await;
            c.send_type("ping", &[]).await;
            if let Ok(Some(v)) =
                tokio::time::timeout(Duration::from_millis(500), c.try_recv()).await
            {
                assert_eq!(v["type"].as_str(), Some("pong"));
                break;
            }
            assert!(Instant::now() < deadline, "the server never recovered");
        }
        // The recovery line of this burst is read from the server's stderr
        // by another thread: it may arrive a moment after the pong.
        s.running.wait_logged(ACCEPTING, off, EVENTUALLY).await;
        let backed_off = off;
        let (off, on) = (s.running.logged(BACKING_OFF), s.running.logged(ACCEPTING));
        assert!(
            on >= backed_off && on >= burst,
            "burst {burst}: {on} recoveries of {backed_off} back-offs"
        );
        assert!(
            off == on || off == on + 1,
            "burst {burst}: {off} lines, {on} recoveries"
        );
    }
    s.expect_clean().await;
}
