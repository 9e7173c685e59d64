//! Several nodes serving one room over a real `redis-server` started by the
//! test on loopback: one capacity and one FIFO queue, one message order,
//! names unique across nodes, `who` and whispers across nodes, a node's
//! death, Redis lost and back, a node that disagrees on `max_active`.

mod support;

use std::time::Duration;

use anteroom_broker::config::Config;
use anteroom_broker::server::Server;
use rmpv::Value;
use support::{Client, TestServer, names, redis_server};

/// Starts a node of the cluster at `url`, named `node`.
async fn node(url: &str, node: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let url = url.to_string();
    let node = node.to_string();
    TestServer::start(move |c| {
        c.cluster_redis = Some(url);
        c.node_id = node;
        c.cluster_lease = Duration::from_secs(2);
        adjust(c);
    })
    .await
}

async fn nodes(url: &str, count: usize, max_active: usize) -> Vec<TestServer> {
    let mut all = Vec::new();
    for i in 0..count {
        all.push(node(url, &format!("n{i}"), |c| c.max_active = max_active).await);
    }
    all
}

/// Sends `hello` asking for `features`.
async fn hello_with(c: &mut Client, name: &str, features: &[&str]) {
    let features: Vec<Value> = features.iter().map(|f| Value::from(*f)).collect();
    c.send_type(
        "hello",
        &[("name", name.into()), ("features", Value::Array(features))],
    )
    .await;
}

/// Reads until the `joined` of `name`.
async fn saw_join(c: &mut Client, name: &str) {
    c.recv_until(|v| v["type"].as_str() == Some("joined") && v["name"].as_str() == Some(name))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_capacity_and_one_fifo_queue_across_nodes() {
    let Some(redis) = redis_server() else { return };
    let n = nodes(&redis.url(), 3, 2).await;
    let mut ann = n[0].join("ann").await;
    let mut bob = n[1].connect().await;
    bob.hello("bob").await;
    let welcome = bob.recv_type("welcome").await;
    assert_eq!(names(&welcome["users"]), ["ann", "bob"], "{welcome}");
    saw_join(&mut ann, "bob").await;
    // The room is full across the nodes: the next two queue, in order,
    // whichever node they came to.
    let mut cid = n[2].queue("cid", 1).await;
    let mut dan = n[0].queue("dan", 2).await;
    // A departure on one node promotes the head of the queue on another.
    ann.send_type("bye", &[]).await;
    let welcome = cid.recv_type("welcome").await;
    assert_eq!(names(&welcome["users"]), ["bob", "cid"], "{welcome}");
    let moved = dan.recv_type("queued").await;
    assert_eq!(moved["position"].as_u64(), Some(1), "{moved}");
    let left = bob.recv_until(|v| v["type"].as_str() == Some("left")).await;
    assert_eq!(left["name"].as_str(), Some("ann"));
    saw_join(&mut bob, "cid").await;
    // Every node counts the cluster's live nodes.
    for node in &n {
        support::wait_metric(node.metrics_addr, "anteroom_cluster_nodes", |v| v == 3.0).await;
    }
    for node in n {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_max_waiting_across_nodes() {
    let Some(redis) = redis_server() else { return };
    let mut n = Vec::new();
    for i in 0..3 {
        n.push(
            node(&redis.url(), &format!("n{i}"), |c| {
                c.max_active = 1;
                c.max_waiting = 1;
            })
            .await,
        );
    }
    let _ann = n[0].join("ann").await;
    let _bob = n[1].queue("bob", 1).await;
    let mut cid = n[2].connect().await;
    cid.hello("cid").await;
    let bye = cid.recv_type("bye").await;
    assert_eq!(bye["reason"].as_str(), Some("server_full"), "{bye}");
    // Turned away, its name is free again: once the queue has room, the
    // same name queues.
    drop(_bob);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = n[2].connect().await;
        again.hello("cid").await;
        let answer = again.recv().await;
        if answer["type"].as_str() == Some("queued") {
            assert_eq!(answer["position"].as_u64(), Some(1), "{answer}");
            break;
        }
        assert_eq!(answer["reason"].as_str(), Some("server_full"), "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never had room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in n {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_every_node_see_one_message_order() {
    let Some(redis) = redis_server() else { return };
    let n = nodes(&redis.url(), 3, 10).await;
    let mut members = Vec::new();
    for (i, node) in n.iter().enumerate() {
        members.push(node.join(&format!("m{i}")).await);
    }
    // Everyone has seen everyone join before the messages start.
    let count = members.len();
    for (i, m) in members.iter_mut().enumerate() {
        for j in i + 1..count {
            saw_join(m, &format!("m{j}")).await;
        }
    }
    for round in 0..20 {
        for m in members.iter_mut() {
            m.say(&format!("r{round}")).await;
        }
    }
    let mut seen: Vec<Vec<(String, String, u64)>> = Vec::new();
    for m in members.iter_mut() {
        let mut got = Vec::new();
        while got.len() < 20 * count {
            let v = m
                .recv_until(|v| v["type"].as_str() == Some("message"))
                .await;
            got.push((
                v["from"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
                v["id"].as_u64().unwrap(),
            ));
        }
        seen.push(got);
    }
    for other in &seen[1..] {
        assert_eq!(&seen[0], other, "two nodes delivered different orders");
    }
    let ids: Vec<u64> = seen[0].iter().map(|m| m.2).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    for node in n {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_across_nodes_and_who_and_whispers_span_them() {
    let Some(redis) = redis_server() else { return };
    let n = nodes(&redis.url(), 2, 10).await;
    let mut ann = n[0].connect().await;
    hello_with(&mut ann, "Ann", &["whisper"]).await;
    ann.recv_type("welcome").await;
    let mut other = n[1].connect().await;
    other.hello("ANN").await;
    let refused = other.recv_type("error").await;
    assert_eq!(refused["code"].as_str(), Some("name_taken"), "{refused}");
    // The same connection may try another name.
    hello_with(&mut other, "bob", &["whisper"]).await;
    other.recv_type("welcome").await;
    saw_join(&mut ann, "bob").await;
    other.send_type("who", &[]).await;
    let users = other.recv_type("users").await;
    let mut listed = names(&users["names"]);
    listed.sort();
    assert_eq!(listed, ["Ann", "bob"]);
    // A whisper crosses to the other node, and the sender gets its copy.
    other
        .send_type("whisper", &[("to", "ann".into()), ("text", "psst".into())])
        .await;
    let copy = other.recv_type("whisper").await;
    assert_eq!(
        (copy["to"].as_str(), copy["text"].as_str()),
        (Some("Ann"), Some("psst"))
    );
    let got = ann.recv_type("whisper").await;
    assert_eq!(
        (got["from"].as_str(), got["text"].as_str()),
        (Some("bob"), Some("psst"))
    );
    other
        .send_type("whisper", &[("to", "nobody".into()), ("text", "x".into())])
        .await;
    let refused = other.recv_type("error").await;
    assert_eq!(refused["code"].as_str(), Some("no_such_user"), "{refused}");
    for node in n {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_disagrees_on_max_active_does_not_start() {
    let Some(redis) = redis_server() else { return };
    let first = node(&redis.url(), "n0", |c| c.max_active = 5).await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        web_listen: None,
        cluster_redis: Some(redis.url()),
        node_id: "n1".into(),
        max_active: 6,
        ..Config::default()
    };
    let refused = Server::bind(config.clone()).await.err().expect("refused");
    let message = refused.to_string();
    assert!(message.contains("max_active"), "{message}");
    config.max_active = 5;
    let agreed = Server::bind(config).await;
    assert!(agreed.is_ok(), "the same max_active is accepted");
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_stops_admission_until_it_is_back() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let n = nodes(&redis.url(), 2, 10).await;
    let mut ann = n[0].join("ann").await;
    let (status, _) = support::http_get(n[0].metrics_addr, "/readyz").await;
    assert_eq!(status, 200);
    let mut said_before = 0;
    for i in 0..5 {
        ann.say(&format!("before {i}")).await;
        let m = ann
            .recv_until(|v| v["type"].as_str() == Some("message"))
            .await;
        said_before = m["id"].as_u64().unwrap();
    }
    redis.kill();
    let bye = ann.recv_type("bye").await;
    assert_eq!(bye["reason"].as_str(), Some("shutdown"), "{bye}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = support::http_get(n[1].metrics_addr, "/readyz").await;
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut refused = n[1].connect().await;
    refused.hello("bob").await;
    let bye = refused.recv_type("bye").await;
    assert_eq!(bye["reason"].as_str(), Some("shutdown"), "{bye}");
    // Redis comes back empty: the nodes join again, under a new epoch.
    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for node in &n {
        loop {
            let (status, _) = support::http_get(node.metrics_addr, "/readyz").await;
            if status == 200 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not ready again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut ann = n[0].join("ann").await;
    let mut bob = n[1].connect().await;
    bob.hello("bob").await;
    let welcome = bob.recv_type("welcome").await;
    assert_eq!(names(&welcome["users"]), ["ann", "bob"], "{welcome}");
    saw_join(&mut ann, "bob").await;
    // Nothing repeated or reordered: ids go on after those delivered
    // before Redis was lost, and each message arrives once.
    for i in 0..5 {
        ann.say(&format!("after {i}")).await;
    }
    let mut ids = vec![said_before];
    for i in 0..5 {
        let m = bob
            .recv_until(|v| v["type"].as_str() == Some("message"))
            .await;
        assert_eq!(m["text"].as_str(), Some(format!("after {i}").as_str()));
        ids.push(m["id"].as_u64().unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for node in n {
        node.stop().await;
    }
}

#[test]
fn a_node_whose_max_active_differs_exits_naming_the_key() {
    let Some(redis) = redis_server() else { return };
    let url = redis.url();
    let first = support::process::spawn(
        &[],
        &[
            ("ANTEROOM_CLUSTER_REDIS", url.as_str()),
            ("ANTEROOM_NODE_ID", "n0"),
            ("ANTEROOM_MAX_ACTIVE", "5"),
        ],
    );
    let out = support::process::command(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--web-listen",
            "",
        ],
        &[
            ("ANTEROOM_CLUSTER_REDIS", url.as_str()),
            ("ANTEROOM_NODE_ID", "n1"),
            ("ANTEROOM_MAX_ACTIVE", "6"),
        ],
    )
    .output()
    .expect("run anteroom");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a disagreeing node started");
    assert!(stderr.contains("max_active"), "{stderr}");
    drop(first);
}

#[test]
fn a_killed_node_frees_its_seats_and_places_within_the_lease() {
    let Some(redis) = redis_server() else { return };
    let url = redis.url();
    let env = |node: &'static str| {
        vec![
            ("ANTEROOM_CLUSTER_REDIS", url.clone()),
            ("ANTEROOM_NODE_ID", node.to_string()),
            ("ANTEROOM_CLUSTER_LEASE", "2s".to_string()),
            ("ANTEROOM_MAX_ACTIVE", "2".to_string()),
            ("ANTEROOM_STORE", "".to_string()),
        ]
    };
    let spawn = |node: &'static str| {
        let env = env(node);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        support::process::spawn(&[], &env)
    };
    let survivor = spawn("n0");
    let mut doomed = spawn("n1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ann = Client::join(survivor.addr, "ann").await;
        let mut bob = Client::connect(doomed.addr).await;
        bob.hello("bob").await;
        bob.recv_type("welcome").await;
        saw_join(&mut ann, "bob").await;
        // The room is full: one waits on the doomed node, one on the other.
        let _queued_there = Client::queue(doomed.addr, "cid", 1).await;
        let mut dan = Client::queue(survivor.addr, "dan", 2).await;
        let killed = tokio::time::Instant::now();
        let child = doomed.child();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let left = ann.recv_until(|v| v["type"].as_str() == Some("left")).await;
        assert_eq!(
            (left["name"].as_str(), left["reason"].as_str()),
            (Some("bob"), Some("disconnected"))
        );
        // Within the lease and a second.
        assert!(killed.elapsed() < Duration::from_secs(3) + Duration::from_millis(900));
        // The dead node's queued client is gone too: the survivor's is next.
        let welcome = dan.recv_type("welcome").await;
        assert_eq!(names(&welcome["users"]), ["ann", "dan"], "{welcome}");
    });
}

/// A member that stays on the node never killed: every message frame it
/// reads, in order.
struct Witness {
    client: Client,
    ids: Vec<u64>,
    texts: Vec<String>,
}

#[test]
fn a_soak_with_random_node_kills_keeps_one_order_and_loses_nothing_delivered() {
    let Some(redis) = redis_server() else { return };
    let url = redis.url();
    let spawn = |node: String| {
        let env = [
            ("ANTEROOM_CLUSTER_REDIS", url.clone()),
            ("ANTEROOM_NODE_ID", node),
            ("ANTEROOM_CLUSTER_LEASE", "2s".to_string()),
            ("ANTEROOM_MAX_ACTIVE", "12".to_string()),
            ("ANTEROOM_RATE_LIMIT", "1000".to_string()),
            ("ANTEROOM_RATE_BURST", "1000".to_string()),
            ("ANTEROOM_JOIN_RATE", "0".to_string()),
            ("ANTEROOM_REQUEST_RATE", "0".to_string()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        support::process::spawn(&[], &env)
    };
    let steady = spawn("steady".into());
    let mut others = vec![spawn("a".into()), spawn("b".into())];
    let mut rng = fastrand::Rng::with_seed(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut witnesses = Vec::new();
        for i in 0..3 {
            let client = Client::join(steady.addr, &format!("w{i}")).await;
            witnesses.push(Witness {
                client,
                ids: Vec::new(),
                texts: Vec::new(),
            });
        }
        // Everyone sees the witnesses joined before counting starts.
        let count = witnesses.len();
        for (i, w) in witnesses.iter_mut().enumerate() {
            for j in i + 1..count {
                saw_join(&mut w.client, &format!("w{j}")).await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(16);
        let mut round = 0u64;
        let mut said = 0u64;
        while tokio::time::Instant::now() < deadline {
            round += 1;
            // Chatters on the nodes that may die, each a few messages.
            let mut chatters = Vec::new();
            for (n, node) in others.iter().enumerate() {
                let addr = node.addr;
                let name = format!("c{round}n{n}");
                chatters.push(tokio::spawn(async move {
                    let mut c = Client::connect(addr).await;
                    c.hello(&name).await;
                    let first = tokio::time::timeout(Duration::from_secs(5), c.try_recv()).await;
                    if let Ok(Some(v)) = first
                        && v["type"].as_str() == Some("welcome")
                    {
                        for k in 0..5 {
                            c.say(&format!("{name}-{k}")).await;
                        }
                    }
                    c
                }));
            }
            let speaker = round as usize % count;
            witnesses[speaker]
                .client
                .say(&format!("w{speaker}-{round}"))
                .await;
            said += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Now and then a node dies and another takes its place.
            if rng.u8(..4) == 0 {
                let victim = rng.usize(..others.len());
                let mut dead = others.remove(victim);
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(dead.child().id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
                drop(dead);
                others.push(spawn(format!("r{round}")));
            }
            for chatter in chatters {
                let _ = chatter.await;
            }
        }
        // Let the last messages arrive, then read everything each witness
        // was sent: frames until a quiet second.
        for w in witnesses.iter_mut() {
            loop {
                let next =
                    tokio::time::timeout(Duration::from_millis(1500), w.client.try_recv()).await;
                let Ok(Some(v)) = next else { break };
                match v["type"].as_str() {
                    Some("message") => {
                        w.ids.push(v["id"].as_u64().expect("an id"));
                        w.texts.push(v["text"].as_str().unwrap().to_string());
                    }
                    Some("joined" | "left" | "ping" | "presence") => {}
                    other => panic!("a witness was sent {other:?}: {v}"),
                }
            }
        }
        let first = &witnesses[0];
        assert!(
            first.ids.windows(2).all(|p| p[0] < p[1]),
            "ids out of order: {:?}",
            first.ids
        );
        for w in &witnesses[1..] {
            assert_eq!(
                w.ids, first.ids,
                "two witnesses were sent different messages"
            );
            assert_eq!(w.texts, first.texts);
        }
        // Every witness's own messages were delivered.
        let own = first.texts.iter().filter(|t| t.starts_with('w')).count() as u64;
        assert_eq!(own, said, "a witness's message was lost");
        println!(
            "{round} rounds, {} messages delivered to every witness",
            first.ids.len()
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_postgres_log_gets_each_message_once_and_ids_never_repeat() {
    let Some(mut redis) = redis_server() else {
        return;
    };
    let Some(pg) = support::postgres_server() else {
        return;
    };
    let store = pg.database("chat");
    let with_store = |store: String| {
        move |c: &mut Config| {
            c.store = Some(anteroom_broker::config::StoreKind::Postgres(store));
        }
    };
    let a = node(&redis.url(), "a", with_store(store.clone())).await;
    let b = node(&redis.url(), "b", with_store(store.clone())).await;
    let mut ann = a.join("ann").await;
    let mut bob = b.join("bob").await;
    saw_join(&mut ann, "bob").await;
    for i in 0..3 {
        ann.say(&format!("a{i}")).await;
        bob.say(&format!("b{i}")).await;
    }
    for _ in 0..6 {
        bob.recv_until(|v| v["type"].as_str() == Some("message"))
            .await;
    }
    let count = "SELECT count(*) || '/' || count(DISTINCT id) FROM anteroom_messages";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pg.sql("chat", count) != "6/6" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shared log holds {}",
            pg.sql("chat", count)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last: u64 = pg
        .sql("chat", "SELECT max(id) FROM anteroom_messages")
        .parse()
        .unwrap();
    a.stop().await;
    b.stop().await;
    // Redis starts again empty; a node of the new cluster goes on after the
    // ids the shared log holds.
    redis.restart();
    let c = node(&redis.url(), "c", with_store(store)).await;
    let mut cid = c.join("cid").await;
    cid.say("after").await;
    let m = cid
        .recv_until(|v| v["type"].as_str() == Some("message"))
        .await;
    assert!(m["id"].as_u64().unwrap() > last, "an id given again: {m}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_later_serves_the_history_the_log_holds() {
    let Some(redis) = redis_server() else { return };
    let a = node(&redis.url(), "a", |_| {}).await;
    let mut ann = a.join("ann").await;
    for text in ["one", "two", "three"] {
        ann.say(text).await;
        ann.recv_until(|v| v["type"].as_str() == Some("message"))
            .await;
    }
    let b = node(&redis.url(), "b", |_| {}).await;
    let mut bob = b.connect().await;
    hello_with(&mut bob, "bob", &["history"]).await;
    bob.recv_type("welcome").await;
    let history = bob.recv_type("history").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"], "{history}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_repeats_and_reorders_nothing() {
    use tokio::io::AsyncWriteExt;
    let Some(mut redis) = redis_server() else {
        return;
    };
    let n = nodes(&redis.url(), 2, 10).await;
    let (writer_at, reader_at) = (n[0].addr, n[1].addr);
    let stop = tokio::time::Instant::now() + Duration::from_secs(10);
    // A member of one node says something every 5 ms, coming back each time
    // it is sent away.
    let writer = tokio::spawn(async move {
        let mut said = 0u64;
        for k in 0.. {
            if tokio::time::Instant::now() >= stop {
                break;
            }
            let mut c = Client::connect(writer_at).await;
            c.hello(&format!("writer{k}")).await;
            let first = tokio::time::timeout(Duration::from_secs(2), c.try_recv()).await;
            if !matches!(first, Ok(Some(ref v)) if v["type"].as_str() == Some("welcome")) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            while tokio::time::Instant::now() < stop {
                let frame = support::frame_of(&support::map(&[
                    ("type", "say".into()),
                    ("text", format!("m{said}").into()),
                ]));
                if c.stream.write_all(&frame).await.is_err() {
                    break;
                }
                said += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        said
    });
    // A member of the other node reads, coming back too.
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        for k in 0.. {
            if tokio::time::Instant::now() >= stop {
                break;
            }
            let mut c = Client::connect(reader_at).await;
            c.hello(&format!("reader{k}")).await;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), c.try_recv()).await;
                match next {
                    Ok(Some(v)) if v["type"].as_str() == Some("message") => {
                        ids.push((v["id"].as_u64().unwrap(), tokio::time::Instant::now()));
                    }
                    Ok(Some(v)) if v["type"].as_str() == Some("bye") => break,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) if tokio::time::Instant::now() >= stop => break,
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    let restarted = tokio::time::Instant::now();
    let said = writer.await.unwrap();
    let read = reader.await.unwrap();
    let after = read.iter().filter(|(_, at)| *at > restarted).count();
    let ids: Vec<u64> = read.iter().map(|(id, _)| *id).collect();
    assert!(said > 60, "the writer said only {said}");
    assert!(after > 20, "only {after} messages read after the restart");
    assert!(
        ids.len() > after + 20,
        "only {} read before it",
        ids.len() - after
    );
    let repeated = ids.windows(2).find(|w| w[0] >= w[1]);
    assert_eq!(repeated, None, "ids repeated or out of order");
    println!(
        "{said} said; {} read, {after} after the restart; last id {:?}",
        ids.len(),
        ids.last()
    );
    for node in n {
        node.stop().await;
    }
}
