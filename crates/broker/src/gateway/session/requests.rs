//! The session's answers to each client request: the handshake, `say`,
//! `who`, pings and goodbyes, with the checks and limits each one needs.

use super::*;

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
            ClientMessage::Hello { name, .. } => Box::pin(self.hello(&name)).await,
            ClientMessage::Say { text, .. } => self.say(text, read_at).await,
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
            ClientMessage::History { .. } | ClientMessage::Whisper { .. } => {
                self.refuse(
                    ErrorCode::UnknownType,
                    "this connection was not granted that feature",
                );
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

    async fn hello(&mut self, raw: &str) -> Option<End> {
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
        let claim = match self.gateway.names.claim(name, self.peer.id) {
            Ok(claim) => claim,
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
        };
        let name: Arc<str> = name.into();
        Span::current().record("user", &*name);
        self.claim = Some(claim);
        self.name = Some(name.clone());
        self.handshake.done();
        self.peer.arrive();
        let arrived = PresenceEvent::ClientArrived {
            peer: self.peer.clone(),
            name,
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
        text: std::borrow::Cow<'static, str>,
        read_at: std::time::Instant,
    ) -> Option<End> {
        if !self.admitted("say") {
            return None;
        }
        let limit = self.gateway.config.max_message_bytes;
        if text.is_empty() {
            self.refuse(ErrorCode::BadRequest, "`text` must not be empty");
            return None;
        }
        if text.len() > limit {
            self.refuse(
                ErrorCode::MessageTooLong,
                &format!("messages are limited to {limit} bytes"),
            );
            return None;
        }
        let limiter = self
            .limiter
            .get_or_insert_with(|| Box::new(DefaultDirectRateLimiter::direct(self.gateway.quota)));
        if limiter.check().is_err() {
            self.refuse(ErrorCode::RateLimited, "too many messages; slow down");
            return None;
        }
        let from = self.name.clone()?;
        let posted = RoomEvent::MessagePosted {
            from,
            text: text.into(),
            ts: unix_millis(),
            read_at,
        };
        let gateway = &self.gateway;
        if !publish_unless_shutdown(&gateway.shutdown, &gateway.bus.room, posted).await {
            return Some(End::close(ByeReason::Shutdown, LeftReason::Shutdown));
        }
        None
    }
}
