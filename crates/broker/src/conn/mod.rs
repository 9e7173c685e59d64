//! One connection as the broker sees it: the [`handle`] shared between its
//! session and the components that send to it, its lifecycle [`state`], its
//! bounded [`outbox`] and the [`writer`] that drains it.

pub mod handle;
pub mod outbox;
pub mod state;
pub mod writer;
