//! What every chat log store does, behind one trait: the log's writer and
//! its readers depend on this, never on SQLite or PostgreSQL.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Logged, StoredFile};

/// A store's answer.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why the chat log could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's files or database could not be used at all.
    #[error("{0}")]
    Unavailable(String),
    /// The store holds data that is not a sound chat log; serving it would
    /// show users a broken history, so the server refuses to start.
    #[error("{0}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("the chat log is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(error.to_string())
            }
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}

/// What a store holds when it is opened, for the broker to start from.
pub struct Opened {
    /// The store, for the writer and the readers.
    pub store: Arc<dyn LogStore>,
    /// Names the store; a new store gets a new random one.
    pub epoch: String,
    /// The last id the room may have issued: the next message gets the one
    /// after it.
    pub last_id: u64,
    /// The newest messages, oldest first, to serve history from memory.
    pub recent: Vec<Logged>,
    /// Whether older messages than `recent` exist.
    pub older: bool,
    /// Every file the log still references.
    pub files: Vec<StoredFile>,
}

/// What retention deletes.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Messages and files before this Unix time in milliseconds go.
    pub before_ts: u64,
    /// The newest this many messages stay; older ones go.
    pub keep: u64,
    /// Most rows deleted by one call, so the writer is never held long.
    pub batch: usize,
}

/// What one retention pass deleted.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Messages deleted.
    pub messages: usize,
    /// Files whose records were deleted: their bytes go next.
    pub files: Vec<String>,
}

/// Ids a crashed server may have issued past what it committed: the store
/// records `last committed id + ID_LEAD` with every batch, and a server
/// that did not shut down cleanly starts there, so ids never repeat. It
/// covers every message that can be delivered and not yet committed: those
/// on the `room` topic, in the committer's queue and in the batch being
/// written.
pub const ID_LEAD: u64 = 100_000;

const _: () = assert!(
    ID_LEAD > (crate::bus::TOPIC_CAPACITY + super::writer::QUEUE + super::writer::MAX_BATCH) as u64
);

/// A chat log store. Methods return boxed futures so that the broker holds
/// any store as `Arc<dyn LogStore>`.
pub trait LogStore: Send + Sync + 'static {
    /// Commits `batch` (ascending ids) in one transaction, with the id
    /// high-water mark `last id + ID_LEAD`.
    fn append<'a>(&'a self, batch: &'a [Logged]) -> BoxFuture<'a, StoreResult<()>>;

    /// The newest `limit` messages with an id below `before`, oldest first.
    fn page(&self, before: u64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Logged>>>;

    /// Records an uploaded file.
    fn add_file(&self, file: StoredFile) -> BoxFuture<'_, StoreResult<()>>;

    /// Deletes what `rule` says is too old, at most `rule.batch` rows of each
    /// kind.
    fn prune(&self, rule: Retention) -> BoxFuture<'_, StoreResult<Pruned>>;

    /// A clean shutdown after everything up to `last_id` was committed:
    /// the next start continues at `last_id + 1`.
    fn close(&self, last_id: u64) -> BoxFuture<'_, StoreResult<()>>;
}
