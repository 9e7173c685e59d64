//! Several hundred clients over real sockets: every member receives every
//! message exactly once, all in the same order, each sender's in send order,
//! and never a message before its sender's join, even from clients that
//! join and speak while the room is busy.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use support::{Client, TestServer};

const MEMBERS: usize = 300;
const SENDERS: usize = 10;
const PER_SENDER: usize = 20;
const LATE: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_members_see_every_message_once_in_one_order() {
    let s = TestServer::start(|c| c.max_active = MEMBERS + LATE).await;
    let mut clients = Vec::new();
    for i in 0..MEMBERS {
        let mut c = Client::connect(s.addr).await;
        c.hello(&format!("user{i:03}")).await;
        clients.push(c);
    }
    let total = SENDERS * PER_SENDER + LATE;
    // Everyone starts talking once the whole first group is in the room.
    let barrier = Arc::new(tokio::sync::Barrier::new(MEMBERS + 1));
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let welcome = c.recv_type("welcome").await;
            let mut known: HashSet<String> = welcome["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_string())
                .collect();
            while known.len() < MEMBERS {
                let v = c.recv_type("joined").await;
                known.insert(v["name"].as_str().unwrap().to_string());
            }
            barrier.wait().await;
            if i < SENDERS {
                for n in 0..PER_SENDER {
                    c.say(&format!("{i}:{n}")).await;
                }
            }
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let v = c.recv().await;
                match v["type"].as_str().unwrap() {
                    "joined" => {
                        known.insert(v["name"].as_str().unwrap().to_string());
                    }
                    "message" => {
                        let from = v["from"].as_str().unwrap().to_string();
                        assert!(
                            known.contains(&from),
                            "message from {from} before its joined"
                        );
                        seen.push((
                            v["id"].as_u64().unwrap(),
                            v["text"].as_str().unwrap().to_string(),
                        ));
                    }
                    "ping" => {}
                    other => panic!("unexpected {other}"),
                }
            }
            (c, seen)
        }));
    }
    barrier.wait().await;
    // Late joiners arrive mid-flood and speak at once.
    let mut late = Vec::new();
    for j in 0..LATE {
        let addr = s.addr;
        late.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let name = format!("late{j:02}");
            c.hello(&name).await;
            c.recv_type("welcome").await;
            c.say(&name).await;
            let mut ids = Vec::new();
            loop {
                let v = c.recv().await;
                if v["type"].as_str() == Some("message") {
                    ids.push(v["id"].as_u64().unwrap());
                    if v["text"].as_str() == Some(name.as_str()) {
                        break;
                    }
                }
            }
            (c, ids)
        }));
    }
    let mut orders = Vec::new();
    // Keep every connection open until all members are done reading: a
    // member leaving early would show up as `left` in the others' streams.
    let mut connections = Vec::new();
    for t in tasks {
        let (c, seen) = t.await.unwrap();
        orders.push(seen);
        connections.push(c);
    }
    for t in late {
        let (c, ids) = t.await.unwrap();
        // From its join on, a member misses nothing: its ids are contiguous.
        assert!(
            ids.windows(2).all(|w| w[1] == w[0] + 1),
            "late joiner skipped ids: {ids:?}"
        );
        connections.push(c);
    }
    drop(connections);
    let reference = &orders[0];
    // Exactly once: ids strictly increase and every text appears once.
    assert!(reference.windows(2).all(|w| w[0].0 < w[1].0));
    let texts: HashSet<&String> = reference.iter().map(|(_, t)| t).collect();
    assert_eq!(texts.len(), total);
    for sender in 0..SENDERS {
        let mine: Vec<&String> = reference
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.starts_with(&format!("{sender}:")))
            .collect();
        let expected: Vec<String> = (0..PER_SENDER).map(|n| format!("{sender}:{n}")).collect();
        assert_eq!(
            mine,
            expected.iter().collect::<Vec<_>>(),
            "sender {sender} out of order"
        );
    }
    for (i, order) in orders.iter().enumerate() {
        assert_eq!(order, reference, "member {i} saw a different order");
    }
    s.stop().await;
}
