//! The room: its rules as plain, network-free types, and the components on
//! the bus that apply them.
//!
//! * [`admission`]: who enters, who waits (strict FIFO), who is turned away;
//! * [`delivery`]: the room's sequencer, fanning every event out to members;
//! * [`roster`]: who is in the room, for `who`;
//! * [`waitlist`]: queued clients' positions, conflated;
//! * [`names`]: the name rule and the claims that keep names unique.

pub mod admission;
pub mod delivery;
pub mod names;
pub mod roster;
pub mod waitlist;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::{Config, SlowConsumerPolicy};

/// A running room: the bus, the roster sessions read for `who`, and the
/// component tasks, which end when the bus closes.
pub struct Room {
    /// Where gateways publish.
    pub bus: Bus,
    /// Who is in the room, for `who`.
    pub roster: Arc<roster::Roster>,
    /// Admission, delivery, roster and waitlist.
    pub components: Vec<JoinHandle<()>>,
}

impl Room {
    /// Starts every component on a new bus. `shutdown` makes admission
    /// refuse newcomers while the gateway says goodbye.
    pub fn start(config: &Config, shutdown: &CancellationToken) -> Self {
        let (bus, subscriptions) = Bus::new();
        let roster = Arc::new(roster::Roster::new());
        let skip = config.slow_consumer == SlowConsumerPolicy::Skip;
        let components = vec![
            tokio::spawn(delivery::run(
                subscriptions.room_delivery,
                delivery::RoomDelivery::new(config.max_active, skip),
                config.outbox_limit,
            )),
            tokio::spawn(roster::run(subscriptions.roster, roster.clone())),
            tokio::spawn(admission::run(
                subscriptions.admission,
                bus.clone(),
                config.max_active,
                config.max_waiting,
                admission::Entries::new(crate::rate::Rate::new(
                    config.join_rate,
                    config.join_burst,
                )),
                shutdown.clone(),
            )),
            tokio::spawn(waitlist::run(
                subscriptions.waitlist,
                waitlist::Waitlist::new(),
            )),
        ];
        Self {
            bus,
            roster,
            components,
        }
    }
}
