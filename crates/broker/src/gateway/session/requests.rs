//! The session's answers to each client request: the handshake, `say`,
//! `who`, pings and goodbyes, with the checks and limits each one needs.

use std::borrow::Cow;

use anteroom_protocol::{Feature, Features};

use super::*;
use crate::cluster::entry::Owner;
use crate::cluster::{Claim, Cluster};
use crate::conn::handle::{Grant, ResumeGrant};

impl Session {
    /// Queues a direct reply; a client that never reads its replies is cut off.
    pub(super) fn reply(&self, frame: Bytes) {
        if self.peer.outbox.push_reply(frame) == Push::Overflow {
            self.peer.cut_off_slow();
        }
    }

    /// Refuses a request with an `error` frame, keeping the connection.
    fn refuse(&self, code: ErrorCode, text: &str) {
        metrics().rejected(code.as_str());
        self.reply(error_frame(code, text));
    }

    pub(super) async fn handle(&mut self, payload: &[u8]) -> Option<End> {
        let read_at = std::time::Instant::now();
        let message = match ClientMessage::decode(payload) {
            Ok(message) => message,
            Err(error) => {
                self.refuse(error.code, &error.detail);
                return None;
            }
        };
        match message {
            // Boxed: the handshake's state lives on the heap only while it
            // runs, keeping every idle connection's task small.
            ClientMessage::Hello {
                name,
                features,
                resume,
                last_id,
            } => {
                let resume = resume.as_deref().map(|token| (token, last_id));
                Box::pin(self.hello(&name, features.as_deref(), resume)).await
            }
            ClientMessage::Say { text, attachment } => self.say(text, attachment, read_at).await,
            ClientMessage::Who => {
                if self.admitted("who") && self.who_allowed() {
                    // Boxed: rare, and it may wait for the roster.
                    let users = Box::pin(self.gateway.roster.users_frame_for(self.peer.id)).await;
                    self.reply(users);
                }
                None
            }
            ClientMessage::Ping { id } => {
                self.reply(ServerMessage::Pong { id }.to_frame());
                None
            }
            ClientMessage::Pong { .. } => None,
            ClientMessage::Bye => Some(End::close(ByeReason::Bye, LeftReason::Bye)),
            ClientMessage::History { before, limit } => {
                if self.granted(Feature::History, "history") && self.admitted("history") {
                    // Boxed: rare, and it may wait for the store.
                    Box::pin(self.history(before, limit)).await;
                }
                None
            }
            ClientMessage::Whisper { to, text } => {
                if self.granted(Feature::Whisper, "whisper") && self.admitted("whisper") {
                    // Boxed: a whisper to another node waits on Redis, a rare path
                    // kept out of every session's future.
                    Box::pin(self.whisper(&to, &text)).await;
                }
                None
            }
        }
    }

    /// Whether a member's `who` is within `who_rate`; refuses it if not. A
    /// `users` answer lists the whole room, so it is metered on its own.
    fn who_allowed(&mut self) -> bool {
        let Some(rate) = self.gateway.who_rate else {
            return true;
        };
        if rate.take(&mut self.who_full_at, Instant::now()).is_ok() {
            return true;
        }
        metrics().rejected("who_rate_limited");
        self.reply(error_frame(
            ErrorCode::RateLimited,
            "too many `who` requests; slow down",
        ));
        false
    }

    /// Whether the client was granted `feature`; a request of a feature not
    /// granted is, for this connection, a type that does not exist.
    fn granted(&self, feature: Feature, what: &str) -> bool {
        if self.peer.features().has(feature) {
            return true;
        }
        self.refuse(
            ErrorCode::UnknownType,
            &format!("unknown message type `{what}` (ask for the `{what}` feature in `hello`)"),
        );
        false
    }

    /// Answers a `history` request, from memory or the store.
    async fn history(&self, before: Option<i64>, limit: Option<i64>) {
        match self.gateway.chat.log.page(before, limit).await {
            Ok(page) => self.reply(page),
            Err(error) => {
                debug!(%error, "history request failed");
                self.refuse(
                    ErrorCode::Unavailable,
                    "the chat log cannot be read right now; try again",
                );
            }
        }
    }

    /// Checks a text against the rules of `say`; refuses it if it breaks one.
    fn text_allowed(&self, text: &str) -> bool {
        let limit = self.gateway.config.max_message_bytes;
        if text.is_empty() {
            self.refuse(ErrorCode::BadRequest, "`text` must not be empty");
            return false;
        }
        if text.len() > limit {
            self.refuse(
                ErrorCode::MessageTooLong,
                &format!("messages are limited to {limit} bytes"),
            );
            return false;
        }
        true
    }

    /// Takes one message from the member's `rate_limit` bucket; refuses
    /// the request if it is empty.
    fn rate_allowed(&mut self) -> bool {
        let limiter = self
            .limiter
            .get_or_insert_with(|| Box::new(DefaultDirectRateLimiter::direct(self.gateway.quota)));
        if limiter.check().is_err() {
            self.refuse(ErrorCode::RateLimited, "too many messages; slow down");
            return false;
        }
        true
    }

    /// A direct message: to the recipient and, once, to the sender.
    async fn whisper(&mut self, to: &str, text: &str) {
        if !self.text_allowed(text) || !self.rate_allowed() {
            return;
        }
        let Some(from) = self.name.clone() else {
            return;
        };
        let recipient = self
            .gateway
            .names
            .holder(to)
            // A held place's connection is closed: it does not count.
            .filter(|(_, peer)| {
                let state = peer.state();
                state.phase == Phase::Active && state.closed.is_none()
            });
        if recipient.is_none()
            && let Some(cluster) = self.gateway.cluster.clone()
            && let Some(owner) = cluster.remote_member(to)
        {
            return self.whisper_remote(&cluster, owner, &from, text).await;
        }
        let Some((to, peer)) = recipient else {
            self.refuse(
                ErrorCode::NoSuchUser,
                &format!(
                    "no member is called `{}`",
                    anteroom_protocol::text::truncate(to, 64)
                ),
            );
            return;
        };
        if !peer.features().has(Feature::Whisper) {
            self.refuse(
                ErrorCode::WhisperUnsupported,
                &format!("`{to}` cannot receive direct messages"),
            );
            return;
        }
        let frame = ServerMessage::Whisper {
            from: Cow::Borrowed(&from),
            to: Cow::Borrowed(&to),
            text: Cow::Borrowed(text),
            ts: unix_millis(),
        }
        .to_frame();
        if peer.outbox.push_reply(frame.clone()) == Push::Overflow {
            peer.cut_off_slow();
        }
        if peer.id != self.peer.id {
            self.reply(frame);
        }
        metrics().whispers.increment(1);
    }

    /// A direct message to a member of another node of the cluster.
    async fn whisper_remote(&mut self, cluster: &Cluster, to: Owner, from: &str, text: &str) {
        if !to.whisper {
            self.refuse(
                ErrorCode::WhisperUnsupported,
                &format!("`{}` cannot receive direct messages", to.name),
            );
            return;
        }
        let ts = unix_millis();
        if !cluster.whisper(&to, from, text, ts).await {
            self.refuse(
                ErrorCode::NoSuchUser,
                &format!(
                    "no member is called `{}`",
                    anteroom_protocol::text::truncate(&to.name, 64)
                ),
            );
            return;
        }
        let frame = ServerMessage::Whisper {
            from: Cow::Borrowed(from),
            to: Cow::Borrowed(&to.name),
            text: Cow::Borrowed(text),
            ts,
        }
        .to_frame();
        self.reply(frame);
        metrics().whispers.increment(1);
    }

    /// Whether the client may use the room; refuses the request if not.
    fn admitted(&self, what: &str) -> bool {
        match self.peer.phase() {
            Phase::Active => true,
            Phase::Waiting => {
                self.refuse(
                    ErrorCode::NotAdmitted,
                    &format!("`{what}` is for members; you are waiting in the queue"),
                );
                false
            }
            _ => {
                self.refuse(
                    ErrorCode::HandshakeRequired,
                    &format!("send `hello` before `{what}`"),
                );
                false
            }
        }
    }

    async fn hello(
        &mut self,
        raw: &str,
        features: Option<&[Cow<'static, str>]>,
        resume: Option<(&str, Option<u64>)>,
    ) -> Option<End> {
        if self.peer.phase() != Phase::Handshake {
            self.refuse(
                ErrorCode::BadRequest,
                "`hello` is only valid once; you are already in the room or in the queue",
            );
            return None;
        }
        let name = match names::validate(raw) {
            Ok(name) => name,
            Err(error) => {
                self.refuse(ErrorCode::NameInvalid, &error.to_string());
                return None;
            }
        };
        // A token is only for a client asking for features: one without is
        // a version-1 client, and gets exactly version 1.
        let held = match (features, resume) {
            (Some(_), Some((token, _))) if self.gateway.offered.has(Feature::Resume) => {
                self.gateway.held.take_over(token, name).await
            }
            _ => None,
        };
        let (name, claim) = match held.as_ref() {
            // The name never stopped being taken: it is handed over.
            Some(place) => (place.name.clone(), None),
            None => match self.gateway.names.claim_for(name, &self.peer) {
                Ok(claim) => (Arc::<str>::from(name), Some(claim)),
                Err(NameError::Taken) => {
                    self.refuse(
                        ErrorCode::NameTaken,
                        &format!("the name `{name}` is already in use"),
                    );
                    return None;
                }
                Err(error) => {
                    self.refuse(ErrorCode::NameInvalid, &error.to_string());
                    return None;
                }
            },
        };
        if let (Some(cluster), Some(_)) = (&self.gateway.cluster, &claim) {
            let whisper = features.is_some_and(|asked| {
                Features::from_names(asked.iter().map(|f| f.as_ref()))
                    .intersect(self.gateway.offered)
                    .has(Feature::Whisper)
            });
            match Box::pin(cluster.claim(&self.peer, &name, whisper)).await {
                Claim::Claimed => {}
                Claim::Taken => {
                    self.refuse(
                        ErrorCode::NameTaken,
                        &format!("the name `{name}` is already in use"),
                    );
                    return None;
                }
                Claim::Unavailable => {
                    return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
                }
            }
        }
        Span::current().record("user", &*name);
        self.name = Some(name.clone());
        self.handshake.done();
        if let Some(asked) = features {
            let features = Features::from_names(asked.iter().map(|f| f.as_ref()))
                .intersect(self.gateway.offered);
            let upload_token = match &self.gateway.chat.files {
                Some(files) if features.has(Feature::Files) => Some(files.issue_token().into()),
                _ => None,
            };
            let resume_grant = features.has(Feature::Resume).then(|| ResumeGrant {
                token: crate::chat_log::random_hex(16).into(),
                grace_s: self.gateway.config.resume_grace.as_secs_f64().ceil() as u64,
            });
            if let Some(grant) = &resume_grant {
                self.gateway
                    .held
                    .open(&grant.token, &self.peer, name.clone());
            }
            self.peer.set_grant(Grant {
                features,
                upload_token,
                resume: resume_grant,
                resumed: resume.map(|_| held.is_some()),
            });
        }
        self.peer.arrive();
        let arrived = match held {
            Some(mut place) => {
                self.claim = place.claim.take().map(|c| c.hand_over(&self.peer));
                let last_id = resume.and_then(|(_, last_id)| last_id);
                PresenceEvent::ClientResumed {
                    old: place.id,
                    peer: self.peer.clone(),
                    name,
                    after: last_id.unwrap_or(place.written_id),
                }
            }
            None => {
                self.claim = claim;
                PresenceEvent::ClientArrived {
                    peer: self.peer.clone(),
                    name,
                }
            }
        };
        let gateway = &self.gateway;
        if !publish_unless_shutdown(&gateway.shutdown, &gateway.bus.presence, arrived).await {
            return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
        }
        // Wait for admission before reading on, so a pipelined `say` after
        // `hello` is judged against the outcome.
        let decided = tokio::select! {
            // Shutdown first: a closing room refuses everyone, and that
            // refusal must read as `shutdown`, not `server_full`.
            biased;
            _ = self.gateway.shutdown.cancelled() => {
                return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
            }
            state = decision(&self.peer) => state,
        };
        // The wait (an entry paced by `join_rate` can take seconds) was
        // ours, not the client's silence: the liveness timers start now.
        self.last_heard = Instant::now();
        self.next_ping = self.last_heard + self.gateway.config.heartbeat_interval;
        if decided == Phase::Rejected && self.gateway.shutdown.is_cancelled() {
            return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
        }
        match decided {
            Phase::Rejected => {
                metrics().rejected("server_full");
                if let Verdict::Write { suppressed } = log_budget::TURNED_AWAY.take() {
                    info!(suppressed, "room and queue full; turned away");
                }
                Some(End::close(ByeReason::ServerFull, LeftReason::Disconnected))
            }
            _ => None,
        }
    }

    async fn say(
        &mut self,
        text: Cow<'static, str>,
        attachment: Option<Cow<'static, str>>,
        read_at: std::time::Instant,
    ) -> Option<End> {
        if !self.admitted("say") {
            return None;
        }
        // Without `files`, `attachment` is an unknown key, and ignored.
        let attachment = match attachment {
            Some(url) if self.peer.features().has(Feature::Files) => {
                match self
                    .gateway
                    .chat
                    .files
                    .as_ref()
                    .and_then(|f| f.resolve(&url))
                {
                    Some(file) => Some(file),
                    None => {
                        self.refuse(
                            ErrorCode::BadRequest,
                            "`attachment` is not the URL of a file uploaded here",
                        );
                        return None;
                    }
                }
            }
            _ => None,
        };
        // With an attachment the text may be empty.
        let bare_attachment = attachment.is_some() && text.is_empty();
        if !bare_attachment && !self.text_allowed(&text) {
            return None;
        }
        if !self.rate_allowed() {
            return None;
        }
        let from = self.name.clone()?;
        if let Some(cluster) = &self.gateway.cluster {
            // Delivered, here too, when it comes back through the log.
            // Boxed: only a cluster's sessions carry this wait.
            if Box::pin(cluster.post(&self.peer, &from, &text, unix_millis()))
                .await
                .is_none()
            {
                return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
            }
            return None;
        }
        let posted = RoomEvent::MessagePosted {
            from,
            text: text.into(),
            ts: unix_millis(),
            attachment,
            read_at,
            id: None,
            logged: true,
        };
        let gateway = &self.gateway;
        if !publish_unless_shutdown(&gateway.shutdown, &gateway.bus.room, posted).await {
            return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
        }
        None
    }
}
