//! The connections that publish, on each broker measured: raw sockets (or,
//! for anteroom over TLS and QUIC, the encrypted stream) writing each
//! message as one pre-encoded command, never waiting for a reply (a reader
//! task drains the replies), so publishing costs each broker's load
//! generator about the same.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::wire::{nats_publish, resp_publish};
use crate::ws::client_message;
use anteroom_client::protocol::ClientMessage;
use anteroom_client::transport::BoxWrite;

/// A connection that publishes.
pub(super) enum Publisher {
    /// A member's own connection, over any transport: a `say` frame.
    Anteroom(BoxWrite),
    /// Redis: `PUBLISH room <text>`; a task drains the integer replies.
    Redis(OwnedWriteHalf, Vec<u8>),
    /// NATS: `PUB room <len>`; the writer is shared with the task that
    /// reads the connection and answers the server's `PING`.
    Nats(Arc<tokio::sync::Mutex<OwnedWriteHalf>>, Vec<u8>),
    /// Anteroom over WebSocket: a `say` map in one masked binary frame;
    /// the writer is shared with the member's reader, which answers the
    /// server's `ping` maps.
    Ws(Arc<tokio::sync::Mutex<OwnedWriteHalf>>, Vec<u8>),
}

impl Publisher {
    /// Sends one message; `false` once the connection has failed.
    pub(super) async fn send(&mut self, text: &str) -> bool {
        match self {
            Publisher::Anteroom(writer) => {
                let frame = ClientMessage::Say {
                    text: text.into(),
                    attachment: None,
                }
                .to_frame();
                writer.write_all(&frame).await.is_ok()
            }
            Publisher::Redis(writer, command) => {
                command.clear();
                resp_publish(command, text.as_bytes());
                writer.write_all(command).await.is_ok()
            }
            Publisher::Nats(writer, command) => {
                command.clear();
                nats_publish(command, text.as_bytes());
                writer.lock().await.write_all(command).await.is_ok()
            }
            Publisher::Ws(writer, command) => {
                command.clear();
                client_message(
                    command,
                    &ClientMessage::Say {
                        text: text.into(),
                        attachment: None,
                    },
                );
                writer.lock().await.write_all(command).await.is_ok()
            }
        }
    }
}
