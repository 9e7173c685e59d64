//! Hostile traffic beside the soak's clients: a join/leave storm from one
//! host. Each cycle connects from one source address, says `hello` and at
//! once `bye`, and reads until the server closes. Every join and departure
//! costs the room a frame to every member, so the storm is what a cheap
//! attacker would do to delay the room; the soak's own clients must not
//! notice it (their latency and their unprovoked cut-offs are the figures).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anteroom_client::Event;
use anteroom_client::protocol::ClientMessage;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// The one host the storm comes from.
const STORM_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 254);

/// Cycles in flight at most: the storm never holds more connections.
pub(super) const STORM_IN_FLIGHT: usize = 256;

/// How long a cycle waits for the server to answer and close.
const CYCLE_LIMIT: Duration = Duration::from_secs(5);

/// What the storm's cycles ended with.
#[derive(Debug, Default)]
pub(super) struct StormTally {
    pub(super) cycles: AtomicU64,
    pub(super) welcomed: AtomicU64,
    pub(super) queued: AtomicU64,
    /// Turned away: `bye` other than the answer to its own `bye`, or a
    /// connection refused at once.
    pub(super) refused: AtomicU64,
    pub(super) failed: AtomicU64,
}

/// The figures of a storm, for the report.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct StormFigures {
    pub cycles: u64,
    pub welcomed: u64,
    pub queued: u64,
    pub refused: u64,
    pub failed: u64,
}

impl StormTally {
    pub(super) fn figures(&self) -> StormFigures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StormFigures {
            cycles: get(&self.cycles),
            welcomed: get(&self.welcomed),
            queued: get(&self.queued),
            refused: get(&self.refused),
            failed: get(&self.failed),
        }
    }
}

/// Runs join/leave cycles at `rate` per second until `cancel`.
pub(super) async fn storm(
    server: SocketAddr,
    rate: f64,
    cancel: CancellationToken,
    tally: Arc<StormTally>,
) {
    let in_flight = Arc::new(Semaphore::new(STORM_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        n += 1;
        let tally = tally.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(CYCLE_LIMIT, cycle(server, n)).await;
            let counter = match outcome {
                Ok(Ok(Outcome::Welcomed)) => &tally.welcomed,
                Ok(Ok(Outcome::Queued)) => &tally.queued,
                Ok(Ok(Outcome::Refused)) => &tally.refused,
                Ok(Err(_)) | Err(_) => &tally.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tally.cycles.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // Let the cycles in flight finish, so none outlives the soak.
    let _ = tokio::time::timeout(CYCLE_LIMIT, in_flight.acquire_many(STORM_IN_FLIGHT as u32)).await;
}

enum Outcome {
    Welcomed,
    Queued,
    Refused,
}

async fn cycle(server: SocketAddr, n: u64) -> std::io::Result<Outcome> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((STORM_SOURCE, 0)))?;
    let stream = match socket.connect(server).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Ok(Outcome::Refused);
        }
        Err(error) => return Err(error),
    };
    let (read, mut write) = stream.into_split();
    let name = format!("storm{n}");
    let mut frames = ClientMessage::Hello {
        name: name.as_str().into(),
        features: None,
        last_id: None,
        resume: None,
    }
    .to_frame()
    .to_vec();
    frames.extend_from_slice(&ClientMessage::Bye.to_frame());
    write.write_all(&frames).await?;
    let mut reader = FramedRead::new(read, LengthDelimitedCodec::new());
    let mut outcome = Outcome::Refused;
    while let Some(frame) = reader.next().await {
        let Ok(event) = Event::decode(&frame?) else {
            break;
        };
        match event {
            Event::Welcome { .. } => outcome = Outcome::Welcomed,
            Event::Queued { .. } => outcome = Outcome::Queued,
            _ => {}
        }
    }
    Ok(outcome)
}
