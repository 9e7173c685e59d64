//! Panics: contained where they cost one connection.
//!
//! A session or a writer that panics takes down one connection: the session
//! core catches the panic, closes the connection and gives its seat or
//! queue place back (see `gateway::session`).

use std::any::Any;

/// What a panic said, for the log.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "a non-text panic payload"
    }
}
