//! The server's log never holds the server back: clients that make it log
//! as fast as they can.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::process::spawn;
use support::{Client, http_get, metric};

/// Connects and provokes a protocol error (a zero-length frame).
async fn protocol_error(addr: SocketAddr) {
    let mut c = Client::connect(addr).await;
    c.send_raw(&[0, 0, 0, 0]).await;
    c.expect_error("bad_frame").await;
    c.expect_bye("protocol_error").await;
}

#[tokio::test]
async fn protocol_errors_are_logged_at_most_ten_a_second_and_the_rest_counted() {
    const FLOOD: usize = 200;
    let running = spawn(&[], &[]);
    let started = Instant::now();
    for _ in 0..FLOOD {
        protocol_error(running.addr).await;
    }
    // One more in a later second: its line reports those left out before.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    protocol_error(running.addr).await;
    let seconds = started.elapsed().as_secs() + 1;

    // Every error is either a line or counted as left out.
    let marker = "protocol error; closing";
    let deadline = Instant::now() + Duration::from_secs(10);
    let (logged, suppressed) = loop {
        let (_, body) = http_get(running.metrics_addr, "/metrics").await;
        let suppressed = metric(&body, "anteroom_log_lines_suppressed_total");
        let logged = running.logged(marker);
        if let Some(suppressed) = suppressed
            && logged + suppressed as usize == FLOOD + 1
        {
            break (logged, suppressed as usize);
        }
        assert!(
            Instant::now() < deadline,
            "{logged} lines, {suppressed:?} suppressed, for {} errors",
            FLOOD + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        logged as u64 <= 10 * seconds,
        "{logged} lines in {seconds} s"
    );
    if suppressed > 0 {
        assert!(
            running.logged("suppressed=") > 0,
            "no line reports the rest"
        );
    }
}
