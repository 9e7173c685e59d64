//! What the chat log tests share: data directories of their own, clients
//! that ask for features, history pages, raw HTTP/1.1 for uploads and
//! downloads, and the SQLite store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anteroom_broker::config::{Config, StoreKind};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Client, RECV_TIMEOUT};

/// The version 1.1 features this server implements.
pub const CHAT: &[&str] = &["history", "whisper", "files"];

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "anteroom-test-{what}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }

    /// The SQLite database in this data directory.
    pub fn db(&self) -> PathBuf {
        self.0.join("chat.sqlite3")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The SQLite store in `dir`.
pub fn sqlite(c: &mut Config, dir: &TempDir) {
    c.store = Some(StoreKind::Sqlite);
    c.data_dir = dir.path().to_path_buf();
}

/// Rate limits out of the way of a test that sends many messages.
pub fn unlimited(c: &mut Config) {
    c.rate_limit = 100_000.0;
    c.rate_burst = 100_000;
    c.request_rate = 0.0;
}

/// The same for a server process.
pub const UNLIMITED: &[&str] = &[
    "--rate-limit",
    "100000",
    "--rate-burst",
    "100000",
    "--request-rate",
    "0",
];

/// The web listener on a free port.
pub fn web(c: &mut Config) {
    c.web_listen = Some("127.0.0.1:0".parse().unwrap());
}

/// An array of strings.
pub fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

/// Whether a map has `key` at all (indexing cannot tell nil from absent).
pub fn has_key(map: &Value, key: &str) -> bool {
    map.as_map()
        .expect("a map")
        .iter()
        .any(|(k, _)| k.as_str() == Some(key))
}

/// The strings of an array.
pub fn string_list(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("an array: {list}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// The features a `welcome` or `queued` lists.
pub fn granted(frame: &Value) -> Vec<String> {
    string_list(&frame["features"])
}

/// Sends `hello` asking for `features`.
pub async fn hello_with(c: &mut Client, name: &str, features: &[&str]) {
    c.send_type(
        "hello",
        &[("name", name.into()), ("features", strings(features))],
    )
    .await;
}

/// Connects and joins asking for `features`: the `welcome`, and the
/// `history` that must come right after it when `history` was granted.
pub async fn join_with(
    addr: SocketAddr,
    name: &str,
    features: &[&str],
) -> (Client, Value, Option<Value>) {
    let mut c = Client::connect(addr).await;
    hello_with(&mut c, name, features).await;
    let welcome = c.recv_type("welcome").await;
    let history = if granted(&welcome).iter().any(|f| f == "history") {
        let h = c.recv().await;
        assert_eq!(h["type"].as_str(), Some("history"), "after welcome: {h}");
        Some(h)
    } else {
        None
    };
    (c, welcome, history)
}

/// The messages of a `history` frame.
pub fn messages(history: &Value) -> &[Value] {
    history["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("history without messages: {history}"))
}

/// The ids of a `history` frame's messages.
pub fn ids(history: &Value) -> Vec<u64> {
    messages(history)
        .iter()
        .map(|m| m["id"].as_u64().expect("an id"))
        .collect()
}

/// The texts of a `history` frame's messages.
pub fn texts(history: &Value) -> Vec<String> {
    messages(history)
        .iter()
        .map(|m| m["text"].as_str().expect("a text").to_string())
        .collect()
}

/// Checks a `history` frame's shape: each entry a whole `message` map, ids
/// rising, `more` a bool, `epoch` a non-empty string. Returns the epoch.
pub fn check_history(h: &Value) -> String {
    assert_eq!(h["type"].as_str(), Some("history"), "{h}");
    assert!(h["more"].is_bool(), "more is a bool: {h}");
    let epoch = h["epoch"].as_str().expect("epoch is a string");
    assert!(!epoch.is_empty(), "epoch is not empty");
    let mut last = 0;
    for m in messages(h) {
        assert_eq!(m["type"].as_str(), Some("message"), "{m}");
        let id = m["id"].as_u64().expect("an id");
        assert!(id > last, "ids rise within a page: {h}");
        last = id;
        assert!(
            m["from"].is_str() && m["text"].is_str() && m["ts"].is_u64(),
            "{m}"
        );
    }
    epoch.to_string()
}

/// Reads until the answer to a request: a `history` or an `error`, past
/// the room's live frames.
pub async fn answer(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        match v["type"].as_str().unwrap() {
            "message" | "joined" | "left" | "ping" | "whisper" => {}
            _ => return v,
        }
    }
}

/// Sends a `history` request with the fields given (`Value::Nil` is sent
/// as nil; `None` leaves a field out) and reads its answer.
pub async fn ask_history(c: &mut Client, before: Option<Value>, limit: Option<Value>) -> Value {
    let mut fields = Vec::new();
    if let Some(b) = before {
        fields.push(("before", b));
    }
    if let Some(l) = limit {
        fields.push(("limit", l));
    }
    c.send_type("history", &fields).await;
    answer(c).await
}

/// Pages back through the whole log, `limit` at a time, newest page first:
/// every message oldest first, and the epoch. Each page must end below the
/// one after it.
pub async fn whole_log(c: &mut Client, limit: i64) -> (Vec<Value>, String) {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before: Option<u64> = None;
    let mut epoch: Option<String> = None;
    for _ in 0..100_000 {
        let page = ask_history(c, before.map(Value::from), Some(limit.into())).await;
        let this_epoch = check_history(&page);
        assert_eq!(
            epoch.get_or_insert_with(|| this_epoch.clone()),
            &this_epoch,
            "one epoch across pages"
        );
        let got = messages(&page).to_vec();
        assert!(got.len() as i64 <= limit, "a page holds at most its limit");
        if let (Some(b), Some(last)) = (before, got.last()) {
            assert!(
                last["id"].as_u64().unwrap() < b,
                "a page stays below `before`"
            );
        }
        let more = page["more"].as_bool().unwrap();
        if got.is_empty() {
            assert!(!more, "an empty page says there is no more: {page}");
            break;
        }
        before = got[0]["id"].as_u64();
        pages.push(got);
        if !more {
            break;
        }
    }
    let all = pages.into_iter().rev().flatten().collect();
    (all, epoch.unwrap_or_default())
}

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (the first, by case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Parses what a server sent on one connection (the first answer).
pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut rest = rest;
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..line_end])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .expect("a chunk size");
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            response.body.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
    } else {
        let length = response
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(rest.len());
        response.body = rest[..length.min(rest.len())].to_vec();
    }
    response
}

/// Reads until the server closes the connection (a reset ends it too).
pub async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(RECV_TIMEOUT, async {
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the web listener kept the connection open");
    out
}

/// Sends `request` on a new connection and reads the answer.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    parse_response(&read_to_close(&mut s).await)
}

/// The head of an upload: `token` as a bearer token, `length` as the
/// `Content-Length` (none when `None`), `disposition` as the
/// `Content-Disposition`.
pub fn upload_head(
    token: Option<&str>,
    length: Option<usize>,
    disposition: Option<&str>,
    mime: &str,
) -> Vec<u8> {
    let mut head =
        String::from("POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(l) = length {
        head.push_str(&format!("Content-Length: {l}\r\n"));
    }
    if let Some(d) = disposition {
        head.push_str(&format!("Content-Disposition: {d}\r\n"));
    }
    head.push_str(&format!("Content-Type: {mime}\r\n\r\n"));
    head.into_bytes()
}

/// Uploads `body` as a file called `name`.
pub async fn upload(
    addr: SocketAddr,
    token: &str,
    name: &str,
    mime: &str,
    body: &[u8],
) -> Response {
    let mut request = upload_head(
        Some(token),
        Some(body.len()),
        Some(&format!("attachment; filename=\"{name}\"")),
        mime,
    );
    request.extend_from_slice(body);
    exchange(addr, &request).await
}

/// Uploads `body` and expects it stored: the JSON answer.
pub async fn upload_ok(
    addr: SocketAddr,
    token: &str,
    name: &str,
    body: &[u8],
) -> serde_json::Value {
    let r = upload(addr, token, name, "text/plain", body).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json()
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// The upload token of a `welcome` that granted `files`.
pub fn token(welcome: &Value) -> String {
    welcome["upload_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no upload_token: {welcome}"))
        .to_string()
}

/// Waits until `ok` holds, checking every 20 ms for up to `within`.
pub async fn eventually(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if ok() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The names of the files in `dir` (none when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
