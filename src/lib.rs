//! anteroom: a single-room chat broker speaking MessagePack over TCP.
//!
//! Inside it is a publish/subscribe broker. Gateways turn connections into
//! events on an internal bus with three topics; independent components
//! subscribe and act:
//!
//! * [`gateway`]: accepts connections and runs one session per client
//!   (handshake, requests, heartbeat, goodbye); publishes `presence` and `room`.
//! * [`bus`]: the `room`, `presence` and `queue` topics and their events.
//! * [`admission`]: decides who enters, waits or is turned away (FIFO queue);
//!   consumes `presence`, publishes `room` and `queue`.
//! * [`room_delivery`]: sequences the room and fans each event out, encoded once.
//! * [`roster`]: who is in the room, in join order, for `who`.
//! * [`waitlist`]: tells queued clients their position, conflated.
//! * [`outbox`]: each connection's bounded outbound queue and writer.
//! * [`bench`]: the load generator behind `anteroom bench`.
//! * [`client`]: the client side of the protocol and the terminal client.
//! * [`protocol`], [`names`], [`config`], [`metrics`], [`http`], [`server`].
//!
//! ARCHITECTURE.md explains the actors, the topics and the ordering rules.

pub mod admission;
pub mod bench;
pub mod bus;
pub mod client;
pub mod config;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod names;
pub mod outbox;
pub mod peer;
pub mod protocol;
pub mod room_delivery;
pub mod roster;
pub mod server;
pub mod waitlist;
