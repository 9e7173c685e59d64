//! The chat log's metrics, from a server process of its own (metrics are
//! process-wide): commits, drops, whispers, and the `chat_log` component.

use std::time::{Duration, Instant};

use crate::kit::{CHAT, TempDir, join_with};
use crate::support::process::spawn;
use crate::support::{metric, scrape};

#[tokio::test]
async fn commits_and_whispers_are_counted() {
    let dir = TempDir::new("metrics");
    let running = spawn(&["--store", "sqlite", "--data-dir", dir.as_str()], &[]);
    let body = scrape(running.metrics_addr).await;
    for series in [
        "anteroom_store_written_total",
        "anteroom_store_dropped_total",
        "anteroom_whispers_total",
        "anteroom_store_commit_seconds_count",
        "anteroom_subscriber_lag{component=\"chat_log\"}",
    ] {
        assert_eq!(metric(&body, series), Some(0.0), "{series} at start-up");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("anteroom_subscribers_dropped_total{")
                && l.contains("component=\"chat_log\"")),
        "chat_log among the dropping components"
    );

    let (mut ann, _, _) = join_with(running.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(running.addr, "bob", CHAT).await;
    ann.recv_type("joined").await;
    for i in 0..5 {
        ann.say(&format!("counted {i}")).await;
        ann.next_message().await;
    }
    let said = Instant::now();
    let mut written = None;
    while said.elapsed() < Duration::from_secs(1) {
        written = metric(
            &scrape(running.metrics_addr).await,
            "anteroom_store_written_total",
        );
        if written == Some(5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        written,
        Some(5.0),
        "five messages committed within a second"
    );
    let body = scrape(running.metrics_addr).await;
    assert!(
        metric(&body, "anteroom_store_commit_seconds_count").is_some_and(|n| n > 0.0),
        "commits timed"
    );
    assert_eq!(metric(&body, "anteroom_store_dropped_total"), Some(0.0));

    for i in 0..2 {
        ann.send_type(
            "whisper",
            &[("to", "bob".into()), ("text", format!("w{i}").into())],
        )
        .await;
        ann.recv_type("whisper").await;
    }
    ann.send_type("whisper", &[("to", "nobody".into()), ("text", "x".into())])
        .await;
    ann.expect_error("no_such_user").await;
    bob.send_type("whisper", &[("to", "bob".into()), ("text", "self".into())])
        .await;
    bob.recv_until(|v| v["type"].as_str() == Some("whisper") && v["text"].as_str() == Some("self"))
        .await;
    let body = scrape(running.metrics_addr).await;
    assert_eq!(
        metric(&body, "anteroom_whispers_total"),
        Some(3.0),
        "delivered whispers only"
    );
    assert_eq!(
        metric(&body, "anteroom_store_written_total"),
        Some(5.0),
        "whispers are not logged"
    );
}
