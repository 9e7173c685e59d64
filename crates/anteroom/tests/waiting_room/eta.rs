//! `eta`: the estimated wait in `queued`, under a scripted promotion rate.

use std::time::Duration;

use crate::kit::{has_key, hello_with};
use crate::support::{Client, TestServer, metric};

#[tokio::test]
async fn the_estimate_follows_a_scripted_promotion_rate() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| {
        c.max_active = 1;
        c.join_rate = 0.0;
    })
    .await;
    // One seat; a line of version-1 clients, then the one watching.
    let mut member = Client::join(s.addr, "m").await;
    let mut line = Vec::new();
    for i in 0..12 {
        line.push(Client::queue(s.addr, &format!("f{i}"), i + 1).await);
    }
    let mut watcher = Client::connect(s.addr).await;
    hello_with(&mut watcher, "watcher", &["eta"]).await;
    let first = watcher.recv_type("queued").await;
    assert_eq!(first["position"].as_u64(), Some(13));
    // No promotion seen yet: no estimate.
    assert!(!has_key(&first, "eta_s"), "{first}");

    // Five promotions a second: the member leaves, the head takes its seat.
    let mut estimates = Vec::new();
    let mut line = line.into_iter();
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        member.send_type("bye", &[]).await;
        member = line.next().unwrap();
        member
            .recv_until(|v| v["type"].as_str() == Some("welcome"))
            .await;
        // Read what the watcher was told so far.
        while let Ok(Some(q)) =
            tokio::time::timeout(Duration::from_millis(20), watcher.try_recv()).await
        {
            if q["type"].as_str() == Some("queued") {
                let position = q["position"].as_u64().unwrap();
                estimates.push((round, position, q["eta_s"].as_u64()));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    while let Ok(Some(q)) =
        tokio::time::timeout(Duration::from_millis(50), watcher.try_recv()).await
    {
        if q["type"].as_str() == Some("queued") {
            let position = q["position"].as_u64().unwrap();
            estimates.push((8, position, q["eta_s"].as_u64()));
        }
    }
    // Before the fifth promotion there is no estimate; after it, one is
    // there, near position / 5 per second.
    assert!(
        estimates
            .iter()
            .all(|(round, _, eta)| *round >= 4 || eta.is_none()),
        "{estimates:?}"
    );
    let &(_, position, eta) = estimates.last().expect("position updates");
    assert_eq!(position, 5, "{estimates:?}");
    let eta = eta.expect("an estimate after eight promotions");
    assert!(
        (1..=3).contains(&eta),
        "eta {eta} for position 5 at 5/s: {estimates:?}"
    );
    // The gauge tells what the last in the queue would be told.
    let gauge = metric(&s.scrape().await, "anteroom_queue_estimated_wait_seconds").unwrap();
    assert!((1.0..=3.0).contains(&gauge), "{gauge}");
    s.stop().await;
}
