//! `presence_batch`: batched joins and leaves for the members that ask,
//! while version-1 members in the same room see each one.

use std::time::{Duration, Instant};

use rmpv::Value;

use crate::kit::{hello_with, join_with, string_list};
use crate::support::{Client, TestServer};

fn left_names(presence: &Value) -> Vec<(String, String)> {
    presence["left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn batches_for_the_ones_that_ask_single_events_for_the_others() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| c.presence_interval = Duration::from_millis(800)).await;
    let (mut ann, welcome, _) = join_with(s.addr, "ann", &["presence_batch"]).await;
    assert!(string_list(&welcome["features"]).contains(&"presence_batch".to_string()));
    let mut bob = Client::join(s.addr, "bob").await;
    // carl and dee come; dee goes again; eve comes and speaks at once.
    let mut carl = Client::join(s.addr, "carl").await;
    let mut dee = Client::join(s.addr, "dee").await;
    dee.send_type("bye", &[]).await;
    dee.expect_bye("bye").await;
    let mut eve = Client::join(s.addr, "eve").await;
    eve.say("hi").await;

    // The version-1 member sees each event, in order.
    for (ty, name) in [
        ("joined", "carl"),
        ("joined", "dee"),
        ("left", "dee"),
        ("joined", "eve"),
    ] {
        let v = bob.recv_until(|v| v["type"].as_str() != Some("ping")).await;
        assert_eq!(
            (v["type"].as_str(), v["name"].as_str()),
            (Some(ty), Some(name)),
            "{v}"
        );
    }
    assert_eq!(bob.next_message().await["from"].as_str(), Some("eve"));

    // The batch member: one `presence` ahead of eve's first message (bob's
    // join was in an earlier batch or this one), without dee, who came and
    // went; never a `joined` or `left`.
    let mut joined = Vec::new();
    loop {
        let v = ann.recv_until(|v| v["type"].as_str() != Some("ping")).await;
        match v["type"].as_str().unwrap() {
            "presence" => {
                assert!(left_names(&v).is_empty(), "{v}");
                joined.extend(string_list(&v["joined"]));
            }
            "message" => {
                assert_eq!(v["from"].as_str(), Some("eve"));
                break;
            }
            other => panic!("a batch member got `{other}`: {v}"),
        }
    }
    assert_eq!(joined, ["bob", "carl", "eve"]);

    // A lone leave waits for the interval, then comes as one frame.
    let start = Instant::now();
    carl.send_type("bye", &[]).await;
    let v = ann.recv_until(|v| v["type"].as_str() != Some("ping")).await;
    let waited = start.elapsed();
    assert_eq!(v["type"].as_str(), Some("presence"), "{v}");
    assert_eq!(left_names(&v), [("carl".to_string(), "bye".to_string())]);
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(1800),
        "{waited:?}"
    );
    assert_eq!(bob.recv_type("left").await["name"].as_str(), Some("carl"));
    ann.expect_silence(Duration::from_millis(1000)).await;
    s.stop().await;
}

#[tokio::test]
async fn a_member_that_enters_mid_batch_ends_with_the_room() {
    let _serial = crate::serial().await;
    let s = TestServer::start(|c| c.presence_interval = Duration::from_millis(600)).await;
    let (_ann, _, _) = join_with(s.addr, "ann", &["presence_batch"]).await;
    // zed comes, then bea (batched) enters, then zed goes: all in one batch.
    let mut zed = Client::join(s.addr, "zed").await;
    let mut bea = Client::connect(s.addr).await;
    hello_with(&mut bea, "bea", &["presence_batch"]).await;
    let welcome = bea.recv_type("welcome").await;
    assert_eq!(string_list(&welcome["users"]), ["ann", "zed", "bea"]);
    zed.send_type("bye", &[]).await;
    let v = bea.recv_until(|v| v["type"].as_str() != Some("ping")).await;
    assert_eq!(v["type"].as_str(), Some("presence"), "{v}");
    // Applied to what bea was given, left first: the room as it is.
    let mut users = string_list(&welcome["users"]);
    for (name, _) in left_names(&v) {
        users.retain(|u| *u != name);
    }
    for name in string_list(&v["joined"]) {
        if !users.contains(&name) {
            users.push(name);
        }
    }
    assert_eq!(users, ["ann", "bea"]);
    s.stop().await;
}
