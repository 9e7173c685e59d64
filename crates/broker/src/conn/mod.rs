//! One connection as the broker sees it: the [`handle`] shared between its
//! session and the components that send to it, its lifecycle [`state`], its
//! bounded [`outbox`], and the [`writer`] and writer [`shards`] that drain it.

pub mod entry;
pub mod handle;
pub mod outbox;
pub mod shards;
pub mod state;
pub mod writer;
