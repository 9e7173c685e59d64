//! The server's log never holds the server back: a standard output nobody
//! reads, and clients that make it log as fast as they can.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::process::{Running, command, spawn};
use support::{Client, RECV_TIMEOUT, http_get, metric};

/// Fetches `path`, failing the test if no answer comes in time.
async fn get_in_time(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(RECV_TIMEOUT, http_get(addr, path))
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer"))
}

#[tokio::test]
async fn a_server_whose_standard_output_nobody_reads_still_admits_and_answers() {
    let mut child = command(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--web-listen",
            "",
        ],
        &[("RUST_LOG", "debug"), ("ANTEROOM_SHUTDOWN_GRACE", "2s")],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("run anteroom");
    // Read the two address lines, then never read again: the pipe fills.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut addr, mut metrics_addr) = (None, None);
    while addr.is_none() || metrics_addr.is_none() {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no addresses");
        let after = |marker: &str| {
            let (_, rest) = line.split_once(marker)?;
            rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
        };
        addr = addr.or(after("listening on "));
        metrics_addr = metrics_addr.or(after("metrics on "));
    }
    let (addr, metrics_addr) = (addr.unwrap(), metrics_addr.unwrap());
    let _unread = stdout;
    // Killed when the test ends, however it ends.
    let mut server = Running::borrowed(addr, metrics_addr);
    server.child = Some(child);

    // Every connection logs a few debug lines: far more than a pipe holds.
    for _ in 0..5000 {
        tokio::time::timeout(RECV_TIMEOUT, Client::connect(addr))
            .await
            .expect("the server stopped accepting")
            .reset();
    }
    let mut ann = tokio::time::timeout(RECV_TIMEOUT, Client::join(addr, "ann"))
        .await
        .expect("a client was not admitted");
    ann.send_type("who", &[]).await;
    ann.recv_type("users").await;
    assert_eq!(get_in_time(metrics_addr, "/readyz").await.0, 200);
    let (_, body) = get_in_time(metrics_addr, "/metrics").await;
    let dropped = metric(&body, "anteroom_log_lines_dropped_total");
    assert!(dropped.is_some_and(|n| n > 0.0), "dropped {dropped:?}");

    // Nor does it keep the server from exiting within its grace period.
    let pid = nix::unistd::Pid::from_raw(server.child().id() as i32);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    ann.expect_bye("shutdown").await;
    let status = loop {
        if let Some(status) = server.child().try_wait().unwrap() {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(4), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

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

#[tokio::test]
async fn the_last_lines_of_a_shutdown_reach_standard_output() {
    let mut running = spawn(&[], &[("ANTEROOM_SHUTDOWN_GRACE", "2s")]);
    let mut ann = Client::join(running.addr, "ann").await;
    let pid = nix::unistd::Pid::from_raw(running.child().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    ann.expect_bye("shutdown").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.child().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The departures admission logs during the shutdown come last.
    running
        .wait_logged("left the room", 1, Duration::from_secs(5))
        .await;
    assert_eq!(running.logged("shutting down"), 1);
    assert_eq!(running.logged("left the room"), 1);
}
