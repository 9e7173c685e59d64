//! The chat log: every room message kept in a store, and history served
//! from it.
//!
//! * [`writer`]: the `chat_log` component on the bus. It follows the `room`
//!   topic like room delivery, numbers messages the same way, and hands them
//!   to a committer that writes them in batches, one transaction each. The
//!   room never waits for it: a store that falls behind loses messages from
//!   the log (counted), never delays their delivery.
//! * [`recent`]: the newest messages in memory, filled by room delivery, so
//!   that history on join costs no read of the store.
//! * [`store`]: the one trait every store implements: [`memory`],
//!   [`sqlite`] (the embedded default) and [`postgres`].

pub mod memory;
pub mod postgres;
pub mod recent;
pub mod sqlite;
pub mod store;
pub mod writer;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anteroom_protocol::{Attachment, ServerMessage};
use bytes::Bytes;

use crate::config::{Config, StoreKind};
use crate::files::Files;
use recent::{Lookup, Recent};
pub use store::{LogStore, Opened, StoreError};

/// One message of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// The room's id for it.
    pub id: u64,
    /// The sender's name, as stored.
    pub from: Arc<str>,
    /// What was said (may be empty with an attachment).
    pub text: Arc<str>,
    /// Unix time in milliseconds.
    pub ts: u64,
    /// A file posted with it.
    pub attachment: Option<Arc<StoredFile>>,
}

impl Logged {
    /// The `message` frame's map for it.
    pub fn to_message(&self) -> ServerMessage<'_> {
        ServerMessage::Message {
            id: self.id,
            from: Cow::Borrowed(&self.from),
            text: Cow::Borrowed(&self.text),
            ts: self.ts,
            attachment: self.attachment.as_deref().map(StoredFile::attachment),
        }
    }
}

/// An uploaded file, as the log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Unguessable: 128 random bits in hex. Its URL is `/files/{id}`.
    pub id: String,
    /// The name the uploader gave (already made safe to show).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as uploaded (already checked to be one).
    pub mime: String,
    /// When it was uploaded, Unix time in milliseconds.
    pub ts: u64,
}

/// Where files are served from: `/files/{id}`.
pub const FILES_PATH: &str = "/files/";

impl StoredFile {
    /// Its URL on the web listener.
    pub fn url(&self) -> String {
        format!("{FILES_PATH}{}", self.id)
    }

    /// The `attachment` map of a `message`.
    pub fn attachment(&self) -> Attachment<'static> {
        Attachment {
            url: Cow::Owned(self.url()),
            name: Cow::Owned(self.name.clone()),
            size: self.size,
            mime: Cow::Owned(self.mime.clone()),
        }
    }
}

/// The log as sessions and room delivery see it: its epoch, the newest
/// messages in memory, and the store for older pages.
pub struct ChatLog {
    epoch: Arc<str>,
    recent: Mutex<Recent>,
    /// The last id the committer is done with (written or given up on).
    settled: AtomicU64,
    store: Arc<dyn LogStore>,
    page_max: usize,
    on_join: usize,
}

impl ChatLog {
    /// The log of an opened store, for a room configured by `config`.
    pub fn new(config: &Config, opened: &mut Opened) -> Self {
        let capacity = recent_capacity(config);
        Self {
            epoch: opened.epoch.as_str().into(),
            recent: Mutex::new(Recent::new(
                capacity,
                std::mem::take(&mut opened.recent),
                opened.older,
            )),
            settled: AtomicU64::new(opened.last_id),
            store: opened.store.clone(),
            page_max: config.history_page_max,
            on_join: config.history_on_join,
        }
    }

    /// Names the store: ids compare only within one epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Room delivery: a message was handed out.
    pub fn record(&self, message: Logged) {
        let settled = self.settled.load(Ordering::Acquire);
        self.recent().push(message, settled);
    }

    /// The committer is done with every message up to `id`: memory may
    /// let them go.
    pub fn settle(&self, id: u64) {
        self.settled.fetch_max(id, Ordering::AcqRel);
        self.recent().trim(id);
    }

    /// After retention: if the store holds nothing older than memory's
    /// oldest message, pages stop saying `more`.
    pub async fn recheck_older(&self) -> Result<(), StoreError> {
        let Some((oldest, true)) = self.recent().oldest() else {
            return Ok(());
        };
        if self.store.page(oldest, 1).await?.is_empty() {
            self.recent().none_older_than(oldest);
        }
        Ok(())
    }

    /// The `history` frame a new member gets after its `welcome`: built
    /// once, and again only after the log changed, so a join storm encodes
    /// it once.
    pub fn on_join_frame(&self) -> Bytes {
        self.recent().join_frame(|recent| {
            let (messages, more) = recent.newest(self.on_join);
            history_frame(messages, more, &self.epoch)
        })
    }

    /// The `history` frame for a resumed member: the messages after
    /// `after`, the newest `history_page_max` of them, `more` when older
    /// ones it missed were left out. Memory holds every page size, so this
    /// never waits for the store.
    pub fn missed_frame(&self, after: u64) -> Bytes {
        let recent = self.recent();
        let (messages, more) = recent.since(after, self.page_max);
        history_frame(messages, more, &self.epoch)
    }

    /// A `history` page for a request: `before` and `limit` as the client
    /// sent them (absent: the newest; `limit` clamped to `1..history_page_max`).
    pub async fn page(&self, before: Option<i64>, limit: Option<i64>) -> Result<Bytes, StoreError> {
        let limit = limit.map_or(self.page_max, |l| {
            usize::try_from(l).unwrap_or(1).clamp(1, self.page_max)
        });
        let before = before.map_or(u64::MAX, |b| u64::try_from(b).unwrap_or(0));
        let lookup = self.recent().page(before, limit);
        match lookup {
            Lookup::Complete { messages, more } => {
                Ok(history_frame(messages.iter(), more, &self.epoch))
            }
            Lookup::Store {
                tail,
                before,
                limit,
            } => {
                // One more than asked for says whether older ones exist.
                let mut older = self.store.page(before, limit + 1).await?;
                let more = older.len() > limit;
                if more {
                    older.remove(0);
                }
                Ok(history_frame(
                    older.iter().chain(tail.iter()),
                    more,
                    &self.epoch,
                ))
            }
        }
    }

    /// Retention deleted what is older than `ts`.
    pub fn forget_before(&self, ts: u64) {
        self.recent().forget_before(ts);
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Nothing panics while holding it; a poisoned lock still holds
        // sound data.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Messages kept in memory: every page size, and never more than
/// retention keeps.
pub fn recent_capacity(config: &Config) -> usize {
    config
        .history_page_max
        .max(config.history_on_join)
        .max(MIN_RECENT)
        .min(config.history_max_messages)
}

/// Messages kept in memory at least, whatever the page sizes: room for the
/// store to commit a burst before a page reaches past memory.
const MIN_RECENT: usize = 1024;

/// Most bytes of text a `history` frame carries: however large messages
/// may be, a page stays far below the 16 MiB a client accepts.
pub const HISTORY_FRAME_BUDGET: usize = 4 << 20;

/// A `history` frame: the newest of `messages` that fit in
/// [`HISTORY_FRAME_BUDGET`]; if older ones had to be left out, `more` says
/// so, and the client pages back for them.
pub fn history_frame<'a>(
    messages: impl Iterator<Item = &'a Logged>,
    more: bool,
    epoch: &str,
) -> Bytes {
    let messages: Vec<&Logged> = messages.collect();
    let mut budget = HISTORY_FRAME_BUDGET;
    let mut first = messages.len();
    for message in messages.iter().rev() {
        let cost = message.from.len() + message.text.len() + 64;
        if cost > budget && first < messages.len() {
            break;
        }
        budget = budget.saturating_sub(cost);
        first -= 1;
    }
    ServerMessage::History {
        messages: messages[first..].iter().map(|m| m.to_message()).collect(),
        more: more || first > 0,
        epoch: Cow::Borrowed(epoch),
    }
    .to_frame()
}

/// The chat log and the files of a room, opened together at start-up and
/// shared by room delivery, the `chat_log` component and the sessions.
#[derive(Clone)]
pub struct Chat {
    /// History: memory and the store.
    pub log: Arc<ChatLog>,
    /// Uploaded files; `None` when the web listener, which carries uploads,
    /// is off (then `files` is not granted).
    pub files: Option<Arc<Files>>,
    /// The store, for the `chat_log` component.
    pub store: Arc<dyn LogStore>,
    /// The last id the room may have issued.
    pub last_id: u64,
}

impl Chat {
    /// Opens the configured store and the files in `data_dir`.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let opened = open(config).await?;
        Self::from_opened(config, opened)
    }

    /// A log in memory and no files: for rooms built in code.
    pub fn memory(config: &Config) -> Self {
        let opened = memory::open();
        let mut config = config.clone();
        config.web_listen = None;
        Self::from_opened(&config, opened).expect("a memory log with no files always opens")
    }

    fn from_opened(config: &Config, mut opened: Opened) -> Result<Self, StoreError> {
        let files = match config.web_listen {
            Some(_) => Some(Arc::new(
                Files::open(
                    &files_dir(config),
                    config.store_kind() == StoreKind::Memory,
                    std::mem::take(&mut opened.files),
                    opened.store.clone(),
                    config.max_upload_bytes as u64,
                    config.upload_rate,
                )
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "cannot use {} for uploaded files: {e}",
                        files_dir(config).display()
                    ))
                })?,
            )),
            None => None,
        };
        Ok(Self {
            log: Arc::new(ChatLog::new(config, &mut opened)),
            files,
            store: opened.store,
            last_id: opened.last_id,
        })
    }
}

/// Where uploaded files are kept: `data_dir/files`, except with the
/// `memory` store, whose files are as fleeting as its log: a directory of
/// their own under the system's temporary directory, removed at exit.
fn files_dir(config: &Config) -> std::path::PathBuf {
    match config.store_kind() {
        StoreKind::Memory => std::env::temp_dir().join(format!(
            "anteroom-files-{}-{}",
            std::process::id(),
            random_hex(4)
        )),
        _ => config.data_dir.join(crate::files::FILES_DIR),
    }
}

/// Opens the configured store. A SQLite store that is damaged, or a
/// PostgreSQL server that cannot be reached, stops the start-up here with a
/// message saying which and why.
pub async fn open(config: &Config) -> Result<Opened, StoreError> {
    match config.store_kind() {
        StoreKind::Memory => Ok(memory::open()),
        StoreKind::Sqlite => sqlite::open(config).await,
        StoreKind::Postgres(url) => postgres::open(&url, config).await,
    }
}

/// A random string of `bytes` random bytes in hex: epochs, upload tokens
/// and file ids, none of which may be guessed.
pub fn random_hex(bytes: usize) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut raw = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the system's random source works");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, size: usize) -> Logged {
        Logged {
            id,
            from: Arc::from("ann"),
            text: Arc::from("x".repeat(size)),
            ts: id,
            attachment: None,
        }
    }

    fn decoded(frame: &Bytes) -> (Vec<u64>, bool) {
        match ServerMessage::decode(&frame[4..]).unwrap() {
            ServerMessage::History { messages, more, .. } => (
                messages
                    .iter()
                    .map(|m| match m {
                        ServerMessage::Message { id, .. } => *id,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                more,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_history_frame_keeps_the_newest_messages_that_fit() {
        let small: Vec<Logged> = (1..=3).map(|id| message(id, 10)).collect();
        assert_eq!(
            decoded(&history_frame(small.iter(), false, "e")),
            (vec![1, 2, 3], false)
        );
        // Each message a third of the budget: the newest two fit, the
        // oldest is left for the next page.
        let large: Vec<Logged> = (1..=3)
            .map(|id| message(id, HISTORY_FRAME_BUDGET / 3))
            .collect();
        assert_eq!(
            decoded(&history_frame(large.iter(), false, "e")),
            (vec![2, 3], true)
        );
        // One message over the budget on its own is still sent.
        let huge = [message(9, HISTORY_FRAME_BUDGET + 1)];
        assert_eq!(
            decoded(&history_frame(huge.iter(), false, "e")),
            (vec![9], false)
        );
    }
}
