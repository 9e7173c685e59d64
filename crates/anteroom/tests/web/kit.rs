//! What the web tests share: a server whose web listener is on a free port,
//! a WebSocket member (tokio-tungstenite for the WebSocket layer; the maps
//! are built and checked with rmpv, as the raw TCP client does), and raw
//! HTTP/1.1 requests.

use std::net::SocketAddr;
use std::time::Duration;

use anteroom_broker::config::Config;
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::{RECV_TIMEOUT, TestServer, map};

/// The subprotocol the server selects when a client offers it.
pub const SUBPROTOCOL: &str = "anteroom.v1";

/// Starts a server with the web listener on a free port of 127.0.0.1, then
/// `adjust` applied.
pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start(|c| {
        c.web_listen = Some("127.0.0.1:0".parse().unwrap());
        adjust(c);
    })
    .await
}

/// The web listener's address.
pub fn web(server: &TestServer) -> SocketAddr {
    server.web_addr.expect("the web listener is on")
}

/// Decodes one map the server sent, checking its shape as the raw TCP
/// client does.
pub fn decode(payload: &[u8]) -> Value {
    let mut cursor = payload;
    let v = rmpv::decode::read_value(&mut cursor).expect("server sent valid MessagePack");
    assert!(cursor.is_empty(), "trailing bytes in a server message");
    assert!(v.is_map(), "server message is a map");
    assert!(v["type"].is_str(), "server message has a string type");
    v
}

/// Encodes a map as one binary message's payload (no length prefix).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, v).unwrap();
    payload
}

/// A WebSocket member.
pub struct Ws {
    pub socket: WebSocketStream<TcpStream>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
}

impl Ws {
    /// Opens `/ws`, offering `anteroom.v1` when `offer` is true.
    pub async fn open(addr: SocketAddr, offer: bool) -> Self {
        Self::try_open(addr, offer)
            .await
            .expect("WebSocket upgrade")
    }

    pub async fn try_open(addr: SocketAddr, offer: bool) -> Result<Self, WsError> {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        if offer {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let handshake = tokio_tungstenite::client_async(request, stream);
        let (socket, response) = tokio::time::timeout(RECV_TIMEOUT, handshake)
            .await
            .expect("the upgrade is answered in time")?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        Ok(Ws { socket, protocol })
    }

    /// Opens `/ws` and joins as `name`, expecting a direct `welcome`.
    pub async fn join(addr: SocketAddr, name: &str) -> Self {
        let mut ws = Self::open(addr, true).await;
        ws.enter(name).await;
        ws
    }

    /// Opens `/ws` as `name`, expecting to be queued at `position`.
    pub async fn queue(addr: SocketAddr, name: &str, position: u64) -> Self {
        let mut ws = Self::open(addr, true).await;
        ws.hello(name).await;
        let q = ws.recv_type("queued").await;
        assert_eq!(q["position"].as_u64(), Some(position), "{name}: {q}");
        ws
    }

    pub async fn send_message(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    pub async fn send(&mut self, v: Value) {
        self.send_message(Message::Binary(encode(&v).into())).await;
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

    /// The next WebSocket message other than a ping or pong; `None` when
    /// the connection ends. Fails the test after [`RECV_TIMEOUT`].
    pub async fn next_ws(&mut self) -> Option<Message> {
        tokio::time::timeout(RECV_TIMEOUT, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(message)) => return Some(message),
                    None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                        return None;
                    }
                    Some(Err(error)) => panic!("WebSocket failed: {error}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a WebSocket message")
    }

    /// Reads one map; anything but a binary message fails the test.
    pub async fn recv(&mut self) -> Value {
        match self.next_ws().await {
            Some(Message::Binary(payload)) => decode(&payload),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Reads maps until one of type `ty`, skipping server pings.
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

    /// Reads maps until a `message`, skipping `joined`, `left` and pings.
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

    /// Expects an `error` with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv_type("error").await;
        assert_eq!(v["code"].as_str(), Some(code), "{v}");
        assert!(v["text"].is_str());
        v
    }

    /// Expects `bye` with `reason`, then a close frame with `code`, then the
    /// end of the connection.
    pub async fn expect_bye(&mut self, reason: &str, code: u16) {
        let v = self.recv_type("bye").await;
        assert_eq!(v["reason"].as_str(), Some(reason), "{v}");
        assert!(v["text"].is_str());
        self.expect_close(code).await;
    }

    /// Expects a close frame with `code` (the WebSocket layer answers it),
    /// then the end of the connection.
    pub async fn expect_close(&mut self, code: u16) {
        match self.next_ws().await {
            Some(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), code, "close frame {frame:?}")
            }
            other => panic!("expected a close frame with code {code}, got {other:?}"),
        }
        assert!(self.next_ws().await.is_none(), "the connection ends");
    }
}

/// An HTTP response as read off the socket.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (head and body, as written) on a new connection and
/// reads the response: its head, and a body of `content-length` bytes
/// (none for 101 and 304, nor for a `HEAD`).
pub async fn http(addr: SocketAddr, request: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    tokio::time::timeout(RECV_TIMEOUT, read_reply(&mut stream, request))
        .await
        .expect("an answer in time")
}

/// Reads one response to `request` from `stream`.
pub async fn read_reply(stream: &mut TcpStream, request: &str) -> Reply {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "closed before a whole response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    };
    let bodiless = status == 101 || status == 304 || request.starts_with("HEAD ");
    if let Some(len) = reply.header("content-length").filter(|_| !bodiless) {
        let len: usize = len.parse().unwrap();
        while reply.body.len() < len {
            let mut chunk = vec![0u8; len - reply.body.len()];
            let n = stream.read(&mut chunk).await.expect("read the body");
            assert!(n > 0, "closed inside the body");
            reply.body.extend_from_slice(&chunk[..n]);
        }
    }
    reply
}

/// A WebSocket upgrade request for `/ws` with `Host: host` and `extra`
/// header lines (each ending in CRLF).
pub fn upgrade(host: &str, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Polls `attempt` every 20 ms until it gives `Some`, for up to `within`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    within: Duration,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
