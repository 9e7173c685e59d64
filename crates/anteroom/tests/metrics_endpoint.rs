//! The metrics listener under hostile HTTP clients: half a request line,
//! more idle connections than it takes, oversized heads and request bodies.
//! Its bounds: 64 connections, 5 s for a request's head, 8 KiB of head.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The cap on open metrics connections.
const CAP: usize = anteroom_broker::telemetry::http::MAX_CONNECTIONS;

/// How long a request's head may take.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads until the server closes the connection (a reset counts), failing
/// after `within`; returns what was read.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {within:?}"
    );
    out
}

/// Whether the server has closed `stream` (or reset it), without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match stream.try_read(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Sends `request` as it is and returns the status of the answer, if one
/// comes before the connection closes.
async fn status_of(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(request).await.ok()?;
    let out = read_to_close(&mut s, Duration::from_secs(10)).await;
    let head = String::from_utf8_lossy(&out);
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn half_a_request_line_is_closed_within_the_header_timeout() {
    let s = TestServer::start(|_| {}).await;
    let mut slow = TcpStream::connect(s.metrics_addr).await.unwrap();
    let sent = Instant::now();
    slow.write_all(b"GET /rea").await.unwrap();
    let answer = read_to_close(&mut slow, HEADER_TIMEOUT * 3).await;
    assert!(
        sent.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed early, after {:?}",
        sent.elapsed()
    );
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "answered a half request"
    );
    // The listener still answers whole requests.
    assert_eq!(status_of(s.metrics_addr, &get("/healthz")).await, Some(200));
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_header_timeout() {
    let s = TestServer::start(|_| {}).await;
    let mut c = TcpStream::connect(s.metrics_addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    read_to_close(&mut c, HEADER_TIMEOUT * 3).await;
    assert!(
        answered.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed early, after {:?}",
        answered.elapsed()
    );
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_are_closed_and_readyz_answers_once_they_time_out() {
    let s = TestServer::start(|_| {}).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(TcpStream::connect(s.metrics_addr).await.unwrap());
    }
    // The kernel hands connections over in order: the one after the cap is
    // the one closed, at once.
    let mut over = TcpStream::connect(s.metrics_addr).await.unwrap();
    read_to_close(&mut over, HEADER_TIMEOUT * 3).await;
    if opened.elapsed() < HEADER_TIMEOUT - Duration::from_secs(1) {
        // Not yet timed out: the cap closed it, not the header deadline.
        let closed = idle.iter().filter(|c| is_closed(c)).count();
        assert_eq!(closed, 0, "idle connections closed before their deadline");
    }
    // The idle connections never say anything, yet /readyz answers again as
    // soon as their header deadline has closed them.
    let deadline = Instant::now() + HEADER_TIMEOUT * 3;
    loop {
        if status_of(s.metrics_addr, &get("/readyz")).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        opened.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50),
        "the cap let a connection through while {CAP} were open"
    );
    for mut c in idle {
        read_to_close(&mut c, Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn oversized_heads_and_request_bodies_are_refused() {
    let s = TestServer::start(|_| {}).await;
    let filler = "x".repeat(16 * 1024);
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    assert_eq!(status_of(s.metrics_addr, big.as_bytes()).await, Some(431));
    let with_body = b"GET /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(status_of(s.metrics_addr, with_body).await, Some(413));
    let chunked =
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(status_of(s.metrics_addr, chunked).await, Some(413));
    assert_eq!(status_of(s.metrics_addr, &get("/readyz")).await, Some(200));
}
