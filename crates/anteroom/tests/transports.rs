//! The encrypted transports over real sockets: TCP, TLS and QUIC members in
//! one room and one queue; the client refusing certificates it cannot
//! trust; handshakes that never finish; certificate reloads under live
//! connections; the TLS versions offered; QUIC through a lossy link; and
//! frames that a full TLS socket must not hold back; the Python example over
//! TLS.
//!
//! Certificates are made by each test (rcgen) in a directory of its own.
//! The `openssl s_client` checks are skipped when `openssl` is not
//! installed (`.ci/run` installs it, and under CI its absence fails).

mod support;

#[path = "transports/kit.rs"]
mod kit;

#[path = "transports/flush.rs"]
mod flush;
#[path = "transports/handshakes.rs"]
mod handshakes;
#[path = "transports/loss.rs"]
mod loss;
#[path = "transports/mixed_room.rs"]
mod mixed_room;
#[path = "transports/python.rs"]
mod python;
#[path = "transports/reload.rs"]
mod reload;
#[path = "transports/trust.rs"]
mod trust;
#[path = "transports/versions.rs"]
mod versions;
