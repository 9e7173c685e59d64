//! What every fault test shares: its own `anteroom serve` process with the
//! descriptors it holds at rest, queued clients that check their positions,
//! and the checks that the room and the queue hold exactly the clients
//! still connected.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rmpv::Value;

use crate::support::process::{Running, open_descriptors, spawn};
use crate::support::{Client, frame_of, is_type, map, metric, names, scrape};

/// The faults run one at a time: several of them load both cores on their
/// own (floods, a thousand connections), and their time bounds are about
/// the server, not about sharing the machine with each other.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long an "eventually" condition may take on a busy machine.
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(10);

/// Settings that let one client say as much as a test needs (so no limit
/// on the frames a connection sends either).
pub(crate) const UNLIMITED_RATE: [(&str, &str); 3] = [
    ("ANTEROOM_RATE_LIMIT", "1000000"),
    ("ANTEROOM_RATE_BURST", "1000000"),
    ("ANTEROOM_REQUEST_RATE", "0"),
];

/// A `anteroom serve` process of its own, with the descriptors it holds at rest.
pub(crate) struct Served {
    pub(crate) running: Running,
    pub(crate) pid: u32,
    baseline: usize,
}

impl Served {
    pub(crate) async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut running = spawn(args, env);
        let pid = running.child().id();
        // One scrape first, so whatever the metrics endpoint sets up lazily
        // is part of the baseline.
        scrape(running.metrics_addr).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = open_descriptors(pid);
        assert!(baseline > 0, "cannot read the server's descriptors");
        Served {
            running,
            pid,
            baseline,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// The value of one series, which must exist.
    pub(crate) async fn value(&self, series: &str) -> f64 {
        let body = scrape(self.running.metrics_addr).await;
        metric(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    /// `anteroom_connections` for (handshake, active, waiting).
    async fn connections(&self) -> [f64; 3] {
        let body = scrape(self.running.metrics_addr).await;
        ["handshake", "active", "waiting"].map(|state| {
            metric(&body, &format!("anteroom_connections{{state=\"{state}\"}}")).unwrap_or(f64::NAN)
        })
    }

    /// Waits until `anteroom_connections` is exactly (handshake, active, waiting).
    pub(crate) async fn expect_connections(&self, handshake: usize, active: usize, waiting: usize) {
        let want = [handshake as f64, active as f64, waiting as f64];
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let now = self.connections().await;
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "anteroom_connections (handshake, active, waiting) stayed at {now:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every client is gone: no connection in any state, and the server's
    /// open descriptors are back to their baseline.
    pub(crate) async fn expect_clean(&self) {
        self.expect_connections(0, 0, 0).await;
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let open = open_descriptors(self.pid);
            if open <= self.baseline {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "descriptors leaked: {open} open, {} at rest",
                self.baseline
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn connect(&self) -> Client {
        Client::connect(self.addr()).await
    }

    /// Connects with a tiny receive buffer: a client that stops reading backs
    /// up after a few kilobytes.
    pub(crate) async fn connect_small(&self) -> Client {
        Client::connect_small(self.addr()).await
    }

    /// Connects and joins as `name`, expecting a direct `welcome`.
    pub(crate) async fn join(&self, name: &str) -> Client {
        Client::join(self.addr(), name).await
    }

    /// Connects as `name`, expecting to be queued at `position`.
    pub(crate) async fn queue(&self, name: &str, position: u64) -> Waiter {
        Waiter {
            name: name.to_string(),
            client: Client::queue(self.addr(), name, position).await,
            position,
        }
    }
}

/// Waits for the `left` of `name` and returns its reason.
pub(crate) async fn left_reason(c: &mut Client, name: &str) -> String {
    let v = c
        .recv_until(|v| v["type"].as_str() == Some("left") && v["name"].as_str() == Some(name))
        .await;
    v["reason"].as_str().unwrap().to_string()
}

/// Asks member `c` for `who` until the answer is exactly `want` (join order).
/// No answer may list a name twice.
async fn expect_roster(c: &mut Client, want: &[&str]) {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        c.send_type("who", &[]).await;
        let listed = names(&c.recv_until(is_type("users")).await["names"]);
        let unique: HashSet<&String> = listed.iter().collect();
        assert_eq!(
            unique.len(),
            listed.len(),
            "a name listed twice: {listed:?}"
        );
        if listed == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "who answers {listed:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A queued client and the last position it was told.
pub(crate) struct Waiter {
    name: String,
    pub(crate) client: Client,
    position: u64,
}

impl Waiter {
    /// Checks a `queued` frame: positions never go up, and never past `floor`.
    fn told(&mut self, v: &Value, floor: u64) {
        let p = v["position"].as_u64().unwrap();
        assert!(
            p <= self.position,
            "{}'s position went up from {} to {p}",
            self.name,
            self.position
        );
        assert!(p >= floor, "{} was told {p}, ahead of {floor}", self.name);
        assert_eq!(
            v["text"].as_str(),
            Some(
                format!("We are dealing with a large amount of users and you are at {p} in queue")
                    .as_str()
            )
        );
        self.position = p;
    }

    /// Reads position updates until the position is `want`.
    pub(crate) async fn expect_position(&mut self, want: u64) {
        while self.position != want {
            let v = self.client.recv().await;
            match v["type"].as_str().unwrap() {
                "queued" => self.told(&v, want),
                "ping" => {}
                _ => panic!("{} expected a position update, got {v}", self.name),
            }
        }
    }

    /// Reads position updates until the `welcome` of a promotion; returns the
    /// member and the names the welcome lists.
    pub(crate) async fn expect_welcome(mut self) -> (Client, Vec<String>) {
        loop {
            let v = self.client.recv().await;
            match v["type"].as_str().unwrap() {
                "queued" => self.told(&v, 1),
                "ping" => {}
                "welcome" => {
                    assert_eq!(v["name"].as_str(), Some(self.name.as_str()));
                    assert_eq!(
                        v["text"].as_str(),
                        Some("A spot has opened up! You are now connected to the chat.")
                    );
                    return (self.client, names(&v["users"]));
                }
                _ => panic!("{} expected its welcome, got {v}", self.name),
            }
        }
    }
}

/// The room and the queue hold exactly the clients still connected: `who`
/// asked of `asker` (a member) lists exactly `members`, the waiters are told
/// positions 1, 2, ... in their order, and `anteroom_connections` agrees.
pub(crate) async fn expect_consistent(
    s: &Served,
    asker: &mut Client,
    members: &[&str],
    waiters: &mut [Waiter],
    handshaking: usize,
) {
    expect_roster(asker, members).await;
    for (i, w) in waiters.iter_mut().enumerate() {
        w.expect_position(i as u64 + 1).await;
    }
    s.expect_connections(handshaking, members.len(), waiters.len())
        .await;
}

pub(crate) fn say_frame(text: &str) -> Vec<u8> {
    frame_of(&map(&[("type", "say".into()), ("text", text.into())]))
}
