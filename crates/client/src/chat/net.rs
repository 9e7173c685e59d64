//! The chat client's connection: joins, forwards events, sends requests,
//! and on loss reconnects with backoff under the same name.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use std::borrow::Cow;

use super::{Dial, escape, grant};
use crate::protocol::{ByeReason, ClientMessage, ErrorCode};
use crate::{Admission, ClientError, Connection, Event, Resume};

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
        /// Until when the server holds our seat or queue place, if it does.
        held_until: Option<Instant>,
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
    /// `held`: the server holds the place for a resume (a drop, not a
    /// goodbye it said for another reason).
    Lost {
        reason: String,
        held: bool,
    },
    Fatal(String),
}

impl Ended {
    fn lost(reason: impl Into<String>) -> Self {
        Ended::Lost {
            reason: reason.into(),
            held: false,
        }
    }

    fn dropped(reason: impl Into<String>) -> Self {
        Ended::Lost {
            reason: reason.into(),
            held: true,
        }
    }
}

/// What carries over from one connection to the next: whether this stay
/// has ever joined, and what takes a dropped place back (the newest token
/// and the last message seen).
#[derive(Debug, Default)]
struct Comeback {
    joined: bool,
    resume: Option<Resume>,
    last_id: Option<u64>,
}

impl Comeback {
    /// Takes in the tokens and message ids of what the server sent.
    fn saw(&mut self, event: &Event) {
        match event {
            Event::Welcome {
                resume: Some(token),
                resume_grace_s,
                ..
            }
            | Event::Queued {
                resume: Some(token),
                resume_grace_s,
                ..
            } => self.token(token, *resume_grace_s),
            Event::Message { id, .. } => self.message(*id),
            Event::History { messages, .. } => {
                for message in messages {
                    if let Event::Message { id, .. } = message {
                        self.message(*id);
                    }
                }
            }
            _ => {}
        }
    }

    fn admitted(&mut self, admission: &Admission) {
        let (Admission::Welcome { resume, .. } | Admission::Queued { resume, .. }) = admission;
        if let Some(resume) = resume {
            self.token(
                &resume.token,
                Some(resume.grace.as_secs()).filter(|s| *s > 0),
            );
        }
    }

    /// A newer token replaces the last; the grace is said only now and
    /// then, so it is kept.
    fn token(&mut self, token: &str, grace_s: Option<u64>) {
        let grace = grace_s
            .map(Duration::from_secs)
            .or(self.resume.as_ref().map(|r| r.grace))
            .unwrap_or_default();
        self.resume = Some(Resume {
            token: token.to_string(),
            grace,
        });
    }

    fn message(&mut self, id: u64) {
        self.last_id = Some(self.last_id.map_or(id, |last| last.max(id)));
    }
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
    let mut comeback = Comeback::default();
    let mut held_until: Option<Instant> = None;
    loop {
        attempt += 1;
        let _ = net.send(Net::Connecting { attempt }).await;
        let ended = session(
            &server,
            &name,
            retry,
            &mut out,
            &net,
            &mut backoff,
            &mut comeback,
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
            Ended::Lost { reason, held } => {
                if backoff == FIRST_BACKOFF {
                    // The connection just lost had joined: its place is
                    // held from now, if the server holds places.
                    held_until = comeback
                        .resume
                        .as_ref()
                        .filter(|r| held && !r.grace.is_zero())
                        .map(|r| Instant::now() + r.grace);
                }
                escape::text(&reason).into_owned()
            }
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
                held_until,
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
    out: &mut mpsc::Receiver<Outgoing>,
    net: &mpsc::Sender<Net>,
    backoff: &mut Duration,
    comeback: &mut Comeback,
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
        Err(error) => return Ended::lost(error.to_string()),
    };
    // Back after a drop: take the held place back, silently.
    let joined = match &comeback.resume {
        Some(resume) => {
            let token = resume.token.clone();
            connection.rejoin(name, &token, comeback.last_id).await
        }
        None => connection.join(name).await,
    };
    match joined {
        Ok(admission) => {
            *backoff = FIRST_BACKOFF;
            comeback.joined = true;
            comeback.admitted(&admission);
            let _ = net.send(Net::Admitted(admission)).await;
        }
        // Rejoining, our old connection may not be gone yet: try again.
        Err(ClientError::Refused {
            code: ErrorCode::NameTaken,
            ..
        }) if comeback.joined => {
            return Ended::lost("the name is still held by the old connection");
        }
        Err(ClientError::Refused { code, text }) => return Ended::Fatal(format!("{code}: {text}")),
        Err(ClientError::Bye {
            reason: ByeReason::ServerFull,
            text,
        }) if !retry.when_full => {
            let reason = ByeReason::ServerFull;
            return Ended::Fatal(format!("{reason}: {text}"));
        }
        Err(error) => return Ended::lost(error.to_string()),
    }
    let (mut reader, mut writer) = connection.split();
    let mut leaving = false;
    loop {
        tokio::select! {
            event = reader.next_event() => match event {
                Ok(event) if event.answer().is_some() => {
                    let Some(pong) = event.answer() else { continue };
                    if let Err(error) = writer.send(&pong).await {
                        return Ended::dropped(error.to_string());
                    }
                }
                Ok(Event::Bye { reason, text }) => {
                    let _ = net.send(Net::Event(Event::Bye { reason, text })).await;
                    let why = format!("server closed the connection: {reason}");
                    return match reason {
                        _ if leaving => Ended::Left,
                        ByeReason::Bye => Ended::Left,
                        // The server holds places for these.
                        ByeReason::SlowConsumer | ByeReason::IdleTimeout => Ended::dropped(why),
                        _ => Ended::lost(why),
                    };
                }
                Ok(event) => {
                    comeback.saw(&event);
                    if net.send(Net::Event(event)).await.is_err() {
                        return Ended::Left;
                    }
                }
                Err(_) if leaving => return Ended::Left,
                Err(error) => return Ended::dropped(error.to_string()),
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
                    return if leaving { Ended::Left } else { Ended::dropped(error.to_string()) };
                }
            }
            // Do not wait forever for the server's goodbye.
            _ = tokio::time::sleep(Duration::from_secs(2)), if leaving => return Ended::Left,
        }
    }
}
