//! History: the page after `welcome`, `history` requests and their limits,
//! pages that reach from memory into the SQLite store, and what the log
//! holds (messages and attachments, never whispers).

use std::time::Duration;

use rmpv::Value;

use crate::kit::{
    CHAT, TempDir, answer, ask_history, check_history, hello_with, ids, join_with, messages,
    sqlite, texts, token, unlimited, upload_ok, web, whole_log,
};
use crate::support::{Client, TestServer, frame_of, map, read_frame};

/// Says each text and waits for its echo; returns the ids.
async fn say_all(c: &mut Client, texts: impl IntoIterator<Item = String>) -> Vec<u64> {
    let mut ids = Vec::new();
    for t in texts {
        c.say(&t).await;
        let m = c.next_message().await;
        assert_eq!(m["text"].as_str(), Some(t.as_str()));
        ids.push(m["id"].as_u64().unwrap());
    }
    ids
}

#[tokio::test]
async fn the_history_after_welcome_holds_the_newest_messages_oldest_first() {
    let s = TestServer::start(|c| c.history_on_join = 5).await;
    let (mut ann, _, history) = join_with(s.addr, "ann", &["history"]).await;
    let history = history.unwrap();
    let epoch = check_history(&history);
    assert!(messages(&history).is_empty());
    assert_eq!(history["more"].as_bool(), Some(false));

    let first = say_all(&mut ann, (1..=3).map(|i| format!("m{i}"))).await;
    let (_dan, _, history) = join_with(s.addr, "dan", &["history"]).await;
    let history = history.unwrap();
    assert_eq!(check_history(&history), epoch, "one store, one epoch");
    assert_eq!(ids(&history), first);
    assert_eq!(texts(&history), ["m1", "m2", "m3"]);
    assert_eq!(history["more"].as_bool(), Some(false), "nothing older");

    let later = say_all(&mut ann, (4..=8).map(|i| format!("m{i}"))).await;
    let (mut bob, _, history) = join_with(s.addr, "bob", &["whisper", "history"]).await;
    let history = history.unwrap();
    assert_eq!(check_history(&history), epoch);
    assert_eq!(ids(&history), later);
    assert_eq!(texts(&history), ["m4", "m5", "m6", "m7", "m8"]);
    assert_eq!(history["more"].as_bool(), Some(true), "m1..m3 are older");
    let m = &messages(&history)[0];
    assert_eq!(m["from"].as_str(), Some("ann"));

    // Then live frames.
    ann.say("live").await;
    let next = bob.recv().await;
    assert_eq!(next["type"].as_str(), Some("message"), "{next}");
    assert_eq!(next["id"].as_u64(), Some(later[4] + 1));
    s.stop().await;
}

#[tokio::test]
async fn the_history_meets_the_live_messages_exactly_while_messages_flow() {
    let s = TestServer::start(|c| {
        c.history_on_join = 50;
        unlimited(c);
    })
    .await;
    let (ann, _, _) = join_with(s.addr, "ann", &[]).await;
    let (mut ann_in, mut ann_out) = ann.stream.into_split();
    tokio::spawn(async move { while read_frame(&mut ann_in).await.is_some() {} });
    let sending = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for i in 0..400 {
            let say = map(&[("type", "say".into()), ("text", format!("s{i}").into())]);
            ann_out.write_all(&frame_of(&say)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ann_out
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut cid, _, history) = join_with(s.addr, "cid", &["history"]).await;
    let history = history.unwrap();
    let before = ids(&history);
    assert!(!before.is_empty(), "cid joined mid-stream");
    let mut last = *before.last().unwrap();
    let mut last_text = texts(&history).last().unwrap().clone();
    while last_text != "s399" {
        let m = cid.next_message().await;
        let id = m["id"].as_u64().unwrap();
        assert_eq!(id, last + 1, "history then live, no gap, no repeat: {m}");
        last = id;
        last_text = m["text"].as_str().unwrap().to_string();
    }
    let _out = sending.await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_client_promoted_from_the_queue_gets_its_history_after_welcome() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", &[]).await;
    let said = say_all(&mut ann, ["a", "b", "c"].map(String::from)).await;
    let mut bob = Client::connect(s.addr).await;
    hello_with(&mut bob, "bob", &["history"]).await;
    bob.recv_type("queued").await;
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    bob.recv_type("welcome").await;
    let history = bob.recv().await;
    check_history(&history);
    assert_eq!(ids(&history), said);
    assert_eq!(texts(&history), ["a", "b", "c"]);
    s.stop().await;
}

#[tokio::test]
async fn requests_are_clamped_and_their_fields_checked() {
    let s = TestServer::start(|c| {
        c.history_page_max = 10;
        c.history_on_join = 0;
        unlimited(c);
    })
    .await;
    let (mut ann, _, history) = join_with(s.addr, "ann", &["history"]).await;
    assert!(messages(&history.unwrap()).is_empty());
    let all = say_all(&mut ann, (1..=30).map(|i| format!("t{i}"))).await;
    let newest = |n: usize| all[all.len() - n..].to_vec();
    let below = |before: u64, n: usize| {
        let under: Vec<u64> = all.iter().copied().filter(|id| *id < before).collect();
        under[under.len().saturating_sub(n)..].to_vec()
    };

    let page = ask_history(&mut ann, None, None).await;
    check_history(&page);
    assert_eq!(ids(&page), newest(10), "default: history_page_max");
    assert_eq!(page["more"].as_bool(), Some(true));

    for (limit, expect) in [
        (Value::from(0), 1),
        (Value::from(-5), 1),
        (Value::from(i64::MIN), 1),
        (Value::from(1u64 << 40), 10),
        (Value::from(u64::MAX), 10),
        (Value::from(3), 3),
        (Value::Nil, 10),
    ] {
        let page = ask_history(&mut ann, None, Some(limit.clone())).await;
        assert_eq!(ids(&page), newest(expect), "limit {limit}");
    }

    let b = all[24];
    let page = ask_history(&mut ann, Some(b.into()), None).await;
    assert_eq!(ids(&page), below(b, 10));
    assert_eq!(page["more"].as_bool(), Some(true));
    let page = ask_history(&mut ann, Some(b.into()), Some(3.into())).await;
    assert_eq!(ids(&page), below(b, 3));
    let page = ask_history(&mut ann, Some(all[4].into()), None).await;
    assert_eq!(ids(&page), all[..4].to_vec());
    assert_eq!(
        page["more"].as_bool(),
        Some(false),
        "nothing below the first"
    );
    let page = ask_history(&mut ann, Some(all[0].into()), None).await;
    assert!(ids(&page).is_empty());
    assert_eq!(page["more"].as_bool(), Some(false));
    let page = ask_history(&mut ann, Some(Value::Nil), Some(2.into())).await;
    assert_eq!(ids(&page), newest(2), "a nil before is absent");
    let page = ask_history(&mut ann, Some(Value::Nil), Some(Value::Nil)).await;
    assert_eq!(ids(&page), newest(10));

    for (field, wrong) in [
        ("before", Value::from("10")),
        ("before", Value::from(true)),
        ("before", Value::F64(5.0)),
        ("limit", Value::from("3")),
        ("limit", Value::F64(2.5)),
        ("limit", Value::Array(vec![])),
    ] {
        ann.send_type("history", &[(field, wrong.clone())]).await;
        let e = answer(&mut ann).await;
        assert_eq!(e["type"].as_str(), Some("error"), "{field}: {wrong}: {e}");
        assert_eq!(e["code"].as_str(), Some("bad_request"), "{e}");
    }
    // The connection stays.
    let page = ask_history(&mut ann, None, Some(1.into())).await;
    assert_eq!(ids(&page), newest(1));
    s.stop().await;
}

#[tokio::test]
async fn a_queued_client_may_not_ask_for_history() {
    let s = TestServer::start(|c| c.max_active = 1).await;
    let _ann = s.join("ann").await;
    let mut bob = Client::connect(s.addr).await;
    hello_with(&mut bob, "bob", &["history"]).await;
    bob.recv_type("queued").await;
    bob.send_type("history", &[]).await;
    bob.expect_error("not_admitted").await;
    bob.send_type("history", &[("limit", 3.into())]).await;
    bob.expect_error("not_admitted").await;
    s.stop().await;
}

/// More messages than the memory window of 1,024.
const COUNT: usize = 1300;

/// Says `count` messages `p0`, `p1`, ... as fast as the server takes them;
/// returns their ids.
async fn burst(c: &mut Client, count: usize) -> Vec<u64> {
    let mut said = Vec::new();
    for chunk in 0..count.div_ceil(100) {
        let mut bytes = Vec::new();
        for i in chunk * 100..(chunk * 100 + 100).min(count) {
            let say = map(&[("type", "say".into()), ("text", format!("p{i}").into())]);
            bytes.extend(frame_of(&say));
        }
        c.send_raw(&bytes).await;
        while said.len() < (chunk * 100 + 100).min(count) {
            said.push(c.next_message().await["id"].as_u64().unwrap());
        }
    }
    for pair in said.windows(2) {
        assert_eq!(pair[1], pair[0] + 1);
    }
    said
}

#[tokio::test]
async fn pages_past_memory_come_from_the_store_without_gaps_or_repeats() {
    let _heavy = crate::heavy().await;
    let dir = TempDir::new("pages");
    let s = TestServer::start(|c| {
        sqlite(c, &dir);
        unlimited(c);
    })
    .await;
    let (mut ann, _, _) = join_with(s.addr, "ann", &["history"]).await;
    let said = burst(&mut ann, COUNT).await;
    // Pages below the memory window come from the store, which holds a
    // message at the latest `store_flush` (100 ms) after its delivery: wait
    // that long, with room for the commit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for limit in [200, 77, 1000] {
        let (log, _) = whole_log(&mut ann, limit).await;
        let got: Vec<u64> = log.iter().map(|m| m["id"].as_u64().unwrap()).collect();
        assert_eq!(
            got.len(),
            said.len(),
            "limit {limit}: every message once, across memory and the store"
        );
        assert_eq!(got, said, "limit {limit}");
        for (i, m) in log.iter().enumerate() {
            assert_eq!(m["text"].as_str(), Some(format!("p{i}").as_str()), "{m}");
            assert_eq!(m["from"].as_str(), Some("ann"));
            assert!(m["ts"].as_u64().is_some_and(|ts| ts > 0));
        }
    }
    // One page across the boundary between the store and memory.
    let boundary = said[COUNT - 1024];
    let page = ask_history(&mut ann, Some((boundary + 5).into()), Some(40.into())).await;
    let expect: Vec<u64> = (boundary + 5 - 40..boundary + 5).collect();
    assert_eq!(ids(&page), expect);
    assert_eq!(page["more"].as_bool(), Some(true));
    s.stop().await;
}

#[tokio::test]
async fn a_page_past_memory_during_a_flush_never_ends_the_log_early() {
    let _heavy = crate::heavy().await;
    let dir = TempDir::new("burst");
    let s = TestServer::start(|c| {
        sqlite(c, &dir);
        unlimited(c);
        // The whole burst is delivered before its first commit.
        c.store_flush = Duration::from_secs(2);
    })
    .await;
    let (mut ann, _, _) = join_with(s.addr, "ann", &["history"]).await;
    let said = burst(&mut ann, COUNT).await;
    // The oldest message still in memory, and the ten before it, which
    // were delivered but are not committed yet.
    let oldest_in_memory = COUNT - 1024;
    let page = ask_history(
        &mut ann,
        Some(said[oldest_in_memory].into()),
        Some(10.into()),
    )
    .await;
    match page["type"].as_str() {
        // The store cannot answer yet: the client may ask again.
        Some("error") => assert_eq!(page["code"].as_str(), Some("unavailable"), "{page}"),
        _ => assert_eq!(
            ids(&page),
            said[oldest_in_memory - 10..oldest_in_memory],
            "delivered messages missing from a page, which says more = {}",
            page["more"]
        ),
    }
    s.stop().await;
}

#[tokio::test]
async fn whispers_never_enter_the_log() {
    let s = TestServer::start(|_| {}).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(s.addr, "bob", CHAT).await;
    ann.send_type(
        "whisper",
        &[("to", "bob".into()), ("text", "secret".into())],
    )
    .await;
    bob.recv_until(crate::support::is_type("whisper")).await;
    ann.recv_until(crate::support::is_type("whisper")).await;
    ann.say("public").await;
    ann.next_message().await;
    let (mut cid, _, history) = join_with(s.addr, "cid", &["history"]).await;
    assert_eq!(texts(&history.unwrap()), ["public"]);
    let page = ask_history(&mut cid, None, None).await;
    assert_eq!(texts(&page), ["public"]);
    s.stop().await;
}

#[tokio::test]
async fn attachments_are_in_the_history_and_survive_a_restart() {
    let dir = TempDir::new("attached");
    let config = |c: &mut anteroom_broker::config::Config| {
        web(c);
        sqlite(c, &dir);
    };
    let s = TestServer::start(config).await;
    let (mut ann, welcome, _) = join_with(s.addr, "ann", CHAT).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let file = upload_ok(s.web_addr.unwrap(), &token(&welcome), "data.bin", &bytes).await;
    let url = file["url"].as_str().unwrap().to_string();
    ann.send_type(
        "say",
        &[
            ("text", "see this".into()),
            ("attachment", url.as_str().into()),
        ],
    )
    .await;
    ann.next_message().await;
    ann.say("plain").await;
    ann.next_message().await;

    let check = |history: &Value| {
        let m = &messages(history)[0];
        assert_eq!(m["text"].as_str(), Some("see this"));
        let a = &m["attachment"];
        assert_eq!(a["url"].as_str(), Some(url.as_str()), "{m}");
        assert_eq!(a["name"].as_str(), file["name"].as_str());
        assert_eq!(a["size"].as_u64(), Some(1000));
        assert_eq!(a["mime"].as_str(), file["mime"].as_str());
        let plain = &messages(history)[1];
        assert!(!crate::kit::has_key(plain, "attachment"), "{plain}");
    };
    let (mut bob, _, history) = join_with(s.addr, "bob", &["history"]).await;
    check(&history.unwrap());
    check(&ask_history(&mut bob, None, None).await);
    drop((ann, bob));
    s.stop().await;

    let s = TestServer::start(config).await;
    let (mut cid, _, history) = join_with(s.addr, "cid", &["history", "files"]).await;
    check(&history.unwrap());
    check(&ask_history(&mut cid, None, None).await);
    let got = crate::kit::get(s.web_addr.unwrap(), &url).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, bytes, "the file survives the restart");
    s.stop().await;
}
