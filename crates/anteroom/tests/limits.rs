//! Admission control: the total cap and the per-IP cap answer
//! `bye{reason:"server_full"}` and free their places when clients leave; so
//! does an address connecting faster than its rate; entries into the room
//! are paced; `who` and frames of every type are metered per connection.

mod support;

use std::time::{Duration, Instant};

use anteroom_broker::config::Config;
use support::process::spawn;
use support::{Client, TestServer};
use tokio::net::TcpSocket;

async fn connect_from(server: &TestServer, source: &str) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    Client {
        stream: socket.connect(server.addr).await.unwrap(),
    }
}

/// Whether a new connection is served (answers a ping) rather than refused.
async fn served(client: &mut Client) -> bool {
    client.send_type("ping", &[("id", 1.into())]).await;
    matches!(client.try_recv().await, Some(v) if v["type"].as_str() == Some("pong"))
}

#[tokio::test]
async fn the_total_cap_counts_every_state_and_refuses_with_server_full() {
    let s = TestServer::start(|c| {
        c.max_active = 1;
        c.max_connections = 3;
    })
    .await;
    let _member = s.join("ann").await;
    let _queued = s.queue("bob", 1).await;
    let mut handshaking = s.connect().await;
    assert!(served(&mut handshaking).await);
    let mut over = s.connect().await;
    over.expect_bye("server_full").await;
    // A place frees up when a client leaves.
    drop(handshaking);
    let mut next = None;
    for _ in 0..100 {
        let mut c = s.connect().await;
        if served(&mut c).await {
            next = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(next.is_some(), "the freed place was never given out");
    s.stop().await;
}

#[tokio::test]
async fn the_per_ip_cap_refuses_a_third_connection_from_one_address() {
    let s = TestServer::start(|c| c.max_connections_per_ip = 2).await;
    let mut a = connect_from(&s, "127.0.0.1").await;
    let mut b = connect_from(&s, "127.0.0.1").await;
    assert!(served(&mut a).await && served(&mut b).await);
    let mut c = connect_from(&s, "127.0.0.1").await;
    c.expect_bye("server_full").await;
    let mut other = connect_from(&s, "127.0.0.2").await;
    assert!(served(&mut other).await, "another address is not affected");
    let scrape = s.scrape().await;
    assert!(
        support::metric(&scrape, "anteroom_rejected_total{reason=\"server_full\"}").unwrap() >= 1.0
    );
    s.stop().await;
}

/// Whether a new connection from 127.0.0.1 is served (`Some(true)`) or told
/// `bye{server_full}` (`Some(false)`); `None` for anything else.
async fn served_or_full(addr: std::net::SocketAddr) -> Option<bool> {
    let mut c = Client::connect(addr).await;
    c.send_type("ping", &[("id", 1.into())]).await;
    let v = tokio::time::timeout(support::RECV_TIMEOUT, c.try_recv())
        .await
        .ok()??;
    match v["type"].as_str()? {
        "pong" => Some(true),
        "bye" if v["reason"].as_str() == Some("server_full") => Some(false),
        _ => None,
    }
}

#[tokio::test]
async fn by_default_one_address_connecting_faster_than_its_rate_is_told_server_full() {
    // The defaults, per-address limits included.
    let s = TestServer::start(|c| {
        *c = Config {
            listen: c.listen,
            metrics_listen: c.metrics_listen,
            web_listen: None,
            store: c.store.clone(),
            ..Config::default()
        }
    })
    .await;
    let started = Instant::now();
    let mut accepted = 0;
    let mut refused = false;
    for i in 0..1000 {
        match served_or_full(s.addr).await {
            Some(true) => accepted += 1,
            Some(false) => {
                refused = true;
                break;
            }
            None => panic!("connection {i} got neither pong nor server_full"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        refused,
        "{accepted} connections in {elapsed:.1} s, none refused"
    );
    // A burst of 100, then 10 a second.
    assert!(
        accepted >= 100 && accepted as f64 <= 101.0 + 10.0 * elapsed,
        "{accepted} served in {elapsed:.1} s"
    );
    assert!(
        served_or_full(s.addr).await == Some(false),
        "still over the rate"
    );
    let mut other = connect_from(&s, "127.0.0.2").await;
    assert!(served(&mut other).await, "another address is not affected");
    let scrape = s.scrape().await;
    assert!(
        support::metric(
            &scrape,
            "anteroom_rejected_total{reason=\"connection_rate\"}"
        )
        .unwrap()
            >= 2.0,
        "{scrape}"
    );
    s.stop().await;
}

#[tokio::test]
async fn entries_beyond_the_join_rate_wait_their_turn() {
    let running = spawn(
        &[],
        &[("ANTEROOM_JOIN_RATE", "5"), ("ANTEROOM_JOIN_BURST", "2")],
    );
    let mut observer = Client::join(running.addr, "observer").await;
    // One entry left in the burst, then one every 200 ms: a storm of
    // joins and leaves reaches room delivery no faster than that.
    let started = Instant::now();
    for i in 0..10 {
        let mut c = Client::connect(running.addr).await;
        c.enter(&format!("churn{i}")).await;
        c.send_type("bye", &[]).await;
        c.expect_bye("bye").await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "10 entries in {elapsed:?} at 5 a second"
    );
    // Every member still sees every join and every leave, in order.
    for i in 0..10 {
        let name = format!("churn{i}");
        let joined = observer.recv_type("joined").await;
        assert_eq!(joined["name"].as_str(), Some(name.as_str()));
        let left = observer.recv_type("left").await;
        assert_eq!(left["name"].as_str(), Some(name.as_str()));
    }
    let m = running.metrics_addr;
    support::wait_metric(m, "anteroom_joins_paced_total", |v| v >= 8.0).await;
}

#[tokio::test]
async fn a_client_whose_entry_waits_longer_than_idle_timeout_is_not_idle() {
    let running = spawn(
        &[],
        &[
            ("ANTEROOM_JOIN_RATE", "0.25"),
            ("ANTEROOM_JOIN_BURST", "1"),
            ("ANTEROOM_HEARTBEAT_INTERVAL", "1s"),
            ("ANTEROOM_IDLE_TIMEOUT", "2s"),
        ],
    );
    let _first = Client::join(running.addr, "first").await;
    // The next entry comes 4 s later, twice idle_timeout: the wait is the
    // server's, and the liveness timers start with the welcome.
    let mut second = Client::connect(running.addr).await;
    second.hello("second").await;
    let welcome = second.recv().await;
    assert_eq!(welcome["type"].as_str(), Some("welcome"), "{welcome}");
    let next = second.recv().await;
    assert_eq!(next["type"].as_str(), Some("ping"), "{next}");
}

#[tokio::test]
async fn who_over_its_rate_gets_rate_limited_and_is_counted() {
    let running = spawn(
        &[],
        &[("ANTEROOM_WHO_RATE", "0.001"), ("ANTEROOM_WHO_BURST", "3")],
    );
    let mut ann = Client::join(running.addr, "ann").await;
    let who = support::frame_of(&support::map(&[("type", "who".into())]));
    ann.send_raw(&who.repeat(6)).await;
    for _ in 0..3 {
        let users = ann.recv_type("users").await;
        assert_eq!(support::names(&users["names"]), ["ann"]);
    }
    for _ in 0..3 {
        ann.expect_error("rate_limited").await;
    }
    // The connection stays open, and other requests are unaffected.
    assert!(served(&mut ann).await);
    let m = running.metrics_addr;
    support::wait_metric(
        m,
        "anteroom_rejected_total{reason=\"who_rate_limited\"}",
        |v| v == 3.0,
    )
    .await;
}

#[tokio::test]
async fn a_connection_flooding_frames_is_cut_off_as_a_protocol_error() {
    // The default request_rate: 100 frames a second, bursts of 200.
    let running = spawn(&[], &[]);
    let mut c = Client::connect(running.addr).await;
    let ping = support::frame_of(&support::map(&[("type", "ping".into())]));
    // Not MessagePack: answered `bad_frame`, and counted all the same.
    let garbage = [0u8, 0, 0, 1, 0xc1];
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.extend_from_slice(&ping);
        flood.extend_from_slice(&garbage);
    }
    c.send_raw(&flood).await;
    let mut answered = 0;
    let last = loop {
        let v = c.recv().await;
        match (v["type"].as_str().unwrap(), v["code"].as_str()) {
            ("pong", _) | ("error", Some("bad_frame")) => answered += 1,
            _ => break v,
        }
    };
    assert_eq!(last["type"].as_str(), Some("error"), "{last}");
    assert_eq!(last["code"].as_str(), Some("rate_limited"), "{last}");
    assert!((200..300).contains(&answered), "{answered} frames answered");
    c.expect_bye("protocol_error").await;
    let m = running.metrics_addr;
    support::wait_metric(
        m,
        "anteroom_rejected_total{reason=\"request_flood\"}",
        |v| v == 1.0,
    )
    .await;
}
