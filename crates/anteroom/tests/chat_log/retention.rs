//! Retention, which runs at start-up and then every 10 s: the log keeps the
//! newest `history_max_messages`, and messages and files older than
//! `history_max_age` go, the files' bytes too.

use std::time::Duration;

use anteroom_broker::config::Config;
use rmpv::Value;

use crate::kit::{
    CHAT, TempDir, ask_history, eventually, files_in, get, ids, join_with, messages, sqlite, token,
    unlimited, upload_ok, web,
};
use crate::support::TestServer;

#[tokio::test]
async fn after_a_restart_the_log_keeps_the_newest_history_max_messages() {
    let dir = TempDir::new("keep");
    let config = |c: &mut Config| {
        sqlite(c, &dir);
        unlimited(c);
        c.history_max_messages = 10;
    };
    let s = TestServer::start(config).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", &[]).await;
    let mut said = Vec::new();
    for i in 0..50 {
        ann.say(&format!("r{i}")).await;
        said.push(ann.next_message().await["id"].as_u64().unwrap());
    }
    drop(ann);
    s.stop().await;

    let s = TestServer::start(config).await;
    let (mut bob, _, history) = join_with(s.addr, "bob", &["history"]).await;
    let kept = ids(&history.unwrap());
    assert!(
        !kept.is_empty() && kept.len() < 50 && kept.len() <= 10,
        "kept {kept:?}"
    );
    assert_eq!(
        kept[..],
        said[said.len() - kept.len()..],
        "the newest, in order"
    );

    // The store holds nothing older once start-up retention has run.
    let oldest = kept[0];
    let mut below = Vec::new();
    for _ in 0..100 {
        below = ids(&ask_history(&mut bob, Some(oldest.into()), None).await);
        if below.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(below.is_empty(), "still in the store: {below:?}");
    // And then, once retention has looked again (it runs in the
    // background), `more` no longer promises older messages.
    let mut history = None;
    for attempt in 0..50 {
        let (_joined, _, got) = join_with(s.addr, &format!("cid{attempt}"), &["history"]).await;
        let got = got.unwrap();
        assert_eq!(ids(&got), kept);
        let done = got["more"].as_bool() == Some(false);
        history = Some(got);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let history = history.unwrap();
    assert_eq!(
        history["more"].as_bool(),
        Some(false),
        "no older message exists after retention: {history}"
    );
    s.stop().await;
}

#[tokio::test]
async fn files_older_than_history_max_age_are_gone_after_a_restart() {
    let dir = TempDir::new("age");
    let config = |c: &mut Config| {
        web(c);
        sqlite(c, &dir);
        c.history_max_age = Duration::from_secs(1);
    };
    let s = TestServer::start(config).await;
    let (mut ann, welcome, _) = join_with(s.addr, "ann", CHAT).await;
    let file = upload_ok(
        s.web_addr.unwrap(),
        &token(&welcome),
        "old.txt",
        b"old bytes",
    )
    .await;
    let url = file["url"].as_str().unwrap().to_string();
    let id = url.strip_prefix("/files/").unwrap().to_string();
    ann.send_type(
        "say",
        &[
            ("text", "".into()),
            ("attachment", Value::from(url.as_str())),
        ],
    )
    .await;
    ann.next_message().await;
    let files = dir.path().join("files");
    assert!(files_in(&files).contains(&id), "stored in data_dir/files");
    drop(ann);
    s.stop().await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = TestServer::start(config).await;
    let web_addr = s.web_addr.unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = get(web_addr, &url).await.status;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 404, "an expired file is not served");
    assert!(
        eventually(Duration::from_secs(2), || !files_in(&files).contains(&id)).await,
        "its bytes are gone from data_dir/files: {:?}",
        files_in(&files)
    );
    // The message that carried it expired too.
    let (_bob, _, history) = join_with(s.addr, "bob", &["history"]).await;
    assert!(messages(&history.unwrap()).is_empty());
    s.stop().await;
}
