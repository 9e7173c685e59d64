//! `ws://` and `wss://`: the web listener's `/ws`, where one binary
//! WebSocket message carries one map, without the 4-byte length prefix.
//!
//! The rest of the client speaks length-prefixed frames over a byte stream
//! ([`Connection`](crate::Connection) is generic over its two halves), so a
//! pump task sits between the two: the caller gets one end of an in-memory
//! pipe, and the pump turns every frame written there into a binary
//! message (the prefix removed) and every binary message from the server
//! into a frame (the prefix added).
//!
//! Closing works both ways. The server's close frame is answered (by the
//! WebSocket layer) and the pipe then ends, so the caller reads the end of
//! the stream after the server's last frame. When the caller stops writing
//! (shuts its half down or drops the connection), the pump sends a close
//! with code 1000 and waits a little for the server's answer.

use std::time::Duration;

use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::{BoxRead, BoxWrite, Target};
use crate::ClientError;

/// The WebSocket subprotocol of anteroom, offered in every upgrade.
pub const SUBPROTOCOL: &str = "anteroom.v1";

/// Bytes the pipe between the caller and the pump holds each way.
const PIPE_BYTES: usize = 64 * 1024;

/// How long the pump waits for the server's close after sending its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Upgrades `stream` (TCP or TLS) to a WebSocket at `target`'s path and
/// returns the two halves of a byte stream carrying length-prefixed frames.
pub(super) async fn dial<S>(stream: S, target: &Target) -> Result<(BoxRead, BoxWrite), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |error: std::io::Error| ClientError::Connect {
        addr: target.to_string(),
        error,
    };
    let mut request = target
        .to_string()
        .into_client_request()
        .map_err(|e| ClientError::Address(format!("{target}: {e}")))?;
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_SERVER_FRAME_BYTES))
        .max_frame_size(Some(MAX_SERVER_FRAME_BYTES));
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|error| match error {
            WsError::Io(error) => failed(error),
            WsError::Http(response) => failed(std::io::Error::other(format!(
                "the WebSocket upgrade was refused: HTTP {}",
                response.status()
            ))),
            other => failed(std::io::Error::other(format!(
                "the WebSocket upgrade failed: {other}"
            ))),
        })?;
    let (caller, pump) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(run(socket, pump));
    let (read, write) = tokio::io::split(caller);
    Ok((Box::new(read), Box::new(write)))
}

/// Moves frames between the pipe and the WebSocket until either ends.
async fn run<S>(mut socket: WebSocketStream<S>, pipe: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(pipe);
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_SERVER_FRAME_BYTES)
        .new_codec();
    let mut frames = FramedRead::new(read, codec);
    // Set once the caller is done writing and our close is sent.
    let mut closing = None;
    loop {
        tokio::select! {
            frame = frames.next(), if closing.is_none() => match frame {
                Some(Ok(payload)) => {
                    if socket.send(Message::Binary(payload.freeze())).await.is_err() {
                        break;
                    }
                }
                // The caller is done (or wrote a length no server takes).
                _ => {
                    let _ = socket.close(Some(close(CloseCode::Normal))).await;
                    closing = Some(Box::pin(tokio::time::sleep(CLOSE_WAIT)));
                }
            },
            message = socket.next() => match message {
                Some(Ok(Message::Binary(payload))) => {
                    let Ok(len) = u32::try_from(payload.len()) else { break };
                    let delivered = async {
                        write.write_all(&len.to_be_bytes()).await?;
                        write.write_all(&payload).await
                    };
                    if delivered.await.is_err() {
                        // Nobody reads any more: say goodbye.
                        if closing.is_none() {
                            let _ = tokio::time::timeout(
                                CLOSE_WAIT,
                                socket.close(Some(close(CloseCode::Normal))),
                            )
                            .await;
                        }
                        break;
                    }
                }
                // anteroom sends no text: not a server we can talk to.
                Some(Ok(Message::Text(_))) => {
                    let _ = tokio::time::timeout(
                        CLOSE_WAIT,
                        socket.close(Some(close(CloseCode::Unsupported))),
                    )
                    .await;
                    break;
                }
                // Pings and the server's close are answered by the
                // WebSocket layer as reading goes on; the stream then ends.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
            _ = async { closing.as_mut().expect("set").await }, if closing.is_some() => break,
        }
    }
    let _ = write.shutdown().await;
}

fn close(code: CloseCode) -> CloseFrame {
    CloseFrame {
        code,
        reason: "".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use anteroom_protocol::{ClientMessage, ServerMessage};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    use super::*;
    use crate::Connection;

    /// A WebSocket server for one connection at `/ws`, checking the
    /// subprotocol offer and selecting it; `serve` gets the socket.
    async fn serve_one<F, Fut>(serve: F) -> (String, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // The callback's signature is the library's.
            #[allow(clippy::result_large_err)]
            let check = |request: &Request, mut response: Response| {
                assert_eq!(request.uri().path(), "/ws");
                let offered = request.headers().get(SEC_WEBSOCKET_PROTOCOL);
                assert_eq!(offered.and_then(|v| v.to_str().ok()), Some(SUBPROTOCOL));
                response.headers_mut().insert(
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(response)
            };
            let socket = tokio_tungstenite::accept_hdr_async(stream, check)
                .await
                .unwrap();
            serve(socket).await;
        });
        (url, task)
    }

    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("in time")
    }

    fn say(text: &str) -> Vec<u8> {
        ClientMessage::Say {
            text: Cow::Borrowed(text),
            attachment: None,
        }
        .to_frame()[4..]
            .to_vec()
    }

    #[tokio::test]
    async fn frames_travel_as_binary_messages_and_the_servers_close_is_answered() {
        let message = ServerMessage::Message {
            id: 1,
            from: "ann".into(),
            text: "hi".into(),
            ts: 5,
            attachment: None,
        };
        let sent = message.to_frame()[4..].to_vec();
        let (url, server) = serve_one(move |mut ws| async move {
            let first = ws.next().await.unwrap().unwrap();
            assert_eq!(first, Message::Binary(say("hi").into()), "no length prefix");
            ws.send(Message::Ping(b"are you there".to_vec().into()))
                .await
                .unwrap();
            ws.send(Message::Binary(sent.into())).await.unwrap();
            ws.send(Message::Close(Some(close(CloseCode::Normal))))
                .await
                .unwrap();
            let pong = ws.next().await.unwrap().unwrap();
            assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
                other => panic!("expected the client's close, got {other:?}"),
            }
            assert!(ws.next().await.is_none(), "the connection ends");
        })
        .await;
        let mut connection = within(Connection::builder().dial(&url)).await.unwrap();
        connection
            .send(&ClientMessage::Say {
                text: Cow::Borrowed("hi"),
                attachment: None,
            })
            .await
            .unwrap();
        assert_eq!(within(connection.next_event()).await.unwrap(), message);
        assert!(matches!(
            within(connection.next_event()).await,
            Err(ClientError::Closed)
        ));
        within(server).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_dropped_by_the_caller_closes_with_1000() {
        let (url, server) = serve_one(|mut ws| async move {
            let first = ws.next().await.unwrap().unwrap();
            assert_eq!(first, Message::Binary(say("bye now").into()));
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
                other => panic!("expected a close, got {other:?}"),
            }
            // The close is answered (on the next read), and the client
            // then hangs up.
            assert!(ws.next().await.is_none());
        })
        .await;
        let mut connection = within(Connection::builder().dial(&url)).await.unwrap();
        connection
            .send(&ClientMessage::Say {
                text: Cow::Borrowed("bye now"),
                attachment: None,
            })
            .await
            .unwrap();
        drop(connection);
        within(server).await.unwrap();
    }

    #[tokio::test]
    async fn a_server_without_websocket_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let refusal = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
            stream.write_all(refusal).await.unwrap();
        });
        match within(Connection::builder().dial(&url)).await {
            Err(error @ ClientError::Connect { .. }) => {
                assert!(error.to_string().contains("403"), "{error}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("connected without an upgrade"),
        }
        server.await.unwrap();
    }
}
