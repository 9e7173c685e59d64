//! Connection gateways: turn sockets into sessions.
//!
//! [`session`] holds everything a connection does and takes any
//! [`transport::Transport`]: the TCP [`listener`] adapts its sockets with
//! [`transport::ByteStream`]; a message-framed transport (WebSocket) uses
//! [`transport::MessageDuplex`]. [`limits`] caps connections in total and
//! per address, and meters each address's new connections.

pub mod limits;
pub mod listener;
pub mod session;
pub mod transport;

use std::sync::Arc;

use governor::Quota;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::Config;
use crate::rate::Rate;
use crate::room::names::Names;
use crate::room::roster::Roster;

/// What every session needs from the broker.
pub struct Gateway {
    pub config: Config,
    pub bus: Bus,
    pub names: Arc<Names>,
    pub roster: Arc<Roster>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// Tracks session tasks so shutdown can wait for their goodbyes.
    pub tracker: TaskTracker,
    /// Per-member rate limit for `say`.
    pub quota: Quota,
    /// Per-member rate limit for `who`, whose answer can be large.
    pub who_rate: Option<Rate>,
    /// Per-connection limit on frames of every type: past it a client is
    /// flooding, and is cut off.
    pub request_rate: Option<Rate>,
    /// Total and per-IP connection caps, and the per-IP connection rate.
    pub limits: limits::Limits,
}

impl Gateway {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config, bus: Bus, roster: Arc<Roster>, shutdown: CancellationToken) -> Self {
        let period = std::time::Duration::from_secs_f64(1.0 / config.rate_limit);
        let burst =
            std::num::NonZeroU32::new(config.rate_burst).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MAX))
            .allow_burst(burst);
        let limits = limits::Limits::new(
            config.connection_cap(),
            config.max_connections_per_ip,
            Rate::new(
                config.connection_rate_per_ip,
                config.connection_burst_per_ip,
            ),
        );
        Self {
            who_rate: Rate::new(config.who_rate, config.who_burst),
            request_rate: Rate::new(config.request_rate, config.request_burst),
            config,
            limits,
            bus,
            names: Arc::new(Names::new()),
            roster,
            shutdown,
            tracker: TaskTracker::new(),
            quota,
        }
    }
}
