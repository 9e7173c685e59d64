//! Version 1.1's chat features over real sockets: version-1 clients left
//! as they were, feature negotiation, history (from memory and from the
//! SQLite store), whispers, files over the web listener, crash safety and
//! damaged stores with real server processes, retention, the store's
//! metrics, and the same log kept in PostgreSQL.

mod support;

#[path = "chat_log/kit.rs"]
mod kit;

#[path = "chat_log/crash.rs"]
mod crash;
#[path = "chat_log/damage.rs"]
mod damage;
#[path = "chat_log/files.rs"]
mod files;
#[path = "chat_log/history.rs"]
mod history;
#[path = "chat_log/metrics.rs"]
mod metrics;
#[path = "chat_log/negotiation.rs"]
mod negotiation;
#[path = "chat_log/postgres.rs"]
mod postgres;
#[path = "chat_log/retention.rs"]
mod retention;
#[path = "chat_log/version1.rs"]
mod version1;
#[path = "chat_log/whisper.rs"]
mod whisper;

/// Tests that load the machine (streams of thousands of messages, and the
/// crash tests, whose deadlines are tight) run one at a time.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
