//! The metrics endpoint fed arbitrary bytes: whatever a client sends, the
//! server answers with well-formed HTTP/1.x responses or closes, never
//! panics, and never holds more than its bounds allow.
//!
//! Input: one byte seeding how the bytes are cut into writes (top bit:
//! pauses between writes, so the header deadline fires), then the bytes.

#![no_main]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anteroom_broker::telemetry::http::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES, serve_connection};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cuts of 1 to 64 bytes and, if asked, pauses up to twice the deadline.
fn cuts(seed: u8) -> impl Iterator<Item = (usize, Duration)> {
    let pauses = seed & 0x80 != 0;
    let mut x = u32::from(seed) | 0x100;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let pause = if pauses && x % 8 == 0 {
            HEADER_READ_TIMEOUT * 2 * (x % 100) / 100
        } else {
            Duration::ZERO
        };
        Some(((x % 64) as usize + 1, pause))
    })
}

async fn exchange(seed: u8, input: Vec<u8>) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let ready = Arc::new(AtomicBool::new(true));
    let served = tokio::spawn(serve_connection(server, ready));
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let sender = tokio::spawn(async move {
        let mut rest = &input[..];
        for (n, pause) in cuts(seed) {
            if rest.is_empty() {
                break;
            }
            let n = n.min(rest.len());
            if to_server.write_all(&rest[..n]).await.is_err() {
                return;
            }
            rest = &rest[n..];
            tokio::time::sleep(pause).await;
        }
        let _ = to_server.shutdown().await;
    });
    let mut received = Vec::new();
    from_server
        .read_to_end(&mut received)
        .await
        .expect("in-memory reads do not fail");
    served.await.expect("the connection does not panic");
    sender.await.expect("the sender does not panic");
    received
}

fuzz_target!(|data: &[u8]| {
    let [seed, input @ ..] = data else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let output = runtime.block_on(exchange(*seed, input.to_vec()));
    // Every answer is a status line in the request's HTTP version (1.0 or
    // 1.1) with headers; the metrics body can be long, but a response head
    // stays within the bound.
    if !output.is_empty() {
        assert!(
            output.starts_with(b"HTTP/1.1 ") || output.starts_with(b"HTTP/1.0 "),
            "{:?}",
            String::from_utf8_lossy(&output[..output.len().min(64)])
        );
        let head_end = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head ends");
        assert!(
            head_end <= MAX_HEADER_BYTES,
            "a response head of {head_end} bytes"
        );
    }
});
