//! The chat client's connection: joins, forwards events, sends requests,
//! and on loss reconnects with backoff under the same name.

use std::time::Duration;

use tokio::sync::mpsc;

use std::borrow::Cow;

use super::{Dial, escape, grant};
use crate::protocol::{ByeReason, ClientMessage, ErrorCode};
use crate::{Admission, ClientError, Connection, Event};

/// What the user wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Say(String),
    /// A file the server stored, posted with a caption (possibly empty).
    Attach {
        text: String,
        url: String,
    },
    Whisper {
        to: String,
        text: String,
    },
    /// A page of the chat log: `limit` messages with ids below `before`.
    History {
        before: Option<i64>,
        limit: i64,
    },
    Who,
    /// Leave: send `bye`, wait for the server's, stop.
    Bye,
}

/// What the connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    Connecting {
        attempt: u32,
    },
    Admitted(Admission),
    Event(Event),
    /// The connection is gone; the next attempt is in `retry_in`.
    Lost {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// Giving up (a refused name, or the user left).
    Finished {
        reason: Option<String>,
    },
}

/// When to stop retrying.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Keep retrying when the server is full (interactive use) or give up
    /// (scripts want an answer).
    pub when_full: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts the connection task.
pub fn spawn(
    server: Dial,
    name: String,
    retry: Retry,
) -> (mpsc::Sender<Outgoing>, mpsc::Receiver<Net>) {
    let (out_tx, out_rx) = mpsc::channel(256);
    let (net_tx, net_rx) = mpsc::channel(1024);
    tokio::spawn(run(server, name, retry, out_rx, net_tx));
    (out_tx, net_rx)
}

enum Ended {
    Left,
    Lost(String),
    Fatal(String),
}

async fn run(
    server: Dial,
    name: String,
    retry: Retry,
    mut out: mpsc::Receiver<Outgoing>,
    net: mpsc::Sender<Net>,
) {
    let mut attempt = 0u32;
    let mut backoff = FIRST_BACKOFF;
    let mut ever_joined = false;
    loop {
        attempt += 1;
        let _ = net.send(Net::Connecting { attempt }).await;
        let ended = session(
            &server,
            &name,
            retry,
            &mut ever_joined,
            &mut out,
            &net,
            &mut backoff,
        )
        .await;
        let reason = match ended {
            Ended::Left => {
                let _ = net.send(Net::Finished { reason: None }).await;
                return;
            }
            Ended::Fatal(reason) => {
                let _ = net
                    .send(Net::Finished {
                        reason: Some(escape::text(&reason).into_owned()),
                    })
                    .await;
                return;
            }
            // A reason may quote the server (a refusal's text, a frame
            // that failed to decode): it is shown, so it is escaped.
            Ended::Lost(reason) => escape::text(&reason).into_owned(),
        };
        if backoff == FIRST_BACKOFF {
            // The connection that was just lost had joined: count afresh.
            attempt = 0;
        }
        let _ = net
            .send(Net::Lost {
                reason,
                attempt: attempt + 1,
                retry_in: backoff,
            })
            .await;
        // Wait out the backoff, but leave at once if asked to.
        let deadline = tokio::time::sleep(backoff);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                request = out.recv() => match request {
                    None | Some(Outgoing::Bye) => {
                        let _ = net.send(Net::Finished { reason: None }).await;
                        return;
                    }
                    // Nothing can be sent while disconnected.
                    Some(_) => {}
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    server: &Dial,
    name: &str,
    retry: Retry,
    joined_before: &mut bool,
    out: &mut mpsc::Receiver<Outgoing>,
    net: &mpsc::Sender<Net>,
    backoff: &mut Duration,
) -> Ended {
    let dialled = Connection::builder()
        .trust(server.trust.clone())
        .features(grant::asked())
        .dial(&server.server)
        .await;
    let mut connection = match dialled {
        Ok(c) => c,
        // A refused certificate or a bad address does not mend by retrying.
        Err(error @ ClientError::Tls { .. })
            if matches!(server.trust, crate::Trust::PublicRoots) =>
        {
            return Ended::Fatal(format!(
                "{error} (a self-signed or private certificate needs --ca FILE)"
            ));
        }
        Err(
            error @ (ClientError::Tls { .. } | ClientError::Trust { .. } | ClientError::Address(_)),
        ) => return Ended::Fatal(error.to_string()),
        Err(error) => return Ended::Lost(error.to_string()),
    };
    match connection.join(name).await {
        Ok(admission) => {
            *backoff = FIRST_BACKOFF;
            *joined_before = true;
            let _ = net.send(Net::Admitted(admission)).await;
        }
        // Rejoining, our old connection may not be gone yet: try again.
        Err(ClientError::Refused {
            code: ErrorCode::NameTaken,
            ..
        }) if *joined_before => {
            return Ended::Lost("the name is still held by the old connection".into());
        }
        Err(ClientError::Refused { code, text }) => return Ended::Fatal(format!("{code}: {text}")),
        Err(ClientError::Bye {
            reason: ByeReason::ServerFull,
            text,
        }) if !retry.when_full => {
            let reason = ByeReason::ServerFull;
            return Ended::Fatal(format!("{reason}: {text}"));
        }
        Err(error) => return Ended::Lost(error.to_string()),
    }
    let (mut reader, mut writer) = connection.split();
    let mut leaving = false;
    loop {
        tokio::select! {
            event = reader.next_event() => match event {
                Ok(event) if event.answer().is_some() => {
                    let Some(pong) = event.answer() else { continue };
                    if let Err(error) = writer.send(&pong).await {
                        return Ended::Lost(error.to_string());
                    }
                }
                Ok(Event::Bye { reason, text }) => {
                    let _ = net.send(Net::Event(Event::Bye { reason, text })).await;
                    return match reason {
                        _ if leaving => Ended::Left,
                        ByeReason::Bye => Ended::Left,
                        _ => Ended::Lost(format!("server closed the connection: {reason}")),
                    };
                }
                Ok(event) => {
                    if net.send(Net::Event(event)).await.is_err() {
                        return Ended::Left;
                    }
                }
                Err(_) if leaving => return Ended::Left,
                Err(error) => return Ended::Lost(error.to_string()),
            },
            request = out.recv(), if !leaving => {
                let sent = match request {
                    Some(Outgoing::Say(text)) => writer.send(&ClientMessage::say(text)).await,
                    Some(Outgoing::Attach { text, url }) => {
                        writer
                            .send(&ClientMessage::Say {
                                text: Cow::Owned(text),
                                attachment: Some(Cow::Owned(url)),
                            })
                            .await
                    }
                    Some(Outgoing::Whisper { to, text }) => {
                        writer
                            .send(&ClientMessage::Whisper {
                                to: Cow::Owned(to),
                                text: Cow::Owned(text),
                            })
                            .await
                    }
                    Some(Outgoing::History { before, limit }) => {
                        writer
                            .send(&ClientMessage::History {
                                before,
                                limit: Some(limit),
                            })
                            .await
                    }
                    Some(Outgoing::Who) => writer.send(&ClientMessage::Who).await,
                    None | Some(Outgoing::Bye) => {
                        leaving = true;
                        writer.send(&ClientMessage::Bye).await
                    }
                };
                if let Err(error) = sent {
                    return if leaving { Ended::Left } else { Ended::Lost(error.to_string()) };
                }
            }
            // Do not wait forever for the server's goodbye.
            _ = tokio::time::sleep(Duration::from_secs(2)), if leaving => return Ended::Left,
        }
    }
}
