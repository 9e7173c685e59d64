#![cfg_attr(doc, doc = include_str!("../../../docs/client-library.md"))]
//!
//! ## This crate
//!
//! [`Connection`] owns a socket and speaks frames: typed
//! [`ClientMessage`]s out, typed [`ServerMessage`]s in (the vocabulary of
//! [`protocol`], shared with the server). [`Connection::join`] performs the
//! handshake and reports whether the client entered the room or is waiting
//! in the queue. The terminal client `anteroom chat` lives in [`chat`].
//! (The integration tests keep their own raw client on purpose, so that they
//! do not share code with what they check.)

pub mod chat;

use std::borrow::Cow;
use std::time::Duration;

pub use anteroom_protocol as protocol;
use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;
use anteroom_protocol::{ByeReason, ClientMessage, ErrorCode, ServerMessage};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// Something the server sent, decoded with owned strings.
pub type Event = ServerMessage<'static>;

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
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
    },
    /// Waiting in the queue at `position`.
    Queued {
        position: u64,
        waiting: u64,
        text: String,
    },
}

/// One connection to the broker.
pub struct Connection {
    reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: Writer,
}

/// The sending half of a connection.
pub struct Writer {
    io: OwnedWriteHalf,
}

/// The receiving half of a connection.
pub struct Reader {
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
}

impl Connection {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| ClientError::Connect {
                addr: addr.to_string(),
                error,
            })?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps an already connected socket.
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(MAX_SERVER_FRAME_BYTES)
            .new_codec();
        Self {
            reader: FramedRead::with_capacity(read, codec, 1024),
            writer: Writer { io: write },
        }
    }

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
    pub async fn join(&mut self, name: &str) -> Result<Admission, ClientError> {
        self.send(&ClientMessage::Hello {
            name: Cow::Borrowed(name),
        })
        .await?;
        loop {
            match self.next_event().await? {
                Event::Welcome {
                    users,
                    capacity,
                    text,
                    ..
                } => {
                    return Ok(Admission::Welcome {
                        users: users.into_iter().map(Cow::into_owned).collect(),
                        capacity,
                        text: text.into_owned(),
                    });
                }
                Event::Queued {
                    position,
                    waiting,
                    text,
                } => {
                    return Ok(Admission::Queued {
                        position,
                        waiting,
                        text: text.into_owned(),
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
    pub fn split_frames(
        self,
    ) -> (
        FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
        OwnedWriteHalf,
    ) {
        (self.reader, self.writer.io)
    }

    /// Splits into halves that can be used from different tasks. The reader
    /// then delivers pings, which the caller answers with `Request::Pong`.
    pub fn split(self) -> (Reader, Writer) {
        (
            Reader {
                frames: self.reader,
            },
            self.writer,
        )
    }
}

impl Writer {
    /// Sends one request.
    pub async fn send(&mut self, request: &ClientMessage<'_>) -> Result<(), ClientError> {
        self.io.write_all(&request.to_frame()).await?;
        Ok(())
    }

    /// Closes the sending side.
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.io.shutdown().await?;
        Ok(())
    }
}

impl Reader {
    /// The next event, pings included.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        next_event(&mut self.frames).await
    }
}

async fn next_event(
    frames: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
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
        };
        assert_eq!(ServerMessage::decode(&sent.to_frame()[4..]).unwrap(), sent);
        let ping = ServerMessage::Ping { id: None };
        assert_eq!(ServerMessage::decode(&ping.to_frame()[4..]).unwrap(), ping);
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
