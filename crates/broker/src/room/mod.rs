//! The room: its rules as plain, network-free types, and the components on
//! the bus that apply them.
//!
//! * [`admission`]: who enters, who waits (strict FIFO), who is turned away;
//! * [`delivery`]: the room's sequencer, fanning every event out to members;
//! * [`roster`]: who is in the room, for `who`;
//! * [`waitlist`]: queued clients' positions and estimates, conflated;
//! * [`eta`]: the promotion rate behind the wait estimates;
//! * [`presence`]: joins and leaves batched for `presence_batch` members;
//! * [`held`]: places held for dropped `resume` clients;
//! * [`names`]: the name rule and the claims that keep names unique.

pub mod admission;
pub mod delivery;
pub mod eta;
pub mod held;
pub mod names;
pub mod presence;
pub mod roster;
pub mod waitlist;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::chat_log::Chat;
use crate::chat_log::writer;
use crate::cluster::Cluster;
use crate::config::{Config, SlowConsumerPolicy};
use crate::conn::shards::Shards;
use crate::supervisor::Component;

/// A running room: the bus, the roster sessions read for `who`, and the
/// component tasks, which end when the bus closes (and only then: ending
/// earlier is a failure the server must act on).
pub struct Room {
    /// Where gateways publish.
    pub bus: Bus,
    /// Who is in the room, for `who`.
    pub roster: Arc<roster::Roster>,
    /// The writer shards room delivery hands its passes to, and keeps pace
    /// with; the gateway's connections are written through them.
    pub shards: Arc<Shards>,
    /// The chat log and files, for the sessions.
    pub chat: Chat,
    /// Places held for dropped `resume` clients: sessions take them back.
    pub held: Arc<held::HeldPlaces>,
    /// Admission, delivery, roster, waitlist and the chat log.
    pub components: Vec<Component>,
}

impl Room {
    /// Starts every component on a new bus, with a chat log in memory.
    /// `shutdown` makes admission refuse newcomers while the gateway says
    /// goodbye.
    pub fn start(config: &Config, shutdown: &CancellationToken) -> Self {
        Self::start_with(config, shutdown, Chat::memory(config))
    }

    /// [`Room::start`] with the chat log and files opened from the
    /// configuration.
    pub fn start_with(config: &Config, shutdown: &CancellationToken, chat: Chat) -> Self {
        Self::start_in(config, shutdown, chat, None)
    }

    /// [`Room::start_with`], as a node of `cluster` when one is given:
    /// then the `cluster` component admits through the cluster and replays
    /// its log in place of admission and the waitlist, and clears `ready`
    /// while the node cannot reach Redis.
    pub fn start_in(
        config: &Config,
        shutdown: &CancellationToken,
        chat: Chat,
        cluster: Option<(Arc<Cluster>, Arc<AtomicBool>)>,
    ) -> Self {
        let (bus, subscriptions) = Bus::new();
        let roster = Arc::new(roster::Roster::new());
        let shards = Shards::for_current_runtime();
        let skip = config.slow_consumer == SlowConsumerPolicy::Skip;
        let held = Arc::new(held::HeldPlaces::new());
        let estimate = Arc::new(eta::WaitEstimate::new());
        let mut components = vec![
            Component::spawn(
                "room_delivery",
                delivery::run(
                    subscriptions.room_delivery,
                    delivery::RoomDelivery::new(config.max_active, skip)
                        .with_log(
                            chat.log.clone(),
                            chat.last_id,
                            config.max_upload_bytes as u64,
                        )
                        .with_presence_interval(config.presence_interval),
                    config.outbox_limit,
                    shards.clone(),
                ),
            ),
            Component::spawn("roster", roster::run(subscriptions.roster, roster.clone())),
        ];
        match cluster {
            Some((cluster, ready)) => {
                // The queue's positions come from the cluster component.
                drop(subscriptions.waitlist);
                components.push(Component::spawn(
                    "cluster",
                    crate::cluster::node::run(
                        subscriptions.admission,
                        bus.clone(),
                        cluster,
                        ready,
                        shutdown.clone(),
                    ),
                ));
            }
            None => components.extend([
                Component::spawn(
                    "admission",
                    admission::run(
                        subscriptions.admission,
                        bus.clone(),
                        config.max_active,
                        config.max_waiting,
                        admission::Entries::new(crate::rate::Rate::new(
                            config.join_rate,
                            config.join_burst,
                        )),
                        admission::Shared {
                            held: held.clone(),
                            grace: config.resume_grace,
                            estimate: estimate.clone(),
                        },
                        shutdown.clone(),
                    ),
                ),
                Component::spawn(
                    "waitlist",
                    waitlist::run(subscriptions.waitlist, waitlist::Waitlist::new(estimate)),
                ),
            ]),
        }
        components.push(Component::spawn(
            "chat_log",
            writer::run(
                subscriptions.chat_log,
                chat.last_id,
                chat.store.clone(),
                chat.log.clone(),
                chat.files.clone(),
                writer::Settings {
                    flush: config.store_flush,
                    max_age: config.history_max_age,
                    max_messages: config.history_max_messages as u64,
                },
            ),
        ));
        Self {
            bus,
            roster,
            shards,
            chat,
            held,
            components,
        }
    }
}
