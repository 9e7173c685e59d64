//! Handshakes that never finish: closed within `handshake_timeout` of the
//! accept, without a `bye` when there is no channel to send one on, and
//! never in anyone else's way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::kit::{self, HOST, Scratch, arg};
use crate::support::process::{Running, spawn};
use crate::support::{Client, metric, scrape, wait_metric};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The spec's timing rule: never before the timeout, within a second after.
fn on_time(what: &str, took: Duration) {
    assert!(took >= HANDSHAKE_TIMEOUT, "{what}: closed early, {took:?}");
    assert!(
        took < HANDSHAKE_TIMEOUT + Duration::from_secs(1),
        "{what}: closed late, {took:?}"
    );
}

/// Waits for the server to close a raw TCP connection; returns what it
/// sent first (nothing, for a TLS listener that never got a handshake) and
/// when it closed, counted from `since`.
async fn closed_bare(mut stream: TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    match read.expect("the connection was never closed") {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading: {e}"),
    }
    (got, since.elapsed())
}

/// Starts `anteroom serve` with TLS and QUIC listeners and a short
/// `handshake_timeout`; returns it with its TLS and QUIC URLs.
async fn server(dir: &Scratch) -> (Running, String, String) {
    let pem = kit::self_signed(&[HOST], "anteroom test server");
    dir.write("trust.pem", &pem.cert);
    let (cert, key) = pem.install(dir);
    let running = spawn(
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
            "--tls-cert",
            arg(&cert),
            "--tls-key",
            arg(&key),
            "--handshake-timeout",
            "1s",
        ],
        &[],
    );
    let tls = format!("tls://{}", running.logged_addr("TLS on ").await);
    let quic = format!("quic://{}", running.logged_addr("QUIC on ").await);
    (running, tls, quic)
}

#[tokio::test]
async fn unfinished_handshakes_are_closed_on_time_and_delay_nobody() {
    let dir = Scratch::new("handshakes");
    let (server, tls_url, quic_url) = server(&dir).await;
    let tls_addr: SocketAddr = tls_url.trim_start_matches("tls://").parse().unwrap();
    let quic_addr: SocketAddr = quic_url.trim_start_matches("quic://").parse().unwrap();
    let trust = || kit::trust(&dir);

    let started = Instant::now();
    // TCP to the TLS port, never a byte.
    let silent = TcpStream::connect(tls_addr).await.unwrap();
    // Half a ClientHello: a record header promising 512 bytes, then one.
    let mut partial = TcpStream::connect(tls_addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // QUIC's handshake done, but its stream never opened: the client opens
    // it with its first byte, which never comes.
    let mut mute_quic = kit::dial(&quic_url, trust()).await;
    // TLS done, `hello` never sent: the session's own handshake_timeout,
    // counted from the TCP accept, ends it with a `bye`.
    let mut mute_tls = kit::dial(&tls_url, trust()).await;
    // Datagrams that are not QUIC at all.
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20 {
        let size = rng.usize(1..1400);
        let datagram: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(size).collect();
        junk.send_to(&datagram, quic_addr).await.unwrap();
    }

    // Meanwhile members on every transport join and talk, undelayed.
    let joining = Instant::now();
    let mut plain = Client::join(server.addr, "plain").await;
    let mut secure = kit::join(&tls_url, trust(), "secure").await;
    let mut quick = kit::join(&quic_url, trust(), "quick").await;
    secure.say("not delayed").await;
    assert_eq!(text(plain.next_message().await), "not delayed");
    assert_eq!(text(secure.next_message().await), "not delayed");
    assert_eq!(text(quick.next_message().await), "not delayed");
    let took = joining.elapsed();
    assert!(
        took < HANDSHAKE_TIMEOUT / 2,
        "joining and a message took {took:?} beside unfinished handshakes"
    );

    // Only completed handshakes are accepted connections; the unfinished
    // ones are still counted as handshaking.
    let body = scrape(server.metrics_addr).await;
    let accepted = |t: &str| {
        metric(
            &body,
            &format!("anteroom_connections_accepted_total{{transport=\"{t}\"}}"),
        )
    };
    assert_eq!(accepted("tcp"), Some(1.0), "{body}");
    assert_eq!(accepted("tls"), Some(2.0), "{body}");
    assert_eq!(accepted("quic"), Some(1.0), "{body}");
    let handshaking = "anteroom_connections{state=\"handshake\"}";
    assert_eq!(metric(&body, handshaking), Some(4.0), "{body}");

    // Each ends on time: the TLS ones without a byte, the QUIC one without
    // a frame, the one that finished TLS with `bye{handshake_timeout}`.
    let (silent, partial, mute_tls, mute_quic) = tokio::join!(
        closed_bare(silent, started),
        closed_bare(partial, started),
        async {
            mute_tls.expect_bye("handshake_timeout").await;
            started.elapsed()
        },
        async {
            let ended = tokio::time::timeout(Duration::from_secs(10), mute_quic.try_recv()).await;
            assert!(
                matches!(ended, Ok(None)),
                "QUIC without a stream: {ended:?}"
            );
            started.elapsed()
        },
    );
    assert_eq!(silent.0, b"", "a silent TCP client got bytes");
    on_time("TCP to the TLS port, silent", silent.1);
    assert_eq!(partial.0, b"", "half a ClientHello got bytes");
    on_time("half a ClientHello", partial.1);
    on_time("TLS without hello", mute_tls);
    on_time("QUIC without a stream", mute_quic);
    wait_metric(server.metrics_addr, handshaking, |v| v == 0.0).await;

    // The members never noticed.
    quick.say("still here").await;
    assert_eq!(text(plain.next_message().await), "still here");
    assert_eq!(text(secure.next_message().await), "still here");
    assert_eq!(text(quick.next_message().await), "still here");
}

fn text(v: rmpv::Value) -> String {
    v["text"].as_str().expect("a text").to_string()
}
