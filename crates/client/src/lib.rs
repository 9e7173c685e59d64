#![cfg_attr(doc, doc = include_str!("../../../docs/client-library.md"))]
//!
//! ## This crate
//!
//! [`Connection`] owns a socket and speaks frames: typed
//! [`ClientMessage`]s out, typed [`ServerMessage`]s in (the vocabulary of
//! [`protocol`], shared with the server). [`Connection::join`] performs the
//! handshake and reports whether the client entered the room or is waiting
//! in the queue. [`Builder::features`] asks for version 1.1 features; a
//! client granted `files` posts files with [`upload`]. The terminal client
//! `anteroom chat` lives in [`chat`].
//! (The integration tests keep their own raw client on purpose, so that they
//! do not share code with what they check.)

pub mod chat;
pub mod transport;
pub mod upload;

use std::borrow::Cow;
use std::time::Duration;

pub use anteroom_protocol as protocol;
use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;
use anteroom_protocol::{ByeReason, ClientMessage, ErrorCode, Features, ServerMessage};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use transport::{BoxRead, BoxWrite};
pub use transport::{Scheme, Target, Trust};
use upload::Ticket;

/// Something the server sent, decoded with owned strings.
pub type Event = ServerMessage<'static>;

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("not a server address: {0}")]
    Address(String),
    #[error("TLS with {addr} failed: {why}")]
    Tls { addr: String, why: String },
    #[error("cannot trust the certificates in {}: {why}", path.display())]
    Trust {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent a frame that is not a valid event: {0}")]
    BadFrame(#[from] anteroom_protocol::ServerDecodeError),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server refused: {}: {text}", code.as_str())]
    Refused { code: ErrorCode, text: String },
    #[error("the server said goodbye: {}: {text}", reason.as_str())]
    Bye { reason: ByeReason, text: String },
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
}

/// Where a client stands after `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// In the room; the users list includes this client.
    Welcome {
        users: Vec<String>,
        capacity: u64,
        text: String,
        /// The features the server granted (none for a version-1 `hello`).
        features: Features,
        /// With `files`: what [`upload::upload`] needs.
        upload: Option<Ticket>,
    },
    /// Waiting in the queue at `position`.
    Queued {
        position: u64,
        waiting: u64,
        text: String,
        /// The features the server granted; the `welcome` that ends the
        /// wait repeats them.
        features: Features,
    },
}

/// The features named in a `welcome` or `queued`; names this version does
/// not know are left out.
pub fn granted<S: AsRef<str>>(features: Option<&[S]>) -> Features {
    features.map_or(Features::NONE, |names| {
        Features::from_names(names.iter().map(AsRef::as_ref))
    })
}

/// One connection to the broker: a TCP socket's halves unless dialled with
/// [`Builder::dial`] ([`AnyConnection`]).
pub struct Connection<R = OwnedReadHalf, W = OwnedWriteHalf> {
    reader: FramedRead<R, LengthDelimitedCodec>,
    writer: Writer<W>,
    join_timeout: Duration,
    features: Features,
}

/// A connection over any transport: TCP, TLS, QUIC or WebSocket.
pub type AnyConnection = Connection<BoxRead, BoxWrite>;

/// The sending half of a connection.
pub struct Writer<W = OwnedWriteHalf> {
    io: W,
}

/// The receiving half of a connection.
pub struct Reader<R = OwnedReadHalf> {
    frames: FramedRead<R, LengthDelimitedCodec>,
}

/// How long [`Connection::connect`] waits for the connection by default
/// (name resolution included).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Connection::join`] waits for the answer to `hello` by default.
/// The server decides at once, so the answer comes in well under a second
/// from a working server; waiting longer only keeps a stalled or hostile
/// server from holding the caller forever.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for a [`Connection`], from [`Connection::builder`]:
///
/// ```no_run
/// # async fn f() -> Result<(), anteroom_client::ClientError> {
/// use std::time::Duration;
/// let conn = anteroom_client::Connection::builder()
///     .connect_timeout(Duration::from_secs(3))
///     .join_timeout(Duration::from_secs(30))
///     .connect("127.0.0.1:7878")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    connect_timeout: Duration,
    join_timeout: Duration,
    trust: Trust,
    features: Features,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            trust: Trust::default(),
            features: Features::NONE,
        }
    }
}

impl Builder {
    /// How long [`Builder::connect`] waits, name resolution included.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`Connection::join`] waits for `welcome`, `queued` or a
    /// refusal after sending `hello`.
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// The version 1.1 features [`Connection::join`] asks for. None by
    /// default: a version-1 `hello`, so that a program written for version 1
    /// never receives frames it does not expect. Asking commits the caller
    /// to handle what each feature adds (a `history` frame after `welcome`,
    /// `whisper` frames, …).
    pub fn features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// Whom TLS, QUIC and `wss://` connections trust (public certificate
    /// authorities unless set).
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Connects to `url`: `tcp://host:port` (or just `host:port`),
    /// `tls://host:port`, `quic://host:port`, or a WebSocket on the web
    /// listener, `ws://host:port/ws` or `wss://host:port/ws` (see
    /// [`Target`]), the handshake included in the connect timeout. A certificate the trust refuses is
    /// [`ClientError::Tls`], with rustls's reason (expired, not valid for
    /// the name, unknown issuer).
    pub async fn dial(self, url: &str) -> Result<AnyConnection, ClientError> {
        let target: Target = url.parse().map_err(ClientError::Address)?;
        let (read, write) =
            tokio::time::timeout(self.connect_timeout, transport::dial(&target, &self.trust))
                .await
                .map_err(|_| ClientError::Connect {
                    addr: target.to_string(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", self.connect_timeout),
                    ),
                })??;
        Ok(self.from_halves(read, write))
    }

    /// Connects to `addr` (`host:port`; a host name is resolved). A server
    /// that does not accept within the connect timeout is an error of kind
    /// [`std::io::ErrorKind::TimedOut`].
    pub async fn connect(self, addr: &str) -> Result<Connection, ClientError> {
        let failed = |error| ClientError::Connect {
            addr: addr.to_string(),
            error,
        };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                failed(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                ))
            })?
            .map_err(failed)?;
        Ok(self.from_stream(stream))
    }

    /// Wraps an already connected socket.
    pub fn from_stream(self, stream: TcpStream) -> Connection {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        self.from_halves(read, write)
    }

    /// Wraps the two halves of any byte stream carrying the frames.
    pub fn from_halves<R, W>(self, read: R, write: W) -> Connection<R, W>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(MAX_SERVER_FRAME_BYTES)
            .new_codec();
        Connection {
            reader: FramedRead::with_capacity(read, codec, 1024),
            writer: Writer { io: write },
            join_timeout: self.join_timeout,
            features: self.features,
        }
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), waiting at most
    /// [`DEFAULT_CONNECT_TIMEOUT`]; [`Connection::builder`] sets other
    /// timeouts.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Builder::default().connect(addr).await
    }

    /// Settings for a connection other than the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Wraps an already connected socket, with the default join timeout.
    pub fn from_stream(stream: TcpStream) -> Self {
        Builder::default().from_stream(stream)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    /// Sends one request.
    pub async fn send(&mut self, request: &ClientMessage<'_>) -> Result<(), ClientError> {
        self.writer.send(request).await
    }

    /// The next event, answering server pings on the way.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let event = next_event(&mut self.reader).await?;
            if let Some(answer) = event.answer() {
                self.writer.send(&answer).await?;
                continue;
            }
            return Ok(event);
        }
    }

    /// Sends `hello` and waits for the outcome. A refused name or a full
    /// server is an error; the connection stays usable after a refusal.
    ///
    /// No outcome within the join timeout ([`DEFAULT_JOIN_TIMEOUT`] unless
    /// set by [`Builder::join_timeout`]) is [`ClientError::Timeout`]; the
    /// connection should then be dropped, as the server's answer may still
    /// come.
    pub async fn join(&mut self, name: &str) -> Result<Admission, ClientError> {
        let limit = self.join_timeout;
        tokio::time::timeout(limit, self.join_now(name))
            .await
            .map_err(|_| ClientError::Timeout(limit))?
    }

    async fn join_now(&mut self, name: &str) -> Result<Admission, ClientError> {
        let features = (!self.features.is_empty()).then(|| {
            self.features
                .names()
                .into_iter()
                .map(Cow::Borrowed)
                .collect()
        });
        self.send(&ClientMessage::Hello {
            name: Cow::Borrowed(name),
            features,
            last_id: None,
            resume: None,
        })
        .await?;
        loop {
            match self.next_event().await? {
                Event::Welcome {
                    users,
                    capacity,
                    text,
                    features,
                    upload_token,
                    max_upload_bytes,
                    ..
                } => {
                    return Ok(Admission::Welcome {
                        users: users.into_iter().map(Cow::into_owned).collect(),
                        capacity,
                        text: text.into_owned(),
                        features: granted(features.as_deref()),
                        upload: Ticket::from_welcome(upload_token.as_deref(), max_upload_bytes),
                    });
                }
                Event::Queued {
                    position,
                    waiting,
                    text,
                    features,
                    ..
                } => {
                    return Ok(Admission::Queued {
                        position,
                        waiting,
                        text: text.into_owned(),
                        features: granted(features.as_deref()),
                    });
                }
                Event::Error { code, text } => {
                    return Err(ClientError::Refused {
                        code,
                        text: text.into_owned(),
                    });
                }
                Event::Bye { reason, text } => {
                    return Err(ClientError::Bye {
                        reason,
                        text: text.into_owned(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Returns the raw frame stream (buffered bytes included) and the socket's
    /// sending half, for callers that decode frames their own way (the load
    /// generator).
    pub fn split_frames(self) -> (FramedRead<R, LengthDelimitedCodec>, W) {
        (self.reader, self.writer.io)
    }

    /// Splits into halves that can be used from different tasks. The reader
    /// then delivers pings, which the caller answers with `Request::Pong`.
    pub fn split(self) -> (Reader<R>, Writer<W>) {
        (
            Reader {
                frames: self.reader,
            },
            self.writer,
        )
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Sends one request, flushed: TLS keeps what a full socket does not
    /// take, and without a flush the end of the frame would wait there for
    /// the next one. (A TCP socket or a QUIC stream has nothing to flush.)
    pub async fn send(&mut self, request: &ClientMessage<'_>) -> Result<(), ClientError> {
        self.io.write_all(&request.to_frame()).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Closes the sending side.
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.io.shutdown().await?;
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// The next event, pings included.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        next_event(&mut self.frames).await
    }
}

async fn next_event<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, LengthDelimitedCodec>,
) -> Result<Event, ClientError> {
    match frames.next().await {
        None => Err(ClientError::Closed),
        Some(Err(error)) => Err(ClientError::Io(error)),
        Some(Ok(payload)) => Ok(ServerMessage::decode(&payload)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_server_encodes() {
        let sent = ServerMessage::Message {
            id: 3,
            from: "ann".into(),
            text: "hi".into(),
            ts: 9,
            attachment: None,
        };
        assert_eq!(ServerMessage::decode(&sent.to_frame()[4..]).unwrap(), sent);
        let ping = ServerMessage::Ping { id: None };
        assert_eq!(ServerMessage::decode(&ping.to_frame()[4..]).unwrap(), ping);
    }

    /// A listener that has accepted as many connections as its backlog
    /// holds and accepts none: a further connection attempt hangs.
    async fn full_listener() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        // Fill the backlog until an attempt is not answered.
        for _ in 0..64 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => held.push(stream),
                Err(_) => return (listener, held),
            }
        }
        panic!("the backlog never filled");
    }

    #[tokio::test]
    async fn connect_gives_up_on_a_server_that_never_accepts() {
        let (listener, _held) = full_listener().await;
        let addr = listener.local_addr().unwrap().to_string();
        // Virtual time: the wait costs nothing and cannot be flaky.
        tokio::time::pause();
        let outcome = tokio::time::timeout(Duration::from_secs(3600), Connection::connect(&addr))
            .await
            .expect("connect gives up by itself");
        match outcome {
            Err(ClientError::Connect { error, .. }) => {
                assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("connected to a full backlog"),
        }
        let outcome = tokio::time::timeout(
            Duration::from_secs(3600),
            Connection::builder()
                .connect_timeout(Duration::from_millis(1))
                .connect(&addr),
        )
        .await
        .expect("connect gives up by itself");
        assert!(matches!(outcome, Err(ClientError::Connect { .. })));
    }

    #[tokio::test]
    async fn join_gives_up_on_a_server_that_never_answers() {
        // The kernel completes the connection; nobody ever reads `hello`.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::time::pause();
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut conn = Connection::from_stream(stream);
        let outcome = tokio::time::timeout(Duration::from_secs(3600), conn.join("ann"))
            .await
            .expect("join gives up by itself");
        assert!(
            matches!(outcome, Err(ClientError::Timeout(t)) if t == DEFAULT_JOIN_TIMEOUT),
            "{outcome:?}"
        );
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut conn = Connection::builder()
            .join_timeout(Duration::from_secs(60))
            .from_stream(stream);
        let outcome = tokio::time::timeout(Duration::from_secs(3600), conn.join("bob"))
            .await
            .expect("join gives up by itself");
        assert!(
            matches!(outcome, Err(ClientError::Timeout(t)) if t == Duration::from_secs(60)),
            "{outcome:?}"
        );
    }

    #[test]
    fn unknown_types_and_keys_are_tolerated() {
        let mut payload = Vec::new();
        let value = rmpv::Value::Map(vec![
            ("type".into(), "fireworks".into()),
            ("colour".into(), "red".into()),
        ]);
        rmpv::encode::write_value(&mut payload, &value).unwrap();
        assert_eq!(ServerMessage::decode(&payload).unwrap(), Event::Unknown);
        let value = rmpv::Value::Map(vec![
            ("type".into(), "left".into()),
            ("name".into(), "bob".into()),
            ("reason".into(), "teleported".into()),
            ("ts".into(), 1.into()),
            ("extra".into(), true.into()),
        ]);
        payload.clear();
        rmpv::encode::write_value(&mut payload, &value).unwrap();
        assert_eq!(
            ServerMessage::decode(&payload).unwrap(),
            Event::Left {
                name: "bob".into(),
                reason: anteroom_protocol::LeftReason::Unknown,
                ts: 1
            }
        );
    }
}
