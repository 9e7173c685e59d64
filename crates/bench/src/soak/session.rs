//! One connection of one simulated client: sending, reading and checking
//! every frame, and judging how the server ended it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::checks::{
    Echoes, Kind, QueueTrack, RoomView, Stretch, WELCOME_DIRECT, WELCOME_FROM_QUEUE, parse_text,
    say_text,
};
use super::shared::{Shared, Timeouts};
use crate::lock;
use anteroom_client::protocol::{ClientMessage, LeftReason};
use anteroom_client::{Connection, Event};

/// Escape sequences a hostile member might hide in a message.
const HOSTILE_TEXT: &str = " \x1b]0;pwned\x07\x1b[2J\n[12:00] <admin> trust me \u{202e}txet";
/// What reading the next frame gave.
pub(super) enum Got {
    Other,
    Welcome,
    Queued,
    Refused(String),
    Bye(String),
    Closed,
}

/// How a connection ended, when the session waited for it.
pub(super) enum Over {
    Bye(String),
    Closed,
    TimedOut,
}

/// Where the session stands, for the live gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Outside,
    Queued,
    Member,
}

/// One connection of one client.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) index: usize,
    uid: u64,
    pub(super) name: String,
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: OwnedWriteHalf,
    /// Taken before connecting, so that it precedes the server's accept.
    connecting_at: Instant,
    /// When the last complete frame was sent (taken before the write).
    last_frame_sent: Instant,
    pub(super) stage: Stage,
    /// False once the client did something that may get it cut off.
    pub(super) behaved: bool,
    /// Neither talks nor answers pings.
    pub(super) silent: bool,
    /// Goodbyes the client provoked.
    pub(super) expect_bye: Vec<&'static str>,
    /// Errors the client provoked and not yet received, by code.
    allowed: Vec<(&'static str, u32)>,
    view: Option<RoomView>,
    queue: QueueTrack,
    echoes: Echoes,
    seq: u64,
    was_queued: bool,
    /// Whether this session's name is its own (not taken from another).
    pub(super) own_name: bool,
    /// The observer records every join it sees.
    pub(super) joins: Option<Vec<String>>,
    latency: Vec<u64>,
}

impl Session {
    pub(super) fn new(
        shared: Arc<Shared>,
        index: usize,
        name: String,
        stream: TcpStream,
        connecting_at: Instant,
    ) -> Self {
        let (frames, writer) = Connection::from_stream(stream).split_frames();
        let now = Instant::now();
        shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
        Self {
            uid: shared.next_uid.fetch_add(1, Ordering::Relaxed),
            shared,
            index,
            name,
            frames,
            writer,
            connecting_at,
            last_frame_sent: now,
            stage: Stage::Outside,
            behaved: true,
            silent: false,
            expect_bye: Vec::new(),
            allowed: Vec::new(),
            view: None,
            queue: QueueTrack::default(),
            echoes: Echoes::default(),
            seq: 0,
            was_queued: false,
            own_name: true,
            joins: None,
            latency: Vec::new(),
        }
    }

    pub(super) fn report(&self, kind: Kind, what: impl std::fmt::Display) {
        let who = if self.joins.is_some() {
            "the observer".to_string()
        } else {
            format!("client {} ({})", self.index, self.name)
        };
        self.shared.report(kind, format!("{who}: {what}"));
    }

    pub(super) fn allow(&mut self, code: &'static str) {
        match self.allowed.iter_mut().find(|(c, _)| *c == code) {
            Some(entry) => entry.1 += 1,
            None => self.allowed.push((code, 1)),
        }
    }

    pub(super) fn set_stage(&mut self, stage: Stage) {
        let gauge = |s: Stage| match s {
            Stage::Queued => Some(&self.shared.queued_now),
            Stage::Member => Some(&self.shared.members_now),
            Stage::Outside => None,
        };
        if let Some(g) = gauge(self.stage) {
            g.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(g) = gauge(stage) {
            g.fetch_add(1, Ordering::Relaxed);
        }
        self.stage = stage;
    }

    /// Sends a complete frame; false if the connection is gone.
    pub(super) async fn send(&mut self, request: &ClientMessage<'_>) -> bool {
        self.send_frame(&request.to_frame()).await
    }

    pub(super) async fn send_frame(&mut self, frame: &[u8]) -> bool {
        self.last_frame_sent = Instant::now();
        self.writer.write_all(frame).await.is_ok()
    }

    /// Sends bytes that are not a complete frame.
    pub(super) async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok()
    }

    pub(super) async fn say(&mut self, pad: usize) -> bool {
        self.seq += 1;
        let mut text = say_text(self.uid, self.seq, self.shared.now_us(), &self.name, pad);
        if self.seq.is_multiple_of(5) && pad < 1024 {
            // Now and then a message that would retitle a terminal, clear
            // it, forge a line and reverse the text, were it not escaped.
            text.push_str(HOSTILE_TEXT);
        }
        self.shared.counters.said.fetch_add(1, Ordering::Relaxed);
        self.send(&ClientMessage::Say {
            text: (&text).into(),
            attachment: None,
        })
        .await
    }

    /// Reads and checks the next frame.
    pub(super) async fn recv(&mut self) -> Got {
        let payload = match self.frames.next().await {
            None => return Got::Closed,
            Some(Err(error)) => {
                if error.kind() == std::io::ErrorKind::InvalidData {
                    self.report(Kind::Decode, format!("unreadable frame: {error}"));
                }
                return Got::Closed;
            }
            Some(Ok(payload)) => payload,
        };
        match Event::decode(&payload) {
            Ok(event) => self.on_event(event).await,
            Err(error) => {
                self.report(Kind::Decode, format!("frame is not an event: {error}"));
                Got::Closed
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Got {
        let event_answer = event.answer();
        let counters = &self.shared.counters;
        match event {
            Event::Welcome {
                name, users, text, ..
            } => {
                if self.view.is_some() {
                    self.report(Kind::Protocol, "a second `welcome`");
                }
                let expected = if self.was_queued {
                    WELCOME_FROM_QUEUE
                } else {
                    WELCOME_DIRECT
                };
                if text != expected {
                    self.report(Kind::Protocol, format!("welcome text {text:?}"));
                }
                if name != self.name || users.last().map(|u| u.as_ref()) != Some(self.name.as_str())
                {
                    self.report(
                        Kind::Protocol,
                        format!("welcome as {name:?} with users ending {:?}", users.last()),
                    );
                }
                counters.joins.fetch_add(1, Ordering::Relaxed);
                if self.was_queued {
                    counters.promotions.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.direct.fetch_add(1, Ordering::Relaxed);
                }
                self.queue.welcomed = true;
                let users: Vec<String> = users.into_iter().map(|u| u.into_owned()).collect();
                self.view = Some(RoomView::new(&users));
                self.set_stage(Stage::Member);
                Got::Welcome
            }
            Event::Queued { position, text, .. } => {
                for (kind, what) in self.queue.queued(position, &text) {
                    self.report(kind, what);
                }
                if self.was_queued {
                    return Got::Other;
                }
                self.was_queued = true;
                counters.queued.fetch_add(1, Ordering::Relaxed);
                let stamp = self.shared.tick();
                if self.own_name
                    && let Some(entry) = lock(&self.shared.stamps).get_mut(&self.name)
                {
                    entry.queued = Some(stamp);
                }
                self.set_stage(Stage::Queued);
                Got::Queued
            }
            Event::Message { id, from, text, .. } => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                let Some(view) = self.view.as_mut() else {
                    self.report(Kind::Protocol, format!("message {id} before `welcome`"));
                    return Got::Other;
                };
                let mut findings = Vec::new();
                let sender = match parse_text(&text) {
                    Some(said) => {
                        // A client that stopped reading measures itself.
                        if self.behaved {
                            let now = self.shared.now_us();
                            self.latency.push(now.saturating_sub(said.sent_us).max(1));
                        }
                        if said.name != from {
                            findings.push((
                                Kind::Protocol,
                                format!("message {id} from {from} said by {}", said.name),
                            ));
                        }
                        if said.uid == self.uid {
                            findings.extend(self.echoes.echoed(said.seq));
                            None
                        } else {
                            Some((said.uid, said.seq))
                        }
                    }
                    None => None,
                };
                findings.extend(view.message(id, &from, sender));
                for (kind, what) in findings {
                    self.report(kind, what);
                }
                if self.latency.len() >= 256 {
                    self.flush_latency();
                }
                Got::Other
            }
            Event::Joined { name, .. } => {
                match self.view.as_mut() {
                    Some(view) => view.joined(&name),
                    None => {
                        self.report(Kind::Protocol, format!("`joined` {name} before `welcome`"))
                    }
                }
                if let Some(joins) = self.joins.as_mut() {
                    joins.push(name.into_owned());
                }
                Got::Other
            }
            Event::Left { name, reason, .. } => {
                if reason == LeftReason::Unknown {
                    self.report(Kind::Protocol, format!("left reason {reason:?}"));
                }
                match self.view.as_mut() {
                    Some(view) => {
                        if let Some((kind, what)) = view.left(&name) {
                            self.report(kind, what);
                        }
                    }
                    None => self.report(Kind::Protocol, format!("`left` {name} before `welcome`")),
                }
                Got::Other
            }
            Event::Gap { .. } => {
                counters.gaps.fetch_add(1, Ordering::Relaxed);
                if let Some(view) = self.view.as_mut() {
                    view.gap();
                }
                Got::Other
            }
            Event::Error { code, text } => {
                let code = code.as_str().to_string();
                if code == "rate_limited" {
                    counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    self.echoes.refused();
                    return Got::Refused(code);
                }
                match self.allowed.iter_mut().find(|(c, n)| *c == code && *n > 0) {
                    Some(entry) => entry.1 -= 1,
                    None => self.report(Kind::UnexpectedError, format!("{code}: {text}")),
                }
                if code == "not_admitted" {
                    self.echoes.refused();
                }
                Got::Refused(code)
            }
            Event::Ping { .. } => {
                if let Some(pong) = event_answer.filter(|_| !self.silent) {
                    self.send(&pong).await;
                }
                Got::Other
            }
            Event::Users { .. } | Event::Pong { .. } => Got::Other,
            Event::Bye { reason, .. } => Got::Bye(reason.as_str().to_string()),
            Event::Unknown => {
                self.report(Kind::Protocol, "a frame of unknown type");
                Got::Other
            }
            // The soak's clients ask for no feature: a version-1 client
            // must never see these.
            Event::History { .. }
            | Event::Whisper { .. }
            | Event::Lagging { .. }
            | Event::Presence { .. } => {
                self.report(
                    Kind::Protocol,
                    "a version 1.1 frame sent to a version-1 client",
                );
                Got::Other
            }
        }
    }

    /// Reads until the server says goodbye or closes, for at most `limit`.
    pub(super) async fn wait_over(&mut self, limit: Duration) -> Over {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => return Over::TimedOut,
                Ok(Got::Bye(reason)) => return Over::Bye(reason),
                Ok(Got::Closed) => return Over::Closed,
                Ok(_) => {}
            }
        }
    }

    /// Judges how the server ended the connection.
    pub(super) fn judge(&mut self, over: &Over, waiting_for: &str) {
        match over {
            Over::Bye(reason) => {
                self.shared.tally_goodbye(reason);
                // Only a client that kept reading and sent nothing since
                // knows that the goodbye was sent after its last frame.
                let t = self.shared.timeouts.filter(|_| self.silent);
                let timing = match reason.as_str() {
                    "idle_timeout" => t.map(|t| (self.last_frame_sent.elapsed(), t.idle)),
                    "handshake_timeout" => t.map(|t| (self.connecting_at.elapsed(), t.handshake)),
                    _ => None,
                };
                if let Some((waited, timeout)) = timing {
                    if waited < timeout {
                        self.report(
                            Kind::Timing,
                            format!("{reason} after {waited:?} (configured {timeout:?})"),
                        );
                    } else {
                        let late = (waited - timeout).as_micros() as u64;
                        self.shared
                            .counters
                            .timeout_late_us
                            .fetch_max(late, Ordering::Relaxed);
                    }
                }
                if self.expect_bye.contains(&reason.as_str()) {
                    return;
                }
                match reason.as_str() {
                    "slow_consumer" => {
                        self.shared
                            .counters
                            .cut_off_reading
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    "server_full" => {
                        self.shared
                            .counters
                            .server_full
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => self.report(Kind::UnexpectedBye, format!("bye {reason} {waiting_for}")),
                }
            }
            Over::Closed => {
                self.shared.tally_goodbye("closed without bye");
                if self.behaved {
                    self.report(
                        Kind::UnexpectedClose,
                        format!("closed without a goodbye {waiting_for}"),
                    );
                }
            }
            Over::TimedOut => self.report(Kind::Protocol, format!("no goodbye {waiting_for}")),
        }
    }

    /// Judges a frame that ended the connection and returns `None`; any
    /// other frame is handed back.
    pub(super) fn unless_over(&mut self, got: Got, waiting_for: &str) -> Option<Got> {
        match got {
            Got::Bye(reason) => {
                self.judge(&Over::Bye(reason), waiting_for);
                None
            }
            Got::Closed => {
                self.judge(&Over::Closed, waiting_for);
                None
            }
            got => Some(got),
        }
    }

    /// The longest the server may take to end a connection on its own.
    pub(super) fn patience_for(
        &self,
        timeout: fn(Timeouts) -> Duration,
        default: Duration,
    ) -> Duration {
        self.shared.timeouts.map_or(default, timeout) + Duration::from_secs(10)
    }

    fn flush_latency(&mut self) {
        let mut hist = lock(&self.shared.latency_us);
        for us in self.latency.drain(..) {
            hist.saturating_record(us);
        }
    }

    /// Hands what the session saw to the end-of-run checks.
    pub(super) fn finish(mut self) {
        self.flush_latency();
        self.set_stage(Stage::Outside);
        if let Some(view) = self.view.take() {
            let mut stretches = lock(&self.shared.stretches);
            for runs in view.stretches() {
                stretches.push(Stretch {
                    member: self.name.clone(),
                    runs,
                });
            }
        }
        let mut held = lock(&self.shared.held);
        if held.get(&self.index) == Some(&self.name) {
            held.remove(&self.index);
        }
    }
}
