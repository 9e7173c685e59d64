//! Connection gateways: turn sockets into sessions.
//!
//! [`session`] holds everything a connection does and takes any
//! [`transport::Transport`]: the TCP [`listener`] adapts its sockets with
//! [`transport::ByteStream`], after a handshake for [`tls`]; [`quic`]
//! adapts its one stream the same way; [`web`]'s WebSocket sessions use
//! [`transport::MessageDuplex`]. [`limits`] caps connections in total and
//! per address, and meters each address's new connections.

pub mod limits;
pub mod listener;
pub mod quic;
pub mod session;
pub mod tls;
pub mod transport;
pub mod web;

use std::sync::Arc;

use governor::Quota;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::chat_log::Chat;
use crate::config::Config;
use crate::conn::shards::Shards;
use crate::rate::Rate;
use crate::room::held::HeldPlaces;
use crate::room::names::Names;
use crate::room::roster::Roster;

/// What every session needs from the broker.
pub struct Gateway {
    pub config: Config,
    pub bus: Bus,
    pub names: Arc<Names>,
    pub roster: Arc<Roster>,
    /// History, and the files uploaded to the room.
    pub chat: Chat,
    /// Places held for dropped `resume` clients, taken back by `hello`.
    pub held: Arc<HeldPlaces>,
    /// The version 1.1 features this server grants to clients asking.
    pub offered: anteroom_protocol::Features,
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
    /// The writer shards every connection's frames go out through.
    pub shards: Arc<Shards>,
    /// Refusals that get a handshake (TLS, QUIC) so they can be told
    /// `bye{server_full}`; past these, a flood is closed bare.
    pub refusals: Arc<tokio::sync::Semaphore>,
    /// The cluster this node serves the room with: names, messages and
    /// whispers go through it.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Gateway {
    /// The gateway of a node of `cluster`, which grants only the features
    /// a cluster serves.
    pub fn in_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Self {
        self.offered = offered(&self.chat, &self.config, cluster.is_some());
        self.cluster = cluster;
        self
    }
}

/// Refusals handshaking at once (see [`Gateway::refusals`]).
const REFUSALS_IN_FLIGHT: usize = 64;

impl Gateway {
    /// Builds the shared state from a validated configuration; `shards`
    /// and `chat` are the room's (see [`crate::room::Room`]).
    pub fn new(
        config: Config,
        bus: Bus,
        roster: Arc<Roster>,
        shards: Arc<Shards>,
        chat: Chat,
        held: Arc<HeldPlaces>,
        shutdown: CancellationToken,
    ) -> Self {
        let quota = rate_quota(&config);
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
            limits,
            bus,
            names: Arc::new(Names::new()),
            roster,
            offered: offered(&chat, &config, false),
            cluster: None,
            chat,
            held,
            shutdown,
            tracker: TaskTracker::new(),
            quota,
            shards,
            refusals: Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT)),
            config,
        }
    }
}

/// The features this server grants: `files` only with the web listener,
/// which carries the uploads, and `resume` only with a grace to hold
/// places for. A cluster node grants neither, nor `eta`: their state (the
/// uploaded files, the held places, the promotion rate) is its own, not
/// the cluster's.
fn offered(chat: &Chat, config: &Config, clustered: bool) -> anteroom_protocol::Features {
    use anteroom_protocol::{Feature, Features};
    let mut offered = Features::NONE
        .with(Feature::History)
        .with(Feature::Whisper)
        .with(Feature::PresenceBatch)
        .with(Feature::Lagging);
    if clustered {
        return offered;
    }
    offered = offered.with(Feature::Eta);
    if chat.files.is_some() {
        offered = offered.with(Feature::Files);
    }
    if !config.resume_grace.is_zero() {
        offered = offered.with(Feature::Resume);
    }
    offered
}

/// The token bucket of `say` for a configuration: one message per
/// `1 / rate_limit` seconds, `rate_burst` at once. Public so that the
/// configuration's fuzz target builds exactly what the gateway builds.
///
/// The parsers keep `rate_limit` and `rate_burst` within ranges the rate
/// limiter's arithmetic handles; a `Config` built in code is clamped here
/// instead of panicking.
pub fn rate_quota(config: &Config) -> Quota {
    use crate::config::MAX_BURST_REFILL;
    use std::num::NonZeroU32;
    let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
    // A period too long to represent, or longer than a whole burst may take
    // to refill, is clamped so that the limiter's nanosecond arithmetic
    // (`period * burst`) cannot overflow.
    let longest = MAX_BURST_REFILL / burst.get();
    let period = std::time::Duration::try_from_secs_f64(1.0 / config.rate_limit)
        .unwrap_or(longest)
        .min(longest);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::DefaultDirectRateLimiter;

    #[test]
    fn any_rate_builds_a_limiter_that_works() {
        let mut config = Config::default();
        for (rate, burst) in [
            (20.0, 40),
            (1e-30, 1),
            (0.0, 7),
            (f64::NAN, u32::MAX),
            (-1.0, 2),
            (1e30, u32::MAX),
            (0.001, u32::MAX),
        ] {
            config.rate_limit = rate;
            config.rate_burst = burst;
            let limiter = DefaultDirectRateLimiter::direct(rate_quota(&config));
            assert!(limiter.check().is_ok(), "{rate} {burst}");
            let _ = limiter.check();
        }
    }
}
