//! Crash safety with the SQLite store: real server processes killed with
//! SIGKILL in the middle of a stream keep every message delivered more than
//! `store_flush` before the kill, ids keep rising, and the epoch stays.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rmpv::Value;

use crate::kit::{TempDir, UNLIMITED, check_history, join_with, whole_log};
use crate::support::process::{Running, spawn};
use crate::support::{frame_of, map, read_frame};

/// `store_flush` at its default: the longest a delivered message waits for
/// its commit.
const STORE_FLUSH: Duration = Duration::from_millis(100);

/// Allowance beyond `store_flush` for the commit itself and for scheduling
/// on a busy machine: a message received this long before the kill must
/// have been committed.
const MARGIN: Duration = Duration::from_millis(100);

/// Messages the writer sends, 10 every 5 ms: two seconds of stream, cut
/// short by the kill.
const STREAM: usize = 2000;

/// How long the stream runs before the kill.
const KILL_AFTER: Duration = Duration::from_millis(700);

/// A message as the reader received it.
struct Seen {
    id: u64,
    from: String,
    text: String,
    at: Instant,
}

fn server_args(dir: &TempDir, sync: &'static str) -> Vec<String> {
    store_args("sqlite", dir, sync)
}

/// A server on `store` that takes a flood and shows it all in one history.
pub(super) fn store_args(store: &str, dir: &TempDir, sync: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--store",
        store,
        "--data-dir",
        dir.as_str(),
        "--store-sync",
        sync,
        "--history-on-join",
        "1000",
        "--history-page-max",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(UNLIMITED.iter().map(|s| s.to_string()));
    args
}

fn start(args: &[String]) -> Running {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(&args, &[])
}

fn signal(running: &mut Running, signal: Signal) {
    let pid = Pid::from_raw(running.child().id() as i32);
    kill(pid, signal).expect("signal the server");
}

async fn killed_mid_stream_keeps_what_was_delivered(sync: &'static str) {
    let dir = TempDir::new("crash");
    killed_mid_stream(&server_args(&dir, sync), &format!("store_sync = {sync}")).await;
}

/// A server started with `args` (a durable store, history pages of 1000)
/// killed mid-stream keeps what was delivered more than `store_flush`
/// before; `what` names the store in messages.
pub async fn killed_mid_stream(args: &[String], what: &str) {
    let _heavy = crate::heavy().await;
    let mut running = start(args);

    let (reader, _, history) = join_with(running.addr, "reader", &["history"]).await;
    let epoch = check_history(history.as_ref().unwrap());
    let (writer, _, _) = join_with(running.addr, "writer", &[]).await;

    // The reader records every message with the time it arrived, until the
    // connection dies with the server.
    let mut reader_stream = reader.stream;
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(v) = read_frame(&mut reader_stream).await {
            if v["type"].as_str() == Some("message") {
                seen.push(Seen {
                    id: v["id"].as_u64().unwrap(),
                    from: v["from"].as_str().unwrap().to_string(),
                    text: v["text"].as_str().unwrap().to_string(),
                    at: Instant::now(),
                });
            }
        }
        seen
    });
    let (mut writer_in, mut writer_out) = writer.stream.into_split();
    let draining = tokio::spawn(async move { while read_frame(&mut writer_in).await.is_some() {} });
    let writing = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for chunk in 0..STREAM / 10 {
            tick.tick().await;
            let mut bytes = Vec::new();
            for i in chunk * 10..chunk * 10 + 10 {
                let say = map(&[("type", "say".into()), ("text", format!("w{i}").into())]);
                bytes.extend(frame_of(&say));
            }
            if writer_out.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });

    tokio::time::sleep(KILL_AFTER).await;
    let killed_at = Instant::now();
    signal(&mut running, Signal::SIGKILL);
    let status = running.child().wait().unwrap();
    assert!(!status.success(), "killed: {status}");
    let seen = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the reader's connection ends with the server")
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), writing).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), draining).await;
    let must_keep: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at + STORE_FLUSH + MARGIN <= killed_at)
        .collect();
    assert!(
        must_keep.len() >= 100 && seen.len() < STREAM,
        "the kill came mid-stream: {} received, {} of them before the deadline",
        seen.len(),
        must_keep.len()
    );

    println!(
        "{what}: {} received, {} more than {:?} before the kill",
        seen.len(),
        must_keep.len(),
        STORE_FLUSH + MARGIN
    );

    // The same store again.
    let running = start(args);
    let (mut auditor, _, history) = join_with(running.addr, "auditor", &["history"]).await;
    assert_eq!(
        check_history(history.as_ref().unwrap()),
        epoch,
        "the epoch survives a crash"
    );
    let (log, log_epoch) = whole_log(&mut auditor, 1000).await;
    assert_eq!(log_epoch, epoch);
    let by_id: BTreeMap<u64, &Value> = log.iter().map(|m| (m["id"].as_u64().unwrap(), m)).collect();
    assert_eq!(by_id.len(), log.len(), "no id twice in the log");
    for pair in log.windows(2) {
        assert_eq!(
            pair[1]["id"].as_u64().unwrap(),
            pair[0]["id"].as_u64().unwrap() + 1,
            "the log after a crash has no holes: {} then {}",
            pair[0],
            pair[1]
        );
    }
    let lost: Vec<String> = must_keep
        .iter()
        .filter(|s| {
            by_id.get(&s.id).is_none_or(|m| {
                m["text"].as_str() != Some(&s.text) || m["from"].as_str() != Some(&s.from)
            })
        })
        .map(|s| {
            format!(
                "{} {:?} received {:?} before the kill",
                s.id,
                s.text,
                killed_at - s.at
            )
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} messages delivered more than store_flush + {MARGIN:?} \
         before the kill are missing or changed; first: {:?}",
        lost.len(),
        must_keep.len(),
        &lost[..lost.len().min(5)]
    );
    for s in &seen {
        if let Some(m) = by_id.get(&s.id) {
            assert_eq!(m["text"].as_str(), Some(s.text.as_str()), "id {}", s.id);
        }
    }

    // New ids are past everything anyone saw: after an unclean stop the
    // server skips `ID_LEAD` past the last committed id.
    let newest_seen = seen.iter().map(|s| s.id).max().unwrap();
    let newest_logged = *by_id.keys().next_back().unwrap();
    println!(
        "{} in the log after the restart; newest received {newest_seen}, newest logged {newest_logged}",
        log.len()
    );
    auditor.say("after the crash").await;
    let m = auditor.next_message().await;
    let id = m["id"].as_u64().unwrap();
    assert!(
        id > newest_seen && id > newest_logged,
        "new id {id} after ids up to {newest_seen} were delivered"
    );
    assert_eq!(
        id,
        newest_logged + anteroom_broker::chat_log::store::ID_LEAD + 1,
        "after a crash ids continue ID_LEAD past the last committed one"
    );
}

#[tokio::test]
async fn a_killed_server_keeps_every_message_delivered_before_store_flush() {
    killed_mid_stream_keeps_what_was_delivered("normal").await;
}

#[tokio::test]
async fn a_killed_server_with_full_sync_keeps_every_message_delivered_before_store_flush() {
    killed_mid_stream_keeps_what_was_delivered("full").await;
}

#[tokio::test]
async fn after_a_clean_stop_ids_continue_at_the_next_one() {
    let dir = TempDir::new("clean");
    let args = server_args(&dir, "normal");
    let mut running = start(&args);
    let (mut ann, _, history) = join_with(running.addr, "ann", &["history"]).await;
    let epoch = check_history(history.as_ref().unwrap());
    let mut last = 0;
    for i in 0..5 {
        ann.say(&format!("before {i}")).await;
        last = ann.next_message().await["id"].as_u64().unwrap();
    }
    signal(&mut running, Signal::SIGTERM);
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = running.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a clean stop: {status}");

    let running = start(&args);
    let (mut bob, _, history) = join_with(running.addr, "bob", &["history"]).await;
    let history = history.unwrap();
    assert_eq!(
        check_history(&history),
        epoch,
        "the epoch survives a restart"
    );
    assert_eq!(
        crate::kit::texts(&history),
        (0..5).map(|i| format!("before {i}")).collect::<Vec<_>>()
    );
    assert_eq!(crate::kit::ids(&history).last(), Some(&last));
    bob.say("after").await;
    let m = bob.next_message().await;
    assert_eq!(
        m["id"].as_u64(),
        Some(last + 1),
        "after a clean stop ids continue at last + 1"
    );
}

/// The `(id, text)` of every message `texts` put in the log of a fresh
/// server on `dir`, which is then stopped cleanly (its log checkpointed
/// into `chat.sqlite3`).
pub async fn fill_and_stop(dir: &TempDir, texts: usize) -> BTreeMap<u64, String> {
    let args = server_args(dir, "normal");
    let mut running = start(&args);
    let (ann, _, _) = join_with(running.addr, "ann", &[]).await;
    let (mut rd, mut wr) = ann.stream.into_split();
    let sent = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in 0..texts.div_ceil(100) {
            let mut bytes = Vec::new();
            for i in chunk * 100..(chunk * 100 + 100).min(texts) {
                let text = format!("{i:05} {}", "x".repeat(100));
                bytes.extend(frame_of(&map(&[
                    ("type", "say".into()),
                    ("text", text.into()),
                ])));
            }
            wr.write_all(&bytes).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wr
    });
    let mut log = BTreeMap::new();
    while log.len() < texts {
        let v = tokio::time::timeout(crate::support::RECV_TIMEOUT, read_frame(&mut rd))
            .await
            .expect("echoes arrive")
            .expect("the connection stays");
        if v["type"].as_str() == Some("message") {
            log.insert(
                v["id"].as_u64().unwrap(),
                v["text"].as_str().unwrap().to_string(),
            );
        }
    }
    let _wr = sent.await.unwrap();
    signal(&mut running, Signal::SIGTERM);
    let stopped = Instant::now();
    loop {
        if let Some(status) = running.child().try_wait().unwrap() {
            assert!(status.success(), "a clean stop: {status}");
            break;
        }
        assert!(stopped.elapsed() < Duration::from_secs(10), "no exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log
}

/// The arguments of a server on `dir` for the damage tests.
pub fn args_for(dir: &TempDir) -> Vec<String> {
    server_args(dir, "normal")
}
