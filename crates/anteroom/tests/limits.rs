//! Connection caps: the total cap and the per-IP cap answer
//! `bye{reason:"server_full"}` and free their places when clients leave.

mod support;

use std::time::Duration;

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
