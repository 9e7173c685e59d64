//! One room, one order and one queue, whatever transport each client uses.

use rmpv::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::kit::{self, Scratch};
use crate::support::{Client, names};

const SPOT_OPENED: &str = "A spot has opened up! You are now connected to the chat.";

/// One `message` as every member must see it.
type Line = (u64, String, String);

/// The next `count` messages a client gets, presence skipped.
async fn messages<S>(c: &mut Client<S>, count: usize) -> Vec<Line>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut seen = Vec::new();
    while seen.len() < count {
        let v = c.next_message().await;
        seen.push(line(&v));
    }
    seen
}

fn line(v: &Value) -> Line {
    (
        v["id"].as_u64().expect("an id"),
        v["from"].as_str().unwrap().to_string(),
        v["text"].as_str().unwrap().to_string(),
    )
}

/// The `queued` frames a client gets until it reaches `want`; positions
/// may be conflated but never go up.
async fn wait_for_position<S>(c: &mut Client<S>, name: &str, want: u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut last = u64::MAX;
    while last != want {
        let q = c.recv_type("queued").await;
        let p = q["position"].as_u64().unwrap();
        assert!(p <= last, "{name}: position went up from {last} to {p}");
        assert!(
            p >= want,
            "{name}: position {p} is ahead of the truth {want}"
        );
        last = p;
    }
}

#[tokio::test]
async fn tcp_tls_and_quic_members_share_one_order_and_one_queue() {
    const EACH: usize = 30;
    let dir = Scratch::new("mixed");
    let s = kit::start(&dir, |c| {
        c.max_active = 3;
        c.rate_limit = 1000.0;
        c.rate_burst = 1000;
        c.request_rate = 0.0;
    })
    .await;
    let url = kit::urls(&s);
    let trust = || kit::trust(&dir);

    // The room: one member per transport.
    let mut tcp_ann = s.join("tcp-ann").await;
    let mut tls_bob = kit::join(&url.tls, trust(), "tls-bob").await;
    let mut quic_cid = kit::dial(&url.quic, trust()).await;
    quic_cid.hello("quic-cid").await;
    let w = quic_cid.recv_type("welcome").await;
    assert_eq!(names(&w["users"]), ["tcp-ann", "tls-bob", "quic-cid"]);
    assert_eq!(
        tcp_ann.recv_type("joined").await["name"].as_str(),
        Some("tls-bob")
    );
    assert_eq!(
        tcp_ann.recv_type("joined").await["name"].as_str(),
        Some("quic-cid")
    );
    assert_eq!(
        tls_bob.recv_type("joined").await["name"].as_str(),
        Some("quic-cid")
    );

    // Three senders, taking turns: the server merges what arrives over
    // three transports, and every member sees the one order it chose.
    for i in 0..EACH {
        tcp_ann.say(&format!("tcp-ann {i}")).await;
        tls_bob.say(&format!("tls-bob {i}")).await;
        quic_cid.say(&format!("quic-cid {i}")).await;
    }
    let total = 3 * EACH;
    let seen_ann = messages(&mut tcp_ann, total).await;
    let seen_bob = messages(&mut tls_bob, total).await;
    let seen_cid = messages(&mut quic_cid, total).await;
    assert_eq!(
        seen_ann, seen_bob,
        "TCP and TLS members saw different orders"
    );
    assert_eq!(
        seen_ann, seen_cid,
        "TCP and QUIC members saw different orders"
    );
    assert!(
        seen_ann.windows(2).all(|w| w[0].0 < w[1].0),
        "ids not strictly increasing"
    );
    for sender in ["tcp-ann", "tls-bob", "quic-cid"] {
        let texts: Vec<&str> = seen_ann
            .iter()
            .filter(|(_, from, _)| from == sender)
            .map(|(_, _, text)| text.as_str())
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{sender} {i}")).collect();
        assert_eq!(texts, sent, "{sender}'s messages out of order or missing");
    }

    // The queue: QUIC, then TCP, then TLS.
    let mut quic_dan = kit::queue(&url.quic, trust(), "quic-dan", 1).await;
    let mut tcp_eve = s.queue("tcp-eve", 2).await;
    let mut tls_fay = kit::queue(&url.tls, trust(), "tls-fay", 3).await;

    // A TLS member leaves: the QUIC head is promoted.
    tls_bob.send_type("bye", &[]).await;
    tls_bob.expect_bye("bye").await;
    let w = quic_dan.recv_type("welcome").await;
    assert_eq!(w["text"].as_str(), Some(SPOT_OPENED));
    assert_eq!(names(&w["users"]), ["tcp-ann", "quic-cid", "quic-dan"]);
    wait_for_position(&mut tcp_eve, "tcp-eve", 1).await;
    wait_for_position(&mut tls_fay, "tls-fay", 2).await;

    // A QUIC member vanishes: the TCP head is promoted.
    drop(quic_cid);
    let w = tcp_eve.recv_type("welcome").await;
    assert_eq!(w["text"].as_str(), Some(SPOT_OPENED));
    assert_eq!(names(&w["users"]), ["tcp-ann", "quic-dan", "tcp-eve"]);
    wait_for_position(&mut tls_fay, "tls-fay", 1).await;

    // The TCP member leaves: the TLS client, last in line, gets its seat.
    tcp_eve.send_type("bye", &[]).await;
    tcp_eve.expect_bye("bye").await;
    let w = tls_fay.recv_type("welcome").await;
    assert_eq!(w["text"].as_str(), Some(SPOT_OPENED));
    assert_eq!(names(&w["users"]), ["tcp-ann", "quic-dan", "tls-fay"]);

    // Who came and went, as a member saw it: arrival order, across
    // transports.
    let mut changes = Vec::new();
    while changes.len() < 6 {
        let v = tcp_ann.recv().await;
        match v["type"].as_str().unwrap() {
            "joined" => changes.push(format!("+{}", v["name"].as_str().unwrap())),
            "left" => changes.push(format!(
                "-{} ({})",
                v["name"].as_str().unwrap(),
                v["reason"].as_str().unwrap()
            )),
            "ping" => {}
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(
        changes,
        [
            "-tls-bob (bye)",
            "+quic-dan",
            "-quic-cid (disconnected)",
            "+tcp-eve",
            "-tcp-eve (bye)",
            "+tls-fay",
        ]
    );

    // The promoted members talk across transports.
    tls_fay.say("fay over TLS").await;
    quic_dan.say("dan over QUIC").await;
    let fay = messages(&mut tls_fay, 2).await;
    let dan = messages(&mut quic_dan, 2).await;
    let ann = messages(&mut tcp_ann, 2).await;
    assert_eq!(fay, dan);
    assert_eq!(fay, ann);
    let mut texts: Vec<&str> = fay.iter().map(|(_, _, t)| t.as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["dan over QUIC", "fay over TLS"]);
    // Gone before the shutdown, which would otherwise give each QUIC client
    // a moment to close after its `bye`.
    drop((tcp_ann, quic_dan, tls_fay));
    s.stop().await;
}
