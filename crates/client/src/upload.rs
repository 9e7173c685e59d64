//! Posting a file: `POST /upload` on the server's web listener, with the
//! bearer token `welcome` carried (version 1.1, feature `files`).
//!
//! A client that was granted `files` keeps the [`Ticket`] from its
//! `welcome`, [`upload`]s a file, and then says
//! `say{text, attachment: url}` with the URL the server answered. The web
//! listener is a different address from the chat listener; [`WebBase`]
//! names it, or derives it from the chat server's address. The file is
//! streamed, never read whole into memory, and a file over the server's
//! limit is refused here, before a byte is sent.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Frame;
use hyper::header::{
    AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue,
};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::version;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::transport::{self, Scheme, Target, Trust};

/// The port of the web listener when nothing says otherwise (the server's
/// default `web_listen`).
pub const DEFAULT_WEB_PORT: u16 = 7880;

/// Bytes read from the file and sent at a time.
const CHUNK: usize = 64 * 1024;

/// How long connecting to the web listener may take (TLS included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An upload that makes no progress this long (the server neither takes
/// bytes nor answers) is given up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of an answer read: the JSON of a stored file is a few hundred
/// bytes; the bound keeps a hostile server from filling memory.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What `welcome` grants a client with `files`: the bearer token for
/// `POST /upload` and the largest file the server accepts. The token dies
/// with the connection it came with; a reconnected client gets a new one.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    token: String,
    max_bytes: u64,
}

impl Ticket {
    pub fn new(token: impl Into<String>, max_bytes: u64) -> Self {
        Self {
            token: token.into(),
            max_bytes,
        }
    }

    /// The ticket in a `welcome`'s `upload_token` and `max_upload_bytes`;
    /// `None` unless both are there (the server did not grant `files`).
    pub fn from_welcome(token: Option<&str>, max_bytes: Option<u64>) -> Option<Self> {
        Some(Self::new(token?, max_bytes?))
    }

    /// The largest file the server accepts, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// The token is a credential: it is kept out of logs and debug output.
impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("token", &"<hidden>")
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// Where the web listener is: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebBase {
    /// `https` when true.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl WebBase {
    /// Parses `http://host[:port]` or `https://host[:port]` (the port 80 or
    /// 443 when not given); a trailing `/` is allowed, another path is not.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "{url:?}: the web listener is an http:// or https:// URL"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!("{url:?}: write only http(s)://host:port"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // A colon inside brackets belongs to an IPv6 address.
            Some((host, port)) if !port.ends_with(']') => (
                host,
                port.parse()
                    .map_err(|_| format!("{url:?}: `{port}` is not a port number"))?,
            ),
            _ => (rest, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// The web listener that goes with a chat server: the same host and port
    /// for a WebSocket (`ws://` gives `http://`, `wss://` `https://`); for
    /// the other transports the same host on [`DEFAULT_WEB_PORT`], over
    /// `http://` for `tcp://` and `https://` for `tls://` and `quic://`
    /// (a server that encrypts chat is taken to encrypt its web listener).
    pub fn for_server(target: &Target) -> Self {
        let (tls, port) = match target.scheme {
            Scheme::Ws => (false, target.port),
            Scheme::Wss => (true, target.port),
            Scheme::Tcp => (false, DEFAULT_WEB_PORT),
            Scheme::Tls | Scheme::Quic => (true, DEFAULT_WEB_PORT),
        };
        Self {
            tls,
            host: target.host.clone(),
            port,
        }
    }

    /// The full URL of `path` (an absolute path such as `/files/…`, as the
    /// server gives it); a URL that already names its scheme is kept as is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("{self}{slash}{path}")
    }

    /// `host:port`, as the `Host` header and the socket address want it.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for WebBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// What the server stored: the answer to a successful upload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Uploaded {
    /// An absolute path on the web listener (`/files/…`): what
    /// `say.attachment` carries.
    pub url: String,
    pub name: String,
    pub size: u64,
    pub mime: String,
}

/// Why an upload failed. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a file")]
    NotAFile { path: String },
    #[error("{name} is {} but the server accepts at most {}", human_size(*size), human_size(*max))]
    TooLarge { name: String, size: u64, max: u64 },
    #[error(
        "the server did not accept the upload token (it ends with the connection it came with)"
    )]
    Unauthorized,
    #[error("the server wants the file's length (HTTP 411)")]
    LengthRequired,
    #[error("the server refused the file as too large (HTTP 413)")]
    RefusedTooLarge,
    #[error("too many uploads; wait a minute and try again (HTTP 429)")]
    RateLimited,
    #[error("the server answered HTTP {status}: {text}")]
    Status { status: u16, text: String },
    #[error("cannot reach the web listener at {base}: {why}")]
    Connect { base: String, why: String },
    #[error("the upload to {base} failed: {why}")]
    Transfer { base: String, why: String },
    #[error("the upload stalled: nothing moved for {}s", STALL_TIMEOUT.as_secs())]
    Stalled,
    #[error("the server's answer is not what an upload returns: {0}")]
    BadAnswer(String),
}

/// Bytes sent so far out of the total, as an upload streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub total: u64,
}

impl Progress {
    /// Whole percent sent (100 for an empty file).
    pub fn percent(self) -> u64 {
        if self.total == 0 {
            100
        } else {
            (self.sent.min(self.total) as u128 * 100 / self.total as u128) as u64
        }
    }
}

/// A size as people read it: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The media type of a file, from its extension: a short table of common
/// types, `application/octet-stream` for anything else.
pub fn guess_mime(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// `Content-Disposition` for a file called `name` (see
/// [`anteroom_protocol::disposition`]).
pub fn content_disposition(name: &str) -> String {
    anteroom_protocol::disposition::content_disposition(name)
}

/// The request for uploading `size` bytes of a file called `name`, with
/// `body` as its body.
pub fn request<B>(
    base: &WebBase,
    ticket: &Ticket,
    name: &str,
    size: u64,
    body: B,
) -> Result<Request<B>, UploadError> {
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = hyper::Uri::from_static("/upload");
    let headers = request.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::try_from(base.authority()).map_err(|_| UploadError::Connect {
            base: base.to_string(),
            why: "the host cannot be written in a request".into(),
        })?,
    );
    // A token that is not a valid header value cannot be the server's.
    headers.insert(
        AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {}", ticket.token))
            .map_err(|_| UploadError::Unauthorized)?,
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(guess_mime(name)));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    // Percent-encoding leaves only visible ASCII: always a valid value.
    if let Ok(value) = HeaderValue::try_from(content_disposition(name)) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(request)
}

/// The name a file is posted under: the last part of its path.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Uploads the file at `path` to the web listener at `base`, calling
/// `progress` as its bytes are sent, and returns what the server stored.
/// `trust` is used for `https://`, as for the chat connection.
///
/// A file larger than the ticket allows is refused before connecting.
pub async fn upload(
    base: &WebBase,
    trust: &Trust,
    ticket: &Ticket,
    path: &Path,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<Uploaded, UploadError> {
    let shown = path.display().to_string();
    let read_failed = |error| UploadError::Read {
        path: shown.clone(),
        error,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_failed)?;
    let meta = file.metadata().await.map_err(read_failed)?;
    if !meta.is_file() {
        return Err(UploadError::NotAFile { path: shown });
    }
    let name = file_name(path);
    let size = meta.len();
    if size > ticket.max_bytes {
        return Err(UploadError::TooLarge {
            name,
            size,
            max: ticket.max_bytes,
        });
    }
    let sent = Arc::new(AtomicU64::new(0));
    let body = file_body(file, size, sent.clone(), progress);
    let request = request(base, ticket, &name, size, body)?;
    let exchange = async {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(base, trust))
            .await
            .map_err(|_| UploadError::Connect {
                base: base.to_string(),
                why: format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
            })??;
        send(base, connected, request).await
    };
    // Every second, check that bytes moved; an answer counts as movement
    // only by ending the exchange.
    tokio::pin!(exchange);
    let mut last = 0;
    let mut still = Duration::ZERO;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            outcome = &mut exchange => return outcome,
            _ = tick.tick() => {
                let now = sent.load(Ordering::Relaxed);
                if now == last {
                    still += Duration::from_secs(1);
                    if still >= STALL_TIMEOUT {
                        return Err(UploadError::Stalled);
                    }
                } else {
                    (last, still) = (now, Duration::ZERO);
                }
            }
        }
    }
}

/// The file as a request body, in chunks of [`CHUNK`] bytes, never more
/// than `size` bytes in all (a file that grows meanwhile is cut there; one
/// that shrinks ends the body early, which fails the request).
fn file_body(
    file: tokio::fs::File,
    size: u64,
    sent: Arc<AtomicU64>,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send> {
    progress(Progress {
        sent: 0,
        total: size,
    });
    let state = (file.take(size), sent, progress);
    let chunks =
        futures_util::stream::unfold(state, move |(mut file, sent, progress)| async move {
            let mut buf = vec![0; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let total = sent.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                    progress(Progress {
                        sent: total,
                        total: size,
                    });
                    Some((Ok(Frame::data(Bytes::from(buf))), (file, sent, progress)))
                }
                Err(error) => Some((Err(error), (file, sent, progress))),
            }
        });
    StreamBody::new(chunks)
}

/// A byte stream to the web listener: TCP, or TLS for `https://`.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

async fn connect(base: &WebBase, trust: &Trust) -> Result<Box<dyn Stream>, UploadError> {
    let failed = |why: String| UploadError::Connect {
        base: base.to_string(),
        why,
    };
    let stream = TcpStream::connect(base.authority().as_str())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    if !base.tls {
        return Ok(Box::new(stream));
    }
    let mut config = transport::tls_config(trust, &[&version::TLS13, &version::TLS12], None)
        .map_err(|e| failed(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = transport::server_name(&base.host).map_err(|e| failed(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| failed(format!("TLS: {e}")))?;
    Ok(Box::new(tls))
}

/// Sends `request` on `stream` with HTTP/1.1 and reads the answer.
async fn send<B>(
    base: &WebBase,
    stream: Box<dyn Stream>,
    request: Request<B>,
) -> Result<Uploaded, UploadError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let failed = |why: String| UploadError::Transfer {
        base: base.to_string(),
        why,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // The connection task ends with the exchange: the sender is dropped.
    let driver = tokio::spawn(connection);
    let outcome = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        answer(status, &body)
    }
    .await;
    drop(sender);
    driver.abort();
    outcome
}

/// What an answer to `POST /upload` means.
pub fn answer(status: StatusCode, body: &[u8]) -> Result<Uploaded, UploadError> {
    match status.as_u16() {
        201 => serde_json::from_slice(body).map_err(|e| UploadError::BadAnswer(e.to_string())),
        401 => Err(UploadError::Unauthorized),
        411 => Err(UploadError::LengthRequired),
        413 => Err(UploadError::RefusedTooLarge),
        429 => Err(UploadError::RateLimited),
        other => {
            // A short reason from the body, if it has one; shown escaped by
            // whoever shows it.
            let text: String = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect();
            Err(UploadError::Status {
                status: other,
                text: if text.is_empty() {
                    status.canonical_reason().unwrap_or("").to_string()
                } else {
                    text
                },
            })
        }
    }
}

#[cfg(test)]
mod tests;
