//! The chat log of the real binary kept in PostgreSQL (a throwaway server
//! of the test's own): history survives a clean restart with the same ids
//! and epoch, ids continue after it and skip ahead after a crash, and a
//! server killed mid-stream keeps what it delivered before `store_flush`.

use std::time::{Duration, Instant};

use anteroom_broker::chat_log::store::ID_LEAD;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::kit::{TempDir, ask_history, check_history, ids, join_with, texts};
use crate::support::process::{Running, spawn};
use crate::support::{Client, postgres_server};

/// Says `text` and returns the id the room gave it.
async fn say(client: &mut Client, text: &str) -> u64 {
    client.say(text).await;
    let message = client.next_message().await;
    assert_eq!(message["text"].as_str(), Some(text), "{message}");
    message["id"].as_u64().unwrap()
}

/// Stops the server with `signal` and waits for it to exit.
async fn stop(mut running: Running, signal: Signal) {
    let child = running.child();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_in_postgres_outlives_restarts_and_crashes() {
    let Some(pg) = postgres_server() else {
        return;
    };
    let url = pg.database("chat");
    let dir = TempDir::new("postgres");
    let args = ["--store", &url, "--data-dir", dir.as_str()];

    let first = spawn(&args, &[]);
    let (mut ann, _, history) = join_with(first.addr, "ann", &["history"]).await;
    let history = history.unwrap();
    let epoch = check_history(&history);
    assert!(ids(&history).is_empty());
    let said = ["one", "two", "héllo 🌍"];
    let mut sent = Vec::new();
    for text in said {
        sent.push(say(&mut ann, text).await);
    }
    assert_eq!(sent, [1, 2, 3]);
    // A clean stop commits everything and marks the last id.
    stop(first, Signal::SIGTERM).await;

    let second = spawn(&args, &[]);
    let (mut bob, _, history) = join_with(second.addr, "bob", &["history"]).await;
    let history = history.unwrap();
    assert_eq!(check_history(&history), epoch, "the same store");
    assert_eq!(ids(&history), sent);
    assert_eq!(texts(&history), said);
    assert_eq!(history["more"].as_bool(), Some(false));
    assert_eq!(
        say(&mut bob, "four").await,
        4,
        "ids continue after a clean stop"
    );
    let page = ask_history(&mut bob, Some(3.into()), Some(1.into())).await;
    assert_eq!(texts(&page), ["two"]);
    assert_eq!(page["more"].as_bool(), Some(true));

    // A crash once message 4 is committed: the next server starts past
    // every id the crashed one could have given out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql("chat", "SELECT count(*) FROM anteroom_messages") != "4" {
        assert!(Instant::now() < deadline, "message 4 never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(second, Signal::SIGKILL).await;

    let third = spawn(&args, &[]);
    let (mut carol, _, history) = join_with(third.addr, "carol", &["history"]).await;
    let history = history.unwrap();
    assert_eq!(check_history(&history), epoch);
    assert_eq!(ids(&history), [1, 2, 3, 4]);
    assert_eq!(say(&mut carol, "five").await, 4 + ID_LEAD + 1);
    stop(third, Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_in_postgres_every_message_delivered_before_store_flush() {
    let Some(pg) = postgres_server() else {
        return;
    };
    let url = pg.database("crash");
    let dir = TempDir::new("postgres-crash");
    let args = crate::crash::store_args(&url, &dir, "normal");
    crate::crash::killed_mid_stream(&args, "PostgreSQL").await;
}
