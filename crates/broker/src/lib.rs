//! anteroom's broker: one chat room behind an internal publish/subscribe bus.
//!
//! Gateways turn connections into events on a bus with three topics;
//! independent components subscribe and act (ARCHITECTURE.md has the whole
//! picture):
//!
//! * [`gateway`]: listeners and the one session core every transport uses
//!   (handshake, requests, heartbeat, goodbye); publishes `presence` and `room`.
//! * [`bus`]: the `room`, `presence` and `queue` topics and their events.
//! * [`room`]: the room's rules as plain types and the components that apply
//!   them: admission (who enters, waits or is turned away), delivery (the
//!   room's sequencer and fan-out), the roster and the waitlist.
//! * [`chat_log`]: the fourth subscriber of the `room` topic, writing every
//!   message to a store (SQLite, PostgreSQL or memory), and the history
//!   served from it.
//! * [`files`]: uploaded files, their tokens and their bytes on disk.
//! * [`conn`]: one connection as the rest of the broker sees it: its state,
//!   its bounded outbox and the writer that drains it.
//! * [`config`]: every configuration key, declared once.
//! * [`certs`]: the certificate of the encrypted listeners, reloaded on SIGHUP.
//! * [`rate`]: the token bucket behind every rate limit.
//! * [`telemetry`]: metric names, the latency histogram and the HTTP endpoint.
//! * [`server`]: wiring and the two-phase shutdown.
//! * [`supervisor`]: what a panic costs: one connection, or the server.

pub mod bus;
pub mod certs;
pub mod chat_log;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod files;
pub mod gateway;
pub mod rate;
pub mod room;
pub mod server;
pub mod supervisor;
pub mod telemetry;
