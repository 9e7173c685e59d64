//! The connections that publish, on each broker measured.

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use anteroom_client::protocol::ClientMessage;

/// A connection that publishes.
pub(super) enum Publisher {
    Anteroom(OwnedWriteHalf),
    /// Redis: pre-encoded PUBLISH commands on a raw socket; a task drains
    /// the replies, so publishing never waits for one (pipelined).
    #[cfg(feature = "compare")]
    Redis(OwnedWriteHalf),
    #[cfg(feature = "compare")]
    Nats(async_nats::Client),
}

impl Publisher {
    pub(super) async fn send(&mut self, text: &str) -> bool {
        match self {
            Publisher::Anteroom(writer) => {
                let frame = ClientMessage::Say { text: text.into() }.to_frame();
                writer.write_all(&frame).await.is_ok()
            }
            #[cfg(feature = "compare")]
            Publisher::Redis(writer) => {
                let command = redis::cmd("PUBLISH")
                    .arg("room")
                    .arg(text)
                    .get_packed_command();
                writer.write_all(&command).await.is_ok()
            }
            #[cfg(feature = "compare")]
            Publisher::Nats(client) => client
                .publish("room", text.to_string().into())
                .await
                .is_ok(),
        }
    }
}
