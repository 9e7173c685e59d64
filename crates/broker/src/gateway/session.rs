//! The session core: one connection's handshake, requests, liveness and
//! goodbye, for every transport.
//!
//! The session reads frames from its [`Transport`] and turns them into bus
//! events or direct replies; a separate writer task drains its outbox. The
//! session never writes to the transport itself, so nothing it does can
//! block on a slow peer.
//!
//! A panic in the session or in its writer costs this connection only: it
//! is caught, logged and counted, the connection is closed and its seat or
//! queue place given back, as for a client that vanished.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use governor::DefaultDirectRateLimiter;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Span, debug, error, info, warn};

use super::Gateway;
use super::transport::Transport;
use crate::bus::{PresenceEvent, RoomEvent, Topic};
use crate::config::SlowConsumerPolicy;
use crate::conn::handle::Peer;
use crate::conn::outbox::Push;
use crate::conn::shards::run_sharded_writer;
use crate::conn::state::{ConnState, Phase};
use crate::conn::writer::WriteError;
use crate::room::held::HeldPlace;
use crate::room::names::{self, NameClaim, NameError};
use crate::supervisor::panic_message;
use crate::telemetry::log_budget::{self, Verdict};
use crate::telemetry::metrics;
use anteroom_protocol::server::error_frame;
use anteroom_protocol::unix_millis;
use anteroom_protocol::{
    ByeReason, ClientMessage, ErrorCode, FrameError, LeftReason, PingId, ServerMessage,
};

/// After a goodbye, how long input is read and discarded so the client gets
/// our last frames instead of a reset.
const LINGER: Duration = Duration::from_millis(500);

/// Longest wait for the writer to flush the last frames.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

mod requests;

/// How a session ends.
enum End {
    /// We say goodbye: optional error, then `bye`.
    Close {
        bye: ByeReason,
        error: Option<Bytes>,
        left: LeftReason,
    },
    /// Someone else ended it (slow consumer, write failure); outbox is closed.
    Kicked(LeftReason),
    /// The client went away.
    Gone,
}

impl End {
    fn close(bye: ByeReason, left: LeftReason) -> Self {
        End::Close {
            bye,
            error: None,
            left,
        }
    }

    /// A client sending frames faster than `request_rate` allows is not a
    /// chat client; it is told `rate_limited` and cut off.
    fn flood() -> Self {
        metrics().rejected("request_flood");
        if let Verdict::Write { suppressed } = log_budget::PROTOCOL_ERRORS.take() {
            warn!(suppressed, "request flood; closing");
        }
        End::Close {
            bye: ByeReason::ProtocolError,
            error: Some(error_frame(
                ErrorCode::RateLimited,
                "too many requests; closing the connection",
            )),
            left: LeftReason::ProtocolError,
        }
    }

    fn protocol_error(code: ErrorCode, text: &str) -> Self {
        metrics().rejected("protocol_error");
        if let Verdict::Write { suppressed } = log_budget::PROTOCOL_ERRORS.take() {
            warn!(code = code.as_str(), suppressed, "protocol error; closing");
        }
        End::Close {
            bye: ByeReason::ProtocolError,
            error: Some(error_frame(code, text)),
            left: LeftReason::ProtocolError,
        }
    }
}

/// Keeps `anteroom_connections{state="handshake"}` exact: counts the
/// connection until it has arrived (valid hello) or ended.
pub(crate) struct HandshakeGauge(bool);

impl HandshakeGauge {
    pub(crate) fn new() -> Self {
        metrics().conn_handshake.increment(1.0);
        Self(true)
    }

    fn done(&mut self) {
        if std::mem::take(&mut self.0) {
            metrics().conn_handshake.decrement(1.0);
        }
    }
}

impl Drop for HandshakeGauge {
    fn drop(&mut self) {
        self.done();
    }
}

struct Session {
    gateway: Arc<Gateway>,
    peer: Arc<Peer>,
    name: Option<Arc<str>>,
    claim: Option<NameClaim>,
    /// Boxed: only members who chat need one, and inline it would grow
    /// every connection's task by 64 bytes.
    limiter: Option<Box<DefaultDirectRateLimiter>>,
    handshake: HandshakeGauge,
    connected_at: Instant,
    last_heard: Instant,
    next_ping: Instant,
    ping_id: i64,
    /// When the `request_rate` bucket is full again.
    requests_full_at: Instant,
    /// When the `who_rate` bucket is full again.
    who_full_at: Instant,
}

impl Session {
    /// A connection ending without its place held takes its resume token
    /// with it.
    fn forget_token(&self) {
        if let Some(resume) = self.peer.grant().and_then(|g| g.resume.as_ref()) {
            self.gateway.held.closed(&resume.token);
        }
    }

    /// The upload token dies with the connection.
    fn revoke_upload_token(&self) {
        if let (Some(files), Some(token)) = (
            &self.gateway.chat.files,
            self.peer.grant().and_then(|g| g.upload_token.as_deref()),
        ) {
            files.revoke(token);
        }
    }
}

impl Session {
    /// Holds this connection's place under its resume token if it ended
    /// in a way the contract holds places for: a drop, an idle timeout or a
    /// slow consumer cut off; never a `bye`, a protocol error or a
    /// shutdown. The name claim goes with the place, so the name stays
    /// taken. Returns whether the place is held.
    fn hold_place(&mut self, left: LeftReason) -> bool {
        let Some(resume) = self.peer.grant().and_then(|g| g.resume.as_ref()) else {
            return false;
        };
        let dropped = matches!(
            left,
            LeftReason::Disconnected | LeftReason::IdleTimeout | LeftReason::SlowConsumer
        );
        let (true, false, Some(name)) = (
            dropped,
            self.gateway.shutdown.is_cancelled(),
            self.name.clone(),
        ) else {
            return false;
        };
        self.gateway.held.hold(
            &resume.token,
            HeldPlace {
                id: self.peer.id,
                name,
                claim: self.claim.take(),
                written_id: self.peer.outbox.written_id(),
            },
        );
        true
    }
}

impl Drop for Session {
    /// However the session ends, a panic unwinding it included.
    fn drop(&mut self) {
        self.revoke_upload_token();
        self.forget_token();
    }
}

/// Runs a connection until it ends: the one entry point for every transport.
pub async fn run_session<T: Transport>(gateway: Arc<Gateway>, transport: T) {
    run_session_since(gateway, transport, Instant::now()).await;
}

/// [`run_session`] for a connection accepted at `accepted`: a transport with
/// its own handshake (TLS, QUIC) has spent part of `handshake_timeout`
/// before the session starts.
pub async fn run_session_since<T: Transport>(
    gateway: Arc<Gateway>,
    transport: T,
    accepted: Instant,
) {
    let config = &gateway.config;
    let peer = Arc::new(Peer::with_limits(
        config.outbox_limit,
        config.max_outbox_bytes,
    ));
    Span::current().record("conn_id", peer.id);
    debug!("connected");
    let max_frame = config.max_frame_bytes;
    let (frames, outbound) = transport.open(max_frame);

    // Under `skip`, a member behind the room only misses frames, so a slow
    // socket gets a longer deadline; but one that takes nothing at all is
    // dead for the room, and would otherwise hold its seat and its outbox
    // for as long as it keeps talking.
    let write_timeout = Some(match config.slow_consumer {
        SlowConsumerPolicy::Disconnect => config.write_timeout,
        SlowConsumerPolicy::Skip => config.write_timeout.max(config.idle_timeout),
    });
    // The writer is not instrumented: entering the span on every wake-up
    // cost 5% of the server's CPU in a busy room. It enters the span only to
    // report how it ended.
    let mut writer_task = tokio::spawn({
        let peer = peer.clone();
        let shards = gateway.shards.clone();
        let span = Span::current();
        async move {
            let writer = run_sharded_writer(peer.clone(), outbound, write_timeout, shards);
            let result = AssertUnwindSafe(writer).catch_unwind().await;
            span.in_scope(|| match result {
                Ok(Ok(())) => {}
                Ok(Err(WriteError::Stalled(_))) => peer.cut_off_slow(),
                Ok(Err(WriteError::Io(error))) => {
                    debug!(%error, "write failed");
                    peer.kick(LeftReason::Disconnected, None);
                }
                Err(panic) => {
                    metrics().panicked("writer");
                    error!(
                        panic = panic_message(&*panic),
                        "writer panicked; closing the connection"
                    );
                    // The session sees the close and gives the place back.
                    peer.kick(LeftReason::Disconnected, None);
                }
            });
        }
    });

    // What the session holds (its name claim, the handshake gauge, the
    // transport's inbound half) is released as a panic unwinds it; the rest
    // is done by `recover`, from the peer and the writer, which survive it.
    let session = drive(
        gateway.clone(),
        peer.clone(),
        frames,
        accepted,
        &mut writer_task,
    );
    if let Err(panic) = AssertUnwindSafe(session).catch_unwind().await {
        metrics().panicked("session");
        error!(
            panic = panic_message(&*panic),
            "session panicked; closing the connection"
        );
        Box::pin(recover(&gateway, &peer, &mut writer_task)).await;
    }
}

/// The session proper, from the first frame to the goodbye.
async fn drive<I>(
    gateway: Arc<Gateway>,
    peer: Arc<Peer>,
    mut frames: I,
    accepted: Instant,
    writer_task: &mut JoinHandle<()>,
) where
    I: Stream<Item = Result<bytes::BytesMut, FrameError>> + Unpin,
{
    let config = &gateway.config;
    let now = Instant::now();
    let mut session = Session {
        gateway: gateway.clone(),
        peer: peer.clone(),
        name: None,
        claim: None,
        limiter: None,
        handshake: HandshakeGauge::new(),
        connected_at: accepted,
        last_heard: now,
        next_ping: now + config.heartbeat_interval,
        ping_id: 0,
        requests_full_at: now,
        who_full_at: now,
    };
    // Closes made by others (a slow consumer cut off, a failed write).
    let mut state = peer.watch();

    let end = loop {
        let deadline = session.deadline();
        tokio::select! {
            // Shutdown and kicks first: a flooding client must not delay them.
            biased;
            _ = gateway.shutdown.cancelled() => break End::close(ByeReason::Shutdown, LeftReason::Shutdown),
            reason = closed_by_others(&mut state) => break End::Kicked(reason),
            frame = frames.next() => {
                let payload = match frame {
                    None => break End::Gone,
                    Some(Err(error)) => match error {
                        FrameError::TooLarge { limit } => break End::protocol_error(
                            ErrorCode::FrameTooLarge,
                            &format!("frames are limited to {limit} bytes"),
                        ),
                        FrameError::Io(error) => {
                            debug!(%error, "read failed");
                            break End::Gone;
                        }
                    },
                    Some(Ok(payload)) => payload,
                };
                session.last_heard = Instant::now();
                session.next_ping = session.last_heard + gateway.config.heartbeat_interval;
                // Every frame counts, whatever it is and however it is
                // answered: pings, refused requests and garbage included.
                if let Some(rate) = gateway.request_rate
                    && rate.take(&mut session.requests_full_at, session.last_heard).is_err()
                {
                    break End::flood();
                }
                if payload.is_empty() {
                    break End::protocol_error(ErrorCode::BadFrame, "frame length must be at least 1");
                }
                if let Some(end) = session.handle(&payload).await {
                    break end;
                }
                // Frames already buffered are decoded without touching the
                // socket, so take part in tokio's cooperative budget here:
                // a client pipelining thousands of frames must not starve
                // the writers that drain everyone's outboxes.
                tokio::task::consume_budget().await;
            }
            // Handshake deadline, heartbeat or idle timeout.
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(end) = session.on_timer() {
                    break end;
                }
            }
        }
    };

    drop(state);
    Box::pin(session.finish(end, frames, writer_task)).await;
}

/// After a panic in the session: closes the connection and gives its seat
/// or queue place back, as `Session::finish` would for a client that
/// vanished, so the others see it leave and the queue moves up.
async fn recover(gateway: &Gateway, peer: &Peer, writer_task: &mut JoinHandle<()>) {
    // A departure the session had already published is ignored the second
    // time: admission no longer knows the connection.
    let left = peer.close(LeftReason::Disconnected, &[], true);
    if peer.phase().holds_a_place() {
        let departed = PresenceEvent::ClientDeparted {
            id: peer.id,
            reason: left,
        };
        let _ = gateway.bus.presence.publish(departed).await;
    }
    flush(writer_task).await;
}

/// Lets the writer flush the last frames and end the sending side, but
/// never waits on a stalled peer.
async fn flush(writer_task: &mut JoinHandle<()>) {
    let abort = writer_task.abort_handle();
    if tokio::time::timeout(FLUSH_LIMIT, writer_task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

impl Session {
    /// The next moment a timer must fire.
    fn deadline(&self) -> Instant {
        let config = &self.gateway.config;
        match self.peer.phase() {
            Phase::Handshake => self.connected_at + config.handshake_timeout,
            _ => self.next_ping.min(self.last_heard + config.idle_timeout),
        }
    }

    fn on_timer(&mut self) -> Option<End> {
        let config = &self.gateway.config;
        let now = Instant::now();
        match self.peer.phase() {
            Phase::Handshake if now >= self.connected_at + config.handshake_timeout => {
                if let Verdict::Write { suppressed } = log_budget::TIMEOUTS.take() {
                    info!(suppressed, "handshake timeout");
                }
                Some(End::close(
                    ByeReason::HandshakeTimeout,
                    LeftReason::Disconnected,
                ))
            }
            Phase::Handshake => None,
            _ if now >= self.last_heard + config.idle_timeout => {
                if let Verdict::Write { suppressed } = log_budget::TIMEOUTS.take() {
                    info!(suppressed, "idle timeout");
                }
                Some(End::close(ByeReason::IdleTimeout, LeftReason::IdleTimeout))
            }
            _ if now >= self.next_ping => {
                self.ping_id += 1;
                self.reply(
                    ServerMessage::Ping {
                        id: Some(PingId::Signed(self.ping_id)),
                    }
                    .to_frame(),
                );
                self.next_ping = now + config.heartbeat_interval;
                None
            }
            _ => None,
        }
    }

    /// Says goodbye, tells the broker the client is gone, and closes cleanly.
    async fn finish<I>(mut self, end: End, mut inbound: I, writer_task: &mut JoinHandle<()>)
    where
        I: Stream<Item = Result<bytes::BytesMut, FrameError>> + Unpin,
    {
        let (left, linger) = match end {
            End::Close { bye, error, left } => {
                let mut last: Vec<Bytes> = error.into_iter().collect();
                last.push(bye.frame());
                // At shutdown the `bye` goes ahead of whatever is still
                // waiting: a member behind on a busy room would otherwise
                // get it only after its backlog, or not within the grace.
                let discard = bye == ByeReason::Shutdown;
                (self.peer.close(left, &last, discard), true)
            }
            End::Kicked(reason) => (reason, true),
            End::Gone => (self.peer.close(LeftReason::Disconnected, &[], true), false),
        };
        debug!(reason = left.as_str(), "closing");

        // Free the seat (or queue place) before anything slow happens, or
        // hold it for a resume.
        let held = self.peer.phase().holds_a_place() && self.hold_place(left);
        if !held {
            self.forget_token();
        }
        if self.peer.phase().holds_a_place() {
            let event = match held {
                true => PresenceEvent::ClientDropped {
                    id: self.peer.id,
                    reason: left,
                },
                false => PresenceEvent::ClientDeparted {
                    id: self.peer.id,
                    reason: left,
                },
            };
            let _ = self.gateway.bus.presence.publish(event).await;
        }
        self.claim.take();
        self.handshake.done();
        self.revoke_upload_token();

        // Let the writer flush the goodbye, but never wait on a stalled peer.
        flush(writer_task).await;
        if linger {
            // Read and discard so closing does not reset the connection
            // while our last frames are still in flight.
            let _ = tokio::time::timeout(LINGER, async {
                while let Some(Ok(_)) = inbound.next().await {}
            })
            .await;
        }
    }
}

/// Publishes `event` unless the shutdown comes first; returns whether it was
/// published. A full topic makes its publisher wait (nothing on the bus is
/// dropped), and a session waiting there must still see the shutdown and
/// say its `bye`. An event not published is simply not sent: the broker is
/// closing, and a departure published later (for an arrival that never was)
/// is ignored by admission.
async fn publish_unless_shutdown<T: Clone>(
    shutdown: &tokio_util::sync::CancellationToken,
    topic: &Topic<T>,
    event: T,
) -> bool {
    // Usually the topic has room: nothing to wait for, and the waiting
    // path's state stays off every connection's task.
    let event = match topic.try_publish(event) {
        Ok(()) => return true,
        Err(None) => return false,
        Err(Some(event)) => event,
    };
    Box::pin(async {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            published = topic.publish(event) => published.is_ok(),
        }
    })
    .await
}

/// Resolves once something other than the session closed the connection.
/// (`changed` rather than `wait_for`: this future is part of every idle
/// connection's task, and `wait_for`'s state is twice the size.)
async fn closed_by_others(state: &mut tokio::sync::watch::Receiver<ConnState>) -> LeftReason {
    loop {
        if let Some(reason) = state.borrow_and_update().closed {
            return reason;
        }
        if state.changed().await.is_err() {
            return LeftReason::Disconnected;
        }
    }
}

/// Waits for admission's decision on a `hello` (or for the connection to be
/// closed meanwhile), and returns the phase reached.
async fn decision(peer: &Peer) -> Phase {
    let mut state = peer.watch();
    let decided = state
        .wait_for(|s| s.phase != Phase::Pending || s.closed.is_some())
        .await
        .map(|s| s.phase);
    decided.unwrap_or(Phase::Pending)
}
