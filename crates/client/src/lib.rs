//! The client side of the protocol, written once: the terminal client and
//! the load generator talk to the broker through this module. (The
//! integration tests keep their own raw client on purpose, so that they do
//! not share code with what they check.)
//!
//! [`Connection`] owns a socket and speaks frames: typed [`Request`]s out,
//! typed [`Event`]s in. [`Connection::join`] performs the handshake and
//! reports whether the client entered the room or is waiting in the queue.

pub mod chat;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use anteroom_protocol::codec::{MAX_SERVER_FRAME_BYTES, encode_frame};
use anteroom_protocol::server::PingId;

/// A request to the server.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request<'a> {
    Hello {
        name: &'a str,
    },
    Say {
        text: &'a str,
    },
    Who,
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<PingId>,
    },
    Bye,
}

/// Something the server sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Welcome {
        name: String,
        users: Vec<String>,
        capacity: u64,
        text: String,
    },
    Queued {
        position: u64,
        waiting: u64,
        text: String,
    },
    Message {
        id: u64,
        from: String,
        text: String,
        ts: u64,
    },
    Joined {
        name: String,
        ts: u64,
    },
    Left {
        name: String,
        reason: String,
        ts: u64,
    },
    Users {
        names: Vec<String>,
    },
    Gap {
        missed: u64,
    },
    Error {
        code: String,
        text: String,
    },
    Ping {
        #[serde(default)]
        id: Option<PingId>,
    },
    Pong {
        #[serde(default)]
        id: Option<PingId>,
    },
    Bye {
        reason: String,
        text: String,
    },
    /// A frame type this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent a frame that is not a valid event: {0}")]
    BadFrame(#[from] rmp_serde::decode::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server refused: {code}: {text}")]
    Refused { code: String, text: String },
    #[error("the server said goodbye: {reason}: {text}")]
    Bye { reason: String, text: String },
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
    pub async fn send(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        self.writer.send(request).await
    }

    /// The next event, answering server pings on the way.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let event = next_event(&mut self.reader).await?;
            if let Event::Ping { id } = &event {
                self.writer.send(&Request::Pong { id: *id }).await?;
                continue;
            }
            return Ok(event);
        }
    }

    /// Sends `hello` and waits for the outcome. A refused name or a full
    /// server is an error; the connection stays usable after a refusal.
    pub async fn join(&mut self, name: &str) -> Result<Admission, ClientError> {
        self.send(&Request::Hello { name }).await?;
        loop {
            match self.next_event().await? {
                Event::Welcome {
                    users,
                    capacity,
                    text,
                    ..
                } => {
                    return Ok(Admission::Welcome {
                        users,
                        capacity,
                        text,
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
                        text,
                    });
                }
                Event::Error { code, text } => return Err(ClientError::Refused { code, text }),
                Event::Bye { reason, text } => return Err(ClientError::Bye { reason, text }),
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
    pub async fn send(&mut self, request: &Request<'_>) -> Result<(), ClientError> {
        let frame: Bytes =
            encode_frame(request).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.io.write_all(&frame).await?;
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
        Some(Ok(payload)) => Ok(rmp_serde::from_slice(&payload)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anteroom_protocol::ServerMessage;

    fn decode(message: ServerMessage<'_>) -> Event {
        let frame = message.to_frame();
        rmp_serde::from_slice(&frame[4..]).unwrap()
    }

    #[test]
    fn decodes_what_the_server_encodes() {
        assert_eq!(
            decode(ServerMessage::Message {
                id: 3,
                from: "ann",
                text: "hi",
                ts: 9
            }),
            Event::Message {
                id: 3,
                from: "ann".into(),
                text: "hi".into(),
                ts: 9
            }
        );
        assert_eq!(
            decode(ServerMessage::Ping { id: None }),
            Event::Ping { id: None }
        );
        assert_eq!(
            decode(ServerMessage::Queued {
                position: 2,
                waiting: 5,
                text: "t".into()
            }),
            Event::Queued {
                position: 2,
                waiting: 5,
                text: "t".into()
            }
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
        assert_eq!(
            rmp_serde::from_slice::<Event>(&payload).unwrap(),
            Event::Unknown
        );
        let value = rmpv::Value::Map(vec![
            ("type".into(), "joined".into()),
            ("name".into(), "bob".into()),
            ("ts".into(), 1.into()),
            ("extra".into(), true.into()),
        ]);
        payload.clear();
        rmpv::encode::write_value(&mut payload, &value).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<Event>(&payload).unwrap(),
            Event::Joined {
                name: "bob".into(),
                ts: 1
            }
        );
    }
}
