//! Test support: an in-process server on 127.0.0.1 port 0 and a raw
//! MessagePack client that builds its frames independently of the server's
//! encoder (rmpv values, not the server's serde types).

#![allow(dead_code)]

pub mod process;
// One throwaway-server helper for the broker's store tests and these.
#[path = "../../../broker/tests/support/postgres.rs"]
pub mod postgres;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use anteroom_broker::config::Config;
use anteroom_broker::server::{Server, ServerError};
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// For a test that needs a program the machine may lack: prints that it is
/// skipped and why, and returns false; under CI, where `.ci/run` installs
/// every such program, a missing one is a failure instead.
pub fn required(tool: &str, why: &str) -> bool {
    let under_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    assert!(!under_ci, "{tool} is required under CI: {why}");
    println!("skipped: {why}");
    false
}

/// A PostgreSQL server of the test's own, or `None` (the test is skipped)
/// where the machine has none to start, outside CI.
pub fn postgres_server() -> Option<postgres::Postgres> {
    match postgres::Postgres::start() {
        Ok(pg) => Some(pg),
        Err(why) => {
            required("PostgreSQL", &why);
            None
        }
    }
}

/// A Redis server of the test's own, or `None` (the test is skipped) where
/// the machine has none to start, outside CI.
pub fn redis_server() -> Option<redis::Redis> {
    match redis::Redis::start() {
        Ok(redis) => Some(redis),
        Err(why) => {
            required("redis-server", &why);
            None
        }
    }
}

/// How long a test waits for an expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A running in-process broker.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The TLS listener's address, when `tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    /// The QUIC listener's address, when `quic_listen` is set.
    pub quic_addr: Option<SocketAddr>,
    /// The web listener's address, when a test sets `web_listen` (to
    /// `127.0.0.1:0` for a free port; the tests leave it off otherwise).
    pub web_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    /// Starts a broker on free ports with `adjust` applied to the defaults.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        // Logs show with RUST_LOG=debug and --nocapture.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            web_listen: None,
            // One `data_dir` serves one server: tests of the stores set
            // their own.
            store: Some(anteroom_broker::config::StoreKind::Memory),
            // Every test client comes from 127.0.0.1: the per-address
            // limits are off unless a test sets them.
            max_connections_per_ip: 0,
            connection_rate_per_ip: 0.0,
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let metrics_addr = server.metrics_addr();
        let tls_addr = server.tls_addr();
        let quic_addr = server.quic_addr();
        let web_addr = server.web_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            addr,
            metrics_addr,
            tls_addr,
            quic_addr,
            web_addr,
            shutdown,
            task,
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Connects and joins as `name`, expecting a direct `welcome`.
    pub async fn join(&self, name: &str) -> Client {
        Client::join(self.addr, name).await
    }

    /// Connects as `name`, expecting to be queued at `position`.
    pub async fn queue(&self, name: &str, position: u64) -> Client {
        Client::queue(self.addr, name, position).await
    }

    /// Fetches `/metrics`.
    pub async fn scrape(&self) -> String {
        scrape(self.metrics_addr).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        if let Ok(ended) = ended {
            let run = ended.expect("the server's task does not panic");
            run.expect("the server stops cleanly");
        }
    }
}

/// A minimal HTTP/1.0 GET; returns status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Fetches `/metrics` from a metrics listener.
pub async fn scrape(metrics_addr: SocketAddr) -> String {
    http_get(metrics_addr, "/metrics").await.1
}

/// Scrapes `/metrics` until `series` satisfies `ok` (metrics are updated by
/// components on their own schedule), failing after a few seconds.
pub async fn wait_metric(metrics_addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    for _ in 0..150 {
        let body = scrape(metrics_addr).await;
        last = metric(&body, series);
        if last.is_some_and(&ok) {
            return last.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} never reached the expected value; last {last:?}");
}

/// Reads the value of a series (exact name with labels) from a scrape.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Builds a map value from pairs.
pub fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// Encodes a value as a frame (length prefix included).
pub fn frame_of(v: &Value) -> Vec<u8> {
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, v).unwrap();
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend(payload);
    out
}

/// Reads one server frame from any byte stream, checking its shape;
/// `None` when the stream ends.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(len <= 16 * 1024 * 1024, "server frame too large: {len}");
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    let mut cursor = &payload[..];
    let v = rmpv::decode::read_value(&mut cursor).expect("server sent valid MessagePack");
    assert!(cursor.is_empty(), "trailing bytes in server frame");
    assert!(v.is_map(), "server frame is a map");
    assert!(v["type"].is_str(), "server frame has a string type");
    Some(v)
}

/// Reads one server frame from any byte stream, failing the test after
/// [`RECV_TIMEOUT`] or if the stream ends.
pub async fn recv_from<R: AsyncRead + Unpin>(stream: &mut R) -> Value {
    tokio::time::timeout(RECV_TIMEOUT, read_frame(stream))
        .await
        .expect("timed out waiting for a frame")
        .expect("connection closed while waiting for a frame")
}

/// Whether a frame is of type `ty`, for [`Client::recv_until`].
pub fn is_type(ty: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"].as_str() == Some(ty)
}

/// The names in a list of a frame (`users` of a welcome, `names` of users).
pub fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of names")
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// A raw protocol client, over a TCP socket unless built on another byte
/// stream (TLS or QUIC, in the transport tests).
pub struct Client<S = TcpStream> {
    pub stream: S,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Connects with a tiny receive buffer: a client that stops reading
    /// backs up after a few kilobytes.
    pub async fn connect_small(addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Connects and joins as `name`, expecting a direct `welcome`.
    pub async fn join(addr: SocketAddr, name: &str) -> Self {
        let mut c = Client::connect(addr).await;
        c.enter(name).await;
        c
    }

    /// Connects as `name`, expecting to be queued at `position`.
    pub async fn queue(addr: SocketAddr, name: &str, position: u64) -> Self {
        let mut c = Client::connect(addr).await;
        c.hello(name).await;
        let q = c.recv_type("queued").await;
        assert_eq!(q["position"].as_u64(), Some(position), "{name}: {q}");
        c
    }

    /// Closes with a reset (RST) instead of FIN.
    pub fn reset(self) {
        let socket = socket2::Socket::from(self.stream.into_std().unwrap());
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(socket);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
        // A transport that buffers (TLS) sends only when flushed.
        self.stream.flush().await.expect("send");
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(&frame_of(&v)).await;
    }

    pub async fn send_type(&mut self, ty: &str, pairs: &[(&str, Value)]) {
        let mut all = vec![("type", Value::from(ty))];
        all.extend(pairs.iter().cloned());
        self.send(map(&all)).await;
    }

    pub async fn hello(&mut self, name: &str) {
        self.send_type("hello", &[("name", name.into())]).await;
    }

    /// Sends `hello` and expects a direct `welcome`.
    pub async fn enter(&mut self, name: &str) {
        self.hello(name).await;
        let w = self.recv_type("welcome").await;
        assert_eq!(w["name"].as_str(), Some(name));
    }

    pub async fn say(&mut self, text: &str) {
        self.send_type("say", &[("text", text.into())]).await;
    }

    /// Reads one frame; `None` on a clean close.
    pub async fn try_recv(&mut self) -> Option<Value> {
        read_frame(&mut self.stream).await
    }

    /// Reads one frame, failing the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        recv_from(&mut self.stream).await
    }

    /// Reads frames until one satisfies `want`; the others are skipped.
    pub async fn recv_until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if want(&v) {
                return v;
            }
        }
    }

    /// Reads frames until one of type `ty`, skipping server pings.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            let t = v["type"].as_str().unwrap();
            if t == ty {
                return v;
            }
            assert_eq!(t, "ping", "expected {ty}, got {v}");
        }
    }

    /// Reads frames until a `message`, skipping the room's comings and
    /// goings (`joined`, `left`) and server pings.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            match v["type"].as_str().unwrap() {
                "message" => return v,
                "joined" | "left" | "ping" => {}
                _ => panic!("expected a message, got {v}"),
            }
        }
    }

    /// Expects an `error` frame with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv_type("error").await;
        assert_eq!(v["code"].as_str(), Some(code), "{v}");
        assert!(v["text"].is_str());
        v
    }

    /// Expects `bye` with `reason`, then the connection closing.
    pub async fn expect_bye(&mut self, reason: &str) {
        let v = self.recv_type("bye").await;
        assert_eq!(v["reason"].as_str(), Some(reason), "{v}");
        assert!(v["text"].is_str());
        self.expect_closed().await;
    }

    /// Expects the server to close the connection (after any frames).
    pub async fn expect_closed(&mut self) {
        let closed = tokio::time::timeout(RECV_TIMEOUT, async {
            loop {
                match self.try_recv().await {
                    None => return,
                    Some(v) if v["type"].as_str() == Some("ping") => {}
                    Some(v) => panic!("expected close, got {v}"),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection not closed");
    }

    /// Reads until the server closes the connection, whatever arrives
    /// before (a reset counts too).
    pub async fn expect_end(&mut self) {
        let ended = tokio::time::timeout(RECV_TIMEOUT, async {
            while self.try_recv().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "connection not closed");
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(v) = tokio::time::timeout(wait, self.try_recv()).await {
            panic!("expected silence, got {v:?}");
        }
    }
}
