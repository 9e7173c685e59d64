//! Faults against the real server over real sockets: half frames, 4 GiB
//! length prefixes, silent floods, slow consumers, resets in the middle of a
//! read or a write, clients killed while queued or while being promoted,
//! descriptor exhaustion.
//!
//! Every test runs its own `anteroom serve` process, so its metrics and its
//! descriptors are its own. In every case the room and the queue stay
//! consistent (every connected client is in the room or in the queue, once;
//! nobody who left remains), `anteroom_connections` returns to zero in every
//! state once the clients are gone, and the server's open descriptors return
//! to their baseline.

mod support;

#[path = "faults/harness.rs"]
mod harness;

#[path = "faults/descriptors.rs"]
mod descriptors;
#[path = "faults/floods.rs"]
mod floods;
#[path = "faults/frames.rs"]
mod frames;
#[path = "faults/queue.rs"]
mod queue;
#[path = "faults/resets.rs"]
mod resets;
