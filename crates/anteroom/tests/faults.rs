//! Faults against the real server over real sockets: half frames, 4 GiB
//! length prefixes, silent floods, slow consumers, resets in the middle of a
//! read or a write, clients killed while queued or while being promoted,
//! descriptor exhaustion.
//!
//! Every test runs its own `anteroom serve` process, so its metrics and its
//! descriptors are its own. In every case the room and the queue stay
//! consistent (every connected client is in the room or in the queue, once;
//! nobody who left remains), `anteroom_connections` returns to zero in every
//! state once the clients are gone, and the server's open descriptors return
//! to their baseline.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmpv::Value;
use support::process::{BIN, Running, spawn};
use support::{Client, frame_of, http_get, map, metric, read_frame};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The faults run one at a time: several of them load both cores on their
/// own (floods, a thousand connections), and their time bounds are about
/// the server, not about sharing the machine with each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long an "eventually" condition may take on a busy machine.
const EVENTUALLY: Duration = Duration::from_secs(10);

/// Settings that let one client say as much as a test needs.
const UNLIMITED_RATE: [(&str, &str); 2] = [
    ("ANTEROOM_RATE_LIMIT", "1000000"),
    ("ANTEROOM_RATE_BURST", "1000000"),
];

/// Closes with a reset (RST) instead of FIN.
fn reset(client: Client) {
    reset_stream(client.stream);
}

fn reset_stream(stream: TcpStream) {
    let socket = socket2::Socket::from(stream.into_std().unwrap());
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Busy-waits `d`: finer than a timer, for racing two events.
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A `anteroom serve` process of its own, with the descriptors it holds at rest.
struct Served {
    running: Running,
    pid: u32,
    baseline: usize,
}

impl Served {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut running = spawn(args, env);
        let pid = running.child().id();
        // One scrape first, so whatever the metrics endpoint sets up lazily
        // is part of the baseline.
        http_get(running.metrics_addr, "/metrics").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = open_descriptors(pid);
        assert!(baseline > 0, "cannot read the server's descriptors");
        Served {
            running,
            pid,
            baseline,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    async fn scrape(&self) -> String {
        http_get(self.running.metrics_addr, "/metrics").await.1
    }

    /// The value of one series, which must exist.
    async fn value(&self, series: &str) -> f64 {
        let body = self.scrape().await;
        metric(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    /// `anteroom_connections` for (handshake, active, waiting).
    async fn connections(&self) -> [f64; 3] {
        let body = self.scrape().await;
        ["handshake", "active", "waiting"].map(|state| {
            metric(&body, &format!("anteroom_connections{{state=\"{state}\"}}")).unwrap_or(f64::NAN)
        })
    }

    /// Waits until `anteroom_connections` is exactly (handshake, active, waiting).
    async fn expect_connections(&self, handshake: usize, active: usize, waiting: usize) {
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
    async fn expect_clean(&self) {
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

    async fn connect(&self) -> Client {
        Client::connect(self.addr()).await
    }

    /// Connects with a tiny receive buffer: a client that stops reading backs
    /// up after a few kilobytes.
    async fn connect_small(&self) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Connects and joins as `name`, expecting a direct `welcome`.
    async fn join(&self, name: &str) -> Client {
        let mut c = self.connect().await;
        enter(&mut c, name).await;
        c
    }

    /// Connects as `name`, expecting to be queued at `position`.
    async fn queue(&self, name: &str, position: u64) -> Waiter {
        let mut client = self.connect().await;
        client.hello(name).await;
        let q = client.recv_type("queued").await;
        assert_eq!(q["position"].as_u64(), Some(position), "{name}: {q}");
        Waiter {
            name: name.to_string(),
            client,
            position,
        }
    }
}

/// Sends `hello` and expects a direct `welcome`.
async fn enter(c: &mut Client, name: &str) {
    c.hello(name).await;
    let w = c.recv_type("welcome").await;
    assert_eq!(w["name"].as_str(), Some(name));
}

/// The next frame from any stream; fails on close or after [`EVENTUALLY`].
async fn next<R: AsyncRead + Unpin>(r: &mut R) -> Value {
    tokio::time::timeout(EVENTUALLY, read_frame(r))
        .await
        .expect("timed out waiting for a frame")
        .expect("connection closed while waiting for a frame")
}

/// Reads frames until one satisfies `want`; the others are skipped.
async fn until(c: &mut Client, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = next(&mut c.stream).await;
        if want(&v) {
            return v;
        }
    }
}

fn of_type(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"].as_str() == Some(ty)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of names")
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// Waits for the `left` of `name` and returns its reason.
async fn left_reason(c: &mut Client, name: &str) -> String {
    let v = until(c, |v| {
        v["type"].as_str() == Some("left") && v["name"].as_str() == Some(name)
    })
    .await;
    v["reason"].as_str().unwrap().to_string()
}

/// Asks member `c` for `who` until the answer is exactly `want` (join order).
/// No answer may list a name twice.
async fn expect_roster(c: &mut Client, want: &[&str]) {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        c.send_type("who", &[]).await;
        let listed = names(&until(c, of_type("users")).await["names"]);
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

/// Reads until the server closes the connection (a reset counts too).
async fn expect_end(c: &mut Client) {
    let ended = tokio::time::timeout(EVENTUALLY, async {
        while read_frame(&mut c.stream).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "connection not closed");
}

/// A queued client and the last position it was told.
struct Waiter {
    name: String,
    client: Client,
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
    async fn expect_position(&mut self, want: u64) {
        while self.position != want {
            let v = next(&mut self.client.stream).await;
            match v["type"].as_str().unwrap() {
                "queued" => self.told(&v, want),
                "ping" => {}
                _ => panic!("{} expected a position update, got {v}", self.name),
            }
        }
    }

    /// Reads position updates until the `welcome` of a promotion; returns the
    /// member and the names the welcome lists.
    async fn expect_welcome(mut self) -> (Client, Vec<String>) {
        loop {
            let v = next(&mut self.client.stream).await;
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
async fn expect_consistent(
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

fn say_frame(text: &str) -> Vec<u8> {
    frame_of(&map(&[("type", "say".into()), ("text", text.into())]))
}

#[tokio::test]
async fn half_a_frame_then_silence_still_times_out() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&[], &[("ANTEROOM_HANDSHAKE_TIMEOUT", "300ms")]).await;
    let mut c = s.connect().await;
    c.send_raw(&[0, 0, 0, 40, 0x82]).await; // promises 40 bytes, sends 1
    c.expect_bye("handshake_timeout").await;
    drop(c);
    s.expect_clean().await;
}

#[tokio::test]
async fn four_gib_length_prefixes_are_refused_without_allocating() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "2", "--max-waiting", "4"], &[]).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    let mut q0 = s.queue("q0", 1).await;
    let q1 = s.queue("q1", 2).await;
    let mut strangers = Vec::new();
    for _ in 0..16 {
        strangers.push(s.connect().await);
    }
    s.expect_connections(16, 2, 2).await;
    let usage = |pid| anteroom_bench::server::read_usage(pid).unwrap();
    let vm_size = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    let (rss_before, vm_before) = (usage(s.pid).rss_bytes, vm_size(s.pid));

    // 0xFFFFFFFF from connections in the handshake, in the queue and in the
    // room: each is answered at once, and none reserves its 4 GiB.
    let started = Instant::now();
    for c in &mut strangers {
        c.send_raw(&u32::MAX.to_be_bytes()).await;
    }
    q0.client.send_raw(&u32::MAX.to_be_bytes()).await;
    for c in strangers.iter_mut().chain([&mut q0.client]) {
        c.expect_error("frame_too_large").await;
        c.expect_bye("protocol_error").await;
    }
    bob.send_raw(&u32::MAX.to_be_bytes()).await;
    bob.expect_error("frame_too_large").await;
    bob.expect_bye("protocol_error").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let grown_rss = usage(s.pid).rss_bytes.saturating_sub(rss_before);
    let grown_vm = vm_size(s.pid).saturating_sub(vm_before);
    assert!(
        grown_rss < 32 << 20,
        "resident memory grew by {grown_rss} bytes"
    );
    assert!(
        grown_vm < 1 << 30,
        "virtual memory grew by {grown_vm} bytes"
    );

    // Nobody else is affected: bob's seat goes to the queue, in order.
    assert_eq!(left_reason(&mut ann, "bob").await, "protocol_error");
    let (mut q1, users) = q1.expect_welcome().await;
    assert_eq!(users, ["ann", "q1"]);
    expect_consistent(&s, &mut ann, &["ann", "q1"], &mut [], 0).await;
    ann.say("still here").await;
    let m = until(&mut q1, of_type("message")).await;
    assert_eq!(m["text"].as_str(), Some("still here"));
    assert_eq!(
        s.value("anteroom_rejected_total{reason=\"protocol_error\"}")
            .await,
        18.0
    );
    drop((ann, q1, bob, q0, strangers));
    s.expect_clean().await;
}

#[tokio::test]
async fn resets_in_the_room_and_in_the_queue_leave_everything_consistent() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "2"], &[]).await;
    let mut ann = s.join("ann").await;
    let bob = s.join("bob").await;
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(s.queue(&format!("q{i}"), i + 1).await);
    }
    // Reset a queued client mid-queue and a member mid-room.
    reset(queued.remove(1).client);
    reset(bob);
    assert_eq!(left_reason(&mut ann, "bob").await, "disconnected");
    // q0 is promoted; q2 and q3 move up to 1 and 2.
    let (q0, users) = queued.remove(0).expect_welcome().await;
    assert_eq!(users, ["ann", "q0"]);
    expect_consistent(&s, &mut ann, &["ann", "q0"], &mut queued, 0).await;
    // Everyone resets: the server forgets them all.
    reset(ann);
    reset(q0);
    for w in queued {
        reset(w.client);
    }
    s.expect_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_flood_does_not_slow_the_room() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The test's ends of 1,100 connections, and the server's, which
    // inherits the limit.
    anteroom_bench::raise_fd_limit();
    let s = Served::start(
        &[],
        &[
            UNLIMITED_RATE[0],
            UNLIMITED_RATE[1],
            ("ANTEROOM_HANDSHAKE_TIMEOUT", "5s"),
        ],
    )
    .await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    // A thousand connections that never speak, and a hundred that stop mid-frame.
    let mut silent = Vec::new();
    for i in 0..1100 {
        let mut c = s.connect().await;
        if i % 11 == 0 {
            c.send_raw(&[0, 0, 1, 0, 0x82, 0xa4]).await;
        }
        silent.push(c);
    }
    s.expect_connections(1100, 2, 0).await;
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let sent = Instant::now();
        ann.say(&format!("still here {i}")).await;
        let v = until(&mut bob, of_type("message")).await;
        assert_eq!(v["text"].as_str().unwrap(), format!("still here {i}"));
        worst = worst.max(sent.elapsed());
        until(&mut ann, of_type("message")).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "a message took {worst:?} under the flood"
    );
    // And new members still get in at once.
    let started = Instant::now();
    let cid = s.join("cid").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every silent connection is then told its handshake timed out, and
    // the room is as it was.
    for c in &mut silent {
        c.expect_bye("handshake_timeout").await;
    }
    expect_consistent(&s, &mut ann, &["ann", "bob", "cid"], &mut [], 0).await;
    drop((silent, ann, bob, cid));
    s.expect_clean().await;
}

/// What one member saw of a flood.
#[derive(Debug, Default)]
struct Followed {
    /// Flood indexes received: the first and how many, all consecutive.
    first: Option<u64>,
    count: u64,
    /// Longest time from a `say` leaving the flooder to its `message` arriving.
    worst: Duration,
    /// Names in the `welcome`, for a member promoted during the flood.
    welcome: Option<Vec<String>>,
    /// `left` and `joined` frames, in order, as "left NAME REASON" / "joined NAME".
    presence: Vec<String>,
}

/// Follows the room until the flood's `end`: message ids and flood indexes
/// must each go up by exactly one, with nothing lost or repeated. `progress`
/// is the next index this member expects (`u64::MAX` until it has one).
async fn follow_flood<R: AsyncRead + Unpin>(
    r: &mut R,
    progress: &AtomicU64,
    seat_refilled: &AtomicBool,
    epoch: Instant,
) -> Followed {
    let mut seen = Followed::default();
    let mut last_id: Option<u64> = None;
    loop {
        let v = next(r).await;
        match v["type"].as_str().unwrap() {
            "message" => {
                let id = v["id"].as_u64().unwrap();
                if let Some(last) = last_id {
                    assert_eq!(id, last + 1, "message ids skipped or repeated");
                }
                last_id = Some(id);
                let text = v["text"].as_str().unwrap();
                if text == "end" {
                    return seen;
                }
                let mut fields = text.split(' ');
                let index: u64 = fields.next().unwrap().parse().unwrap();
                let sent_us: u64 = fields.next().unwrap().parse().unwrap();
                match seen.first {
                    None => seen.first = Some(index),
                    Some(first) => assert_eq!(index, first + seen.count, "out of order"),
                }
                seen.count += 1;
                let latency = epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(sent_us));
                seen.worst = seen.worst.max(latency);
                progress.store(index + 1, Ordering::Release);
            }
            // Joins before the flood are not part of it.
            "left" | "joined" if seen.first.is_none() && seen.welcome.is_none() => {}
            "left" => {
                let name = v["name"].as_str().unwrap();
                seen.presence
                    .push(format!("left {name} {}", v["reason"].as_str().unwrap()));
            }
            "joined" => {
                // The seat the slow member left has been given to `next`:
                // the flood may end, and `next` will see its end. (Ending
                // on `left` could post the last message before the
                // promotion reached the room, so `next` would never see it.)
                let name = v["name"].as_str().unwrap();
                if name == "next" {
                    seat_refilled.store(true, Ordering::Release);
                }
                seen.presence.push(format!("joined {name}"));
            }
            "welcome" => seen.welcome = Some(names(&v["users"])),
            "queued" => assert_eq!(v["position"].as_u64(), Some(1)),
            "ping" => {}
            _ => panic!("unexpected frame during the flood: {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_in_a_busy_room_is_cut_off_and_the_others_miss_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const READERS: usize = 4;
    const LEAD: u64 = 32;
    const MAX_FLOOD: u64 = 50_000;
    let s = Served::start(
        &["--max-active", "6", "--max-waiting", "2"],
        &[
            UNLIMITED_RATE[0],
            UNLIMITED_RATE[1],
            ("ANTEROOM_OUTBOX_LIMIT", "64"),
            ("ANTEROOM_WRITE_TIMEOUT", "30s"),
        ],
    )
    .await;
    let mut members = Vec::new();
    for i in 0..READERS {
        members.push(s.join(&format!("r{i}")).await);
    }
    // The slow member reads its welcome, then nothing more.
    let mut slow = s.connect_small().await;
    enter(&mut slow, "slow").await;
    let flooder = s.join("flooder").await;
    let next_in_line = s.queue("next", 1).await;

    // Every member reads on its own; the flooder stays at most LEAD
    // messages ahead of the slowest of them, so only `slow` falls behind.
    let epoch = Instant::now();
    let progress: Arc<Vec<AtomicU64>> = Arc::new(
        (0..READERS + 2)
            .map(|i| AtomicU64::new(if i == READERS { u64::MAX } else { 0 }))
            .collect(),
    );
    let seat_refilled = Arc::new(AtomicBool::new(false));
    let (mut flood_rx, mut flood_tx) = flooder.stream.into_split();
    let mut readers = Vec::new();
    let streams = members
        .into_iter()
        .map(|c| c.stream)
        .chain([next_in_line.client.stream]);
    for (i, mut stream) in streams.enumerate() {
        let (progress, seat_refilled) = (progress.clone(), seat_refilled.clone());
        readers.push(tokio::spawn(async move {
            let seen = follow_flood(&mut stream, &progress[i], &seat_refilled, epoch).await;
            (Client { stream }, seen)
        }));
    }
    let own = {
        let (progress, seat_refilled) = (progress.clone(), seat_refilled.clone());
        tokio::spawn(async move {
            let seen =
                follow_flood(&mut flood_rx, &progress[READERS + 1], &seat_refilled, epoch).await;
            (flood_rx, seen)
        })
    };
    let padding = "x".repeat(1000);
    let mut sent = 0u64;
    while !seat_refilled.load(Ordering::Acquire) {
        assert!(
            sent < MAX_FLOOD,
            "the slow member was never cut off and replaced"
        );
        let waiting_since = Instant::now();
        loop {
            let slowest = progress.iter().map(|p| p.load(Ordering::Acquire)).min();
            if sent < slowest.unwrap().saturating_add(LEAD) {
                break;
            }
            assert!(
                waiting_since.elapsed() < EVENTUALLY,
                "the room stalled after {sent} messages"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let text = format!("{sent} {} {padding}", epoch.elapsed().as_micros());
        flood_tx.write_all(&say_frame(&text)).await.unwrap();
        sent += 1;
    }
    // One more after the refill was seen, so it follows `joined next` and
    // `next` is sure to get a message of the flood before its end.
    let text = format!("{sent} {} {padding}", epoch.elapsed().as_micros());
    flood_tx.write_all(&say_frame(&text)).await.unwrap();
    sent += 1;
    flood_tx.write_all(&say_frame("end")).await.unwrap();

    let mut clients = Vec::new();
    let mut worst = Duration::ZERO;
    for (i, reader) in readers.into_iter().enumerate() {
        let (client, seen) = reader.await.unwrap();
        worst = worst.max(seen.worst);
        if i < READERS {
            // Present from the start: every message, in order, and the
            // slow member's departure followed by the promotion.
            assert_eq!((seen.first, seen.count), (Some(0), sent), "r{i}");
            assert_eq!(seen.presence, ["left slow slow_consumer", "joined next"]);
        } else {
            // Promoted into the seat the slow member left: every message
            // from its entry on, and a welcome without the slow member.
            let users = seen.welcome.expect("next was promoted");
            assert_eq!(users, ["r0", "r1", "r2", "r3", "flooder", "next"]);
            assert_eq!(seen.first.unwrap() + seen.count, sent, "next");
            assert!(seen.presence.is_empty(), "{:?}", seen.presence);
        }
        clients.push(client);
    }
    let (flood_rx, seen) = own.await.unwrap();
    assert_eq!((seen.first, seen.count), (Some(0), sent), "flooder");
    assert_eq!(seen.presence, ["left slow slow_consumer", "joined next"]);
    worst = worst.max(seen.worst);
    assert!(
        worst < Duration::from_secs(2),
        "a message took {worst:?} to arrive"
    );

    // The slow member's stream ends: whatever the kernel held, maybe its
    // best-effort bye, then the close.
    expect_end(&mut slow).await;
    assert_eq!(
        s.value(
            "anteroom_subscribers_dropped_total{component=\"room_delivery\",reason=\"slow_consumer\"}"
        )
        .await,
        1.0
    );
    expect_consistent(
        &s,
        &mut clients[0],
        &["r0", "r1", "r2", "r3", "flooder", "next"],
        &mut [],
        0,
    )
    .await;
    drop((clients, slow, flood_rx, flood_tx));
    s.expect_clean().await;
}

/// The kernel's queues for one loopback connection, from /proc/net/tcp:
/// (bytes sent but not yet acknowledged, bytes received but not yet read)
/// on the side whose local address is `local`.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => unreachable!("the tests use IPv4"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reset_while_the_server_writes_to_it_is_replaced_from_the_queue() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const TEXT: usize = 4000;
    // More than the kernel may buffer on the server's side of one connection
    // (net.ipv4.tcp_wmem's maximum), with 2 MiB to spare.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let flood = (wmem_max + (2 << 20)) / TEXT;
    let s = Served::start(
        &["--max-active", "3", "--max-waiting", "4"],
        &[
            UNLIMITED_RATE[0],
            UNLIMITED_RATE[1],
            // Neither limit nor the write timeout may cut the stuck member
            // off first: the reset must be what ends it.
            ("ANTEROOM_OUTBOX_LIMIT", "100000"),
            ("ANTEROOM_MAX_OUTBOX_BYTES", "67108864"),
            ("ANTEROOM_WRITE_TIMEOUT", "60s"),
        ],
    )
    .await;
    let mut ann = s.join("ann").await;
    let mut stuck = s.connect_small().await;
    enter(&mut stuck, "stuck").await;
    let talker = s.join("talker").await;
    let q0 = s.queue("q0", 1).await;
    let mut q1 = s.queue("q1", 2).await;

    // A flood ann and the talker read, and the stuck member does not.
    let (mut talker_rx, mut talker_tx) = talker.stream.into_split();
    let count_messages = |mut r: tokio::net::tcp::OwnedReadHalf| async move {
        let mut n = 0;
        while n < flood {
            if next(&mut r).await["type"].as_str() == Some("message") {
                n += 1;
            }
        }
        r
    };
    let (ann_rx, ann_tx) = ann.stream.into_split();
    let ann_reader = tokio::spawn(count_messages(ann_rx));
    let talker_reader = tokio::spawn(count_messages(talker_rx));
    let text = "w".repeat(TEXT);
    for _ in 0..flood {
        talker_tx.write_all(&say_frame(&text)).await.unwrap();
    }
    let ann_rx = ann_reader.await.unwrap();
    talker_rx = talker_reader.await.unwrap();
    ann = Client {
        stream: ann_rx.reunite(ann_tx).unwrap(),
    };

    // The server is in the middle of writing to the stuck member: its end
    // of the connection has bytes the client has not acknowledged, the
    // client's end is full, and most of the flood is still inside the
    // server, waiting for the socket to take it.
    let stuck_addr = stuck.stream.local_addr().unwrap();
    let deadline = Instant::now() + EVENTUALLY;
    let (unacked, unread) = loop {
        let server_side = tcp_queues(s.addr(), stuck_addr).expect("the server's end");
        let client_side = tcp_queues(stuck_addr, s.addr()).expect("the client's end");
        if server_side.0 > 0 && client_side.1 > 0 {
            break (server_side.0, client_side.1);
        }
        assert!(Instant::now() < deadline, "the socket never filled up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let flood_bytes = (flood * TEXT) as u64;
    assert!(
        unacked + unread + (1 << 20) <= flood_bytes,
        "the kernel holds {unacked} + {unread} of {flood_bytes} bytes: the server is not blocked"
    );

    let reset_at = Instant::now();
    reset(stuck);
    assert_eq!(left_reason(&mut ann, "stuck").await, "disconnected");
    let noticed = reset_at.elapsed();
    assert!(
        noticed < Duration::from_secs(5),
        "the reset was noticed after {noticed:?}"
    );
    let (q0, users) = q0.expect_welcome().await;
    assert_eq!(users, ["ann", "talker", "q0"]);
    expect_consistent(
        &s,
        &mut ann,
        &["ann", "talker", "q0"],
        std::slice::from_mut(&mut q1),
        0,
    )
    .await;
    drop((ann, q0, q1, talker_rx, talker_tx));
    s.expect_clean().await;
}

#[tokio::test]
async fn resets_in_the_middle_of_a_frame_leave_no_trace() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "2", "--max-waiting", "4"], &[]).await;
    let mut ann = s.join("ann").await;
    let mut bob = s.join("bob").await;
    let q0 = s.queue("q0", 1).await;
    let mut q1 = s.queue("q1", 2).await;
    let q2 = s.queue("q2", 3).await;
    let mut stranger = s.connect().await;
    s.expect_connections(1, 2, 3).await;

    // Each sends part of a frame, lets the server read it, and resets.
    let hello = frame_of(&map(&[("type", "hello".into()), ("name", "eve".into())]));
    let say = say_frame("this message must never be delivered");
    let ping = frame_of(&map(&[("type", "ping".into()), ("id", 7.into())]));
    stranger.send_raw(&hello[..hello.len() / 2]).await;
    bob.send_raw(&say[..say.len() / 2]).await;
    q1.client.send_raw(&ping[..3]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    reset(stranger);
    reset(bob);
    reset(q1.client);

    // bob leaves as disconnected, having said nothing; q0 takes his seat and
    // q2 moves up past the reset q1.
    let v = until(&mut ann, |v| {
        matches!(v["type"].as_str(), Some("left") | Some("message"))
    })
    .await;
    assert_eq!(v["type"].as_str(), Some("left"), "{v}");
    assert_eq!(v["name"].as_str(), Some("bob"));
    assert_eq!(v["reason"].as_str(), Some("disconnected"));
    let (q0, users) = q0.expect_welcome().await;
    assert_eq!(users, ["ann", "q0"]);
    expect_consistent(&s, &mut ann, &["ann", "q0"], &mut [q2], 0).await;
    drop((ann, q0));
    s.expect_clean().await;
}

#[tokio::test]
async fn clients_killed_while_queued_leave_and_those_behind_move_up() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let s = Served::start(&["--max-active", "1", "--max-waiting", "10"], &[]).await;
    let mut ann = s.join("ann").await;
    let mut q0 = s.queue("q0", 1).await;
    let q1 = s.queue("q1", 2).await;
    let q2 = s.queue("q2", 3).await;
    let q3 = s.queue("q3", 4).await;
    let q4 = s.queue("q4", 5).await;
    // A real client process, 6th in the queue.
    let mut chat = Command::new(BIN)
        .args(["chat", "--name", "proc", "--server", &s.addr().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run anteroom chat");
    let chat_stdin = chat.stdin.take();
    let stdout = chat.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(EVENTUALLY)
            .expect("chat reported its place");
        if line.contains("you are at 6 in queue") {
            break;
        }
    }
    let q5 = s.queue("q5", 7).await;
    s.expect_connections(0, 1, 7).await;

    // q1 resets, q3 closes without a bye, the process is killed.
    reset(q1.client);
    drop(q3);
    chat.kill().unwrap();
    chat.wait().unwrap();
    drop(chat_stdin);
    let mut waiting = vec![q2, q4, q5];
    for (w, want) in waiting.iter_mut().zip([2, 3, 4]) {
        w.expect_position(want).await;
    }
    s.expect_connections(0, 1, 4).await;
    // The head did not move, so it is told nothing.
    q0.client.expect_silence(Duration::from_millis(400)).await;

    // A seat opens: the head enters, the rest move up once more.
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    let (mut q0, users) = q0.expect_welcome().await;
    assert_eq!(users, ["q0"]);
    expect_consistent(&s, &mut q0, &["q0"], &mut waiting, 0).await;
    assert_eq!(s.value("anteroom_queue_abandoned_total").await, 3.0);
    assert_eq!(s.value("anteroom_promotions_total").await, 1.0);
    drop((ann, q0, waiting));
    s.expect_clean().await;
}

#[tokio::test]
async fn a_client_reset_while_being_promoted_is_never_lost_or_listed_twice() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const ROUNDS: u64 = 90;
    let s = Served::start(&["--max-active", "1", "--max-waiting", "4"], &[]).await;
    for round in 0..ROUNDS {
        let mut ann = s.join(&format!("ann{round}")).await;
        let mut head = s.queue(&format!("head{round}"), 1).await;
        let after = s.queue(&format!("after{round}"), 2).await;
        // The member leaves and the head of the queue resets, in either
        // order and at various distances, up to the head resetting as soon
        // as its welcome arrives.
        let delay = Duration::from_micros([0, 20, 100, 300, 1000][(round % 5) as usize]);
        match round % 3 {
            0 => {
                ann.send_type("bye", &[]).await;
                spin(delay);
                reset(head.client);
            }
            1 => {
                reset(head.client);
                spin(delay);
                ann.send_type("bye", &[]).await;
            }
            _ => {
                ann.send_type("bye", &[]).await;
                let v = next(&mut head.client.stream).await;
                assert_eq!(v["type"].as_str(), Some("welcome"), "{v}");
                reset(head.client);
            }
        }
        // The next in line always gets the seat, alone in the room.
        let (mut member, users) = after.expect_welcome().await;
        let me = format!("after{round}");
        assert_eq!(users, [me.as_str()], "round {round}");
        // A member from its welcome on: what it says at once is delivered.
        member.say("in at last").await;
        let v = until(&mut member, |v| {
            matches!(v["type"].as_str(), Some("message") | Some("error"))
        })
        .await;
        assert_eq!(v["text"].as_str(), Some("in at last"), "round {round}: {v}");
        expect_consistent(&s, &mut member, &[me.as_str()], &mut [], 0).await;
        expect_end(&mut ann).await;
        member.send_type("bye", &[]).await;
        member.expect_bye("bye").await;
        s.expect_connections(0, 0, 0).await;
    }
    // Every queued client left the queue exactly once: promoted or gone.
    let promoted = s.value("anteroom_promotions_total").await;
    let abandoned = s.value("anteroom_queue_abandoned_total").await;
    assert_eq!(promoted + abandoned, (2 * ROUNDS) as f64);
    assert!(promoted >= ROUNDS as f64, "{promoted} promotions");
    s.expect_clean().await;
}

#[tokio::test]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const BACKING_OFF: &str = "accept failed; backing off until it succeeds";
    const ACCEPTING: &str = "accepting again";
    // The server may hold 64 descriptors: a few for itself, the rest for clients.
    let s = Served::start(&[], &[("TEST_NOFILE", "64")]).await;
    for burst in 1..=2 {
        let mut clients = Vec::new();
        for _ in 0..100 {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(s.addr())).await
            {
                clients.push(Client { stream });
            }
        }
        // The server is out of descriptors; it must not spin, and it says
        // so once for the whole burst: each time it starts backing off, one
        // line, then one more only after it has accepted again. (Clients
        // left in the listen backlog may exhaust it again after a recovery:
        // that is a new burst.)
        let before = support::process::cpu_seconds(s.pid);
        let lines_before = s.running.logged(BACKING_OFF);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let spent = support::process::cpu_seconds(s.pid) - before;
        assert!(spent < 0.5, "the accept loop spun: {spent} s of CPU in 2 s");
        let (off, on) = (s.running.logged(BACKING_OFF), s.running.logged(ACCEPTING));
        assert!(
            off - lines_before <= 1,
            "burst {burst}: {off} lines, {lines_before} before"
        );
        assert_eq!(
            off,
            on + 1,
            "burst {burst}: {off} backing-off lines, {on} recoveries"
        );
        drop(clients);
        // Once descriptors are free again, clients are served.
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let mut c = s.connect().await;
            c.send_type("ping", &[]).await;
            if let Ok(Some(v)) =
                tokio::time::timeout(Duration::from_millis(500), c.try_recv()).await
            {
                assert_eq!(v["type"].as_str(), Some("pong"));
                break;
            }
            assert!(Instant::now() < deadline, "the server never recovered");
        }
        // The recovery line of this burst is read from the server's stderr
        // by another thread: it may arrive a moment after the pong.
        let deadline = Instant::now() + EVENTUALLY;
        while s.running.logged(ACCEPTING) < off && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let backed_off = off;
        let (off, on) = (s.running.logged(BACKING_OFF), s.running.logged(ACCEPTING));
        assert!(
            on >= backed_off && on >= burst,
            "burst {burst}: {on} recoveries of {backed_off} back-offs"
        );
        assert!(
            off == on || off == on + 1,
            "burst {burst}: {off} lines, {on} recoveries"
        );
    }
    s.expect_clean().await;
}
