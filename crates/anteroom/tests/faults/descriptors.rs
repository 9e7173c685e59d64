//! Running out of descriptors: the server backs off instead of spinning,
//! says so once per burst, and serves clients again once descriptors free.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::harness::{EVENTUALLY, ONE_AT_A_TIME, Served};
use crate::support::Client;
use crate::support::process::cpu_seconds;

#[tokio::test]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const BACKING_OFF: &str = "accept failed; backing off until it succeeds";
    const ACCEPTING: &str = "accepting again";
    // The server may hold 64 descriptors: a few for itself, the rest for clients.
    let s = Served::start(&[], &[("TEST_NOFILE", "64")]).await;
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
        let lines_before = s.running.logged(BACKING_OFF);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let spent = cpu_seconds(s.pid) - before;
        assert!(spent < 0.5, "the accept loop spun: {spent} s of CPU in 2 s");
        let (off, on) = (s.running.logged(BACKING_OFF), s.running.logged(ACCEPTING));
        assert!(
            off - lines_before <= 1,
            "burst {burst}: {off} lines, {lines_before} before"
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
