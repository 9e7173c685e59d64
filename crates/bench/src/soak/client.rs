//! A simulated client's life: sessions one after the other, each saying
//! `hello`, waiting in the queue, chatting in the room and leaving as its
//! plan says; and the observer, which stays in the room throughout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checks::{Kind, Stamp};
use super::plan::{Act, End, Plan, exponential};
use super::session::{Got, Session, Stage};
use super::shared::Shared;
use crate::{connect_spread, lock, spread_source};
use anteroom_client::protocol::ClientMessage;

impl Session {
    /// One connection from start to end, as planned; returns once the
    /// connection is over (or, for the observer, never on its own).
    pub(super) async fn run(&mut self, plan: &Plan, rng: &mut fastrand::Rng) {
        if !self.before_hello(plan.pre).await {
            return;
        }
        if plan.bad_name && !self.try_bad_name(rng).await {
            return;
        }
        if self.stage == Stage::Outside && plan.duplicate && !self.try_taken_name(rng).await {
            return;
        }
        if self.stage == Stage::Outside {
            let hello = self.shared.tick();
            lock(&self.shared.stamps).insert(
                self.name.clone(),
                Stamp {
                    hello,
                    queued: None,
                },
            );
            let name = self.name.clone();
            self.send(&ClientMessage::Hello {
                name: (&name).into(),
                features: None,
                last_id: None,
                resume: None,
            })
            .await;
            match self.admission().await {
                Some(Got::Welcome | Got::Queued) => {}
                Some(Got::Refused(code)) => {
                    self.report(Kind::UnexpectedError, format!("hello refused: {code}"));
                    return;
                }
                _ => return,
            }
        }
        if self.own_name {
            lock(&self.shared.held).insert(self.index, self.name.clone());
        }
        if self.stage == Stage::Queued && !self.wait_in_queue(plan, rng).await {
            return;
        }
        self.in_room(plan, rng).await;
    }

    /// Waits for the answer to a `hello`; `None` once the connection ended.
    pub(super) async fn admission(&mut self) -> Option<Got> {
        let limit = Duration::from_secs(30);
        loop {
            let got = match tokio::time::timeout(limit, self.recv()).await {
                Ok(got) => got,
                Err(_) => {
                    self.report(Kind::Protocol, "no answer to hello within 30 s");
                    return None;
                }
            };
            match self.unless_over(got, "after hello")? {
                got @ (Got::Welcome | Got::Queued) => return Some(got),
                Got::Refused(code) if matches!(code.as_str(), "name_invalid" | "name_taken") => {
                    return Some(Got::Refused(code));
                }
                _ => {}
            }
        }
    }

    /// Waits in the queue; false once the session is over.
    async fn wait_in_queue(&mut self, plan: &Plan, rng: &mut fastrand::Rng) -> bool {
        let start = tokio::time::Instant::now();
        let give_up = plan.patience.map(|p| start + p);
        let mut say_at = plan.say_while_queued.then(|| {
            start
                + plan
                    .patience
                    .unwrap_or(Duration::from_secs(10))
                    .mul_f64(rng.f64())
        });
        loop {
            tokio::select! {
                got = self.recv() => match self.unless_over(got, "in the queue") {
                    None => return false,
                    Some(Got::Welcome) => return true,
                    Some(_) => {}
                },
                _ = sleep_until(say_at) => {
                    say_at = None;
                    self.shared.tally_act("say_while_queued");
                    // Refused, or delivered if the client was let in meanwhile.
                    self.allow("not_admitted");
                    self.say(0).await;
                }
                _ = sleep_until(give_up) => {
                    self.shared.tally_act("left_queue");
                    self.leave(plan.end).await;
                    return false;
                }
            }
        }
    }

    async fn in_room(&mut self, plan: &Plan, rng: &mut fastrand::Rng) {
        let start = tokio::time::Instant::now();
        let rate = self.shared.args.say_rate.max(0.001);
        let mut next_say = (plan.talker && self.joins.is_none())
            .then(|| start + Duration::from_secs_f64(exponential(rng, 1.0 / rate)));
        let mut act_at = (plan.act != Act::Nothing).then(|| start + plan.act_at);
        let leave_at = if self.joins.is_some() {
            None
        } else {
            Some(start + plan.stay)
        };
        loop {
            tokio::select! {
                got = self.recv() => {
                    if self.unless_over(got, "in the room").is_none() {
                        return;
                    }
                }
                _ = sleep_until(next_say) => {
                    self.say(rng.usize(..120)).await;
                    if rng.f64() < 0.05 {
                        self.shared.counters.who.fetch_add(1, Ordering::Relaxed);
                        self.send(&ClientMessage::Who).await;
                    }
                    next_say = Some(tokio::time::Instant::now()
                        + Duration::from_secs_f64(exponential(rng, 1.0 / rate)));
                }
                _ = sleep_until(act_at) => {
                    act_at = None;
                    self.shared.tally_act(plan.act.name());
                    if self.act(plan.act).await {
                        let limit = if self.silent {
                            self.patience_for(|t| t.idle, Duration::from_secs(45))
                        } else {
                            Duration::from_secs(10)
                        };
                        let over = self.wait_over(limit).await;
                        self.judge(&over, &format!("after {}", plan.act.name()));
                        return;
                    }
                }
                _ = sleep_until(leave_at) => {
                    self.leave(plan.end).await;
                    return;
                }
            }
        }
    }

    /// Leaves on the client's own initiative.
    pub(super) async fn leave(&mut self, end: End) {
        match end {
            End::Bye => {
                self.send(&ClientMessage::Bye).await;
                self.expect_bye.push("bye");
                let over = self.wait_over(Duration::from_secs(10)).await;
                self.judge(&over, "after bye");
            }
            // The socket is closed when the session is dropped; a reset if
            // it was set up with SO_LINGER 0.
            End::Close | End::Reset => {}
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Connects like [`connect_spread`], optionally with a small receive buffer,
/// so that less of what a client does not read is absorbed on its side.
async fn connect(server: SocketAddr, index: usize, small: bool) -> std::io::Result<TcpStream> {
    if !small || !server.is_ipv4() {
        return connect_spread(server, index).await;
    }
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    if server.ip().is_loopback() {
        socket.bind(SocketAddr::from((spread_source(index), 0)))?;
    }
    socket.connect(server).await
}

/// One simulated client: sessions one after the other until the run ends.
pub(super) async fn client(shared: Arc<Shared>, index: usize) {
    let mut rng = fastrand::Rng::with_seed(
        shared
            .args
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index as u64),
    );
    let start = Duration::from_secs_f64(rng.f64() * 2.0);
    tokio::select! {
        _ = shared.cancel.cancelled() => return,
        _ = tokio::time::sleep(start) => {}
    }
    let mut generation = 0u64;
    while !shared.cancel.is_cancelled() {
        let plan = Plan::draw(&mut rng, &shared.args);
        generation += 1;
        let uid_hint = shared.next_uid.load(Ordering::Relaxed) as usize;
        let connecting_at = Instant::now();
        let small_buffer = matches!(plan.act, Act::StopReading(_) | Act::WhoFlood);
        let stream = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            stream = connect(shared.server, uid_hint, small_buffer) => stream,
        };
        match stream {
            Ok(stream) => {
                if plan.end == End::Reset {
                    let _ = stream.set_zero_linger();
                }
                let name = format!("s{index}-{generation}");
                let mut session = Session::new(shared.clone(), index, name, stream, connecting_at);
                tokio::select! {
                    _ = shared.cancel.cancelled() => {}
                    _ = session.run(&plan, &mut rng) => {}
                }
                session.finish();
            }
            Err(_) => {
                shared
                    .counters
                    .connect_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(plan.pause) => {}
        }
    }
}

/// Starts the observer: it enters the (empty) room first and records every
/// join it sees until `stop`; its task returns those joins, and whether the
/// server cut it off before then.
pub(super) async fn spawn_observer(
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<(Vec<String>, bool)>> {
    let connecting_at = Instant::now();
    let stream = connect_spread(shared.server, 0).await?;
    let mut session = Session::new(shared, usize::MAX, "observer".into(), stream, connecting_at);
    session.joins = Some(Vec::new());
    session.name = "observer".into();
    Ok(tokio::spawn(async move {
        let plan = Plan::observer();
        let mut rng = fastrand::Rng::with_seed(0);
        let cut = tokio::select! {
            _ = stop.cancelled() => false,
            _ = session.run(&plan, &mut rng) => true,
        };
        if !cut {
            session.leave(End::Bye).await;
        }
        let joins = session.joins.take().unwrap_or_default();
        session.finish();
        (joins, cut)
    }))
}
