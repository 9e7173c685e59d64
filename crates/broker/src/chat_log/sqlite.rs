//! The `sqlite` store, embedded: `chat.sqlite3` in `data_dir`, in WAL mode.
//!
//! One thread owns the only writing connection and runs the writes one
//! after another, each batch in one transaction; reads run on connections
//! of their own (WAL lets them read while the writer writes), on tokio's
//! blocking pool. The WAL is checkpointed by the writer thread once a
//! second after writes, never by a commit on the room's behalf.
//!
//! At start-up the database is checked (`PRAGMA quick_check`); a damaged
//! or emptied file stops the server with a message naming it, rather than
//! serving a log with holes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::memory::file_cutoff;
use super::store::{ID_LEAD, LogStore, Opened, Pruned, Retention, StoreError, StoreResult};
use super::{Logged, StoredFile, random_hex, recent_capacity};
use crate::config::{Config, StoreSync};

/// The database file in `data_dir`.
pub const DB_FILE: &str = "chat.sqlite3";

/// Held while a server uses `data_dir`: a second server on the same
/// directory would interleave two rooms' ids.
pub const LOCK_FILE: &str = "anteroom.lock";

/// How often the writer checkpoints the WAL into the database while writes
/// come in.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    file_id TEXT,
    file_name TEXT,
    file_size INTEGER,
    file_mime TEXT
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mime TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_ts ON files (ts);
";

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// The writing connection and what the writer thread keeps beside it.
struct Writer {
    conn: Connection,
    /// Messages in the table, counted once at start-up and kept since, so
    /// retention by count never scans the table.
    count: u64,
    written_since_checkpoint: bool,
}

/// The SQLite store.
pub struct SqliteStore {
    jobs: Mutex<mpsc::Sender<Job>>,
    reads: Arc<Reads>,
    /// Keeps `data_dir` ours while the store lives.
    _lock: File,
}

/// Reading connections, opened when needed and kept for the next read.
struct Reads {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

fn damaged(path: &Path, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "the chat log {} is damaged ({detail}); the server will not serve a broken log. \
         Restore it from a backup, or move it (and its -wal and -shm files) aside to start \
         a new log with a new epoch",
        path.display()
    ))
}

fn unavailable(what: &str, path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {error}", path.display()))
}

/// Opens (or creates) the store in `config.data_dir`.
pub async fn open(config: &Config) -> StoreResult<Opened> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || open_blocking(&config))
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the chat log failed: {e}")))?
}

fn open_blocking(config: &Config) -> StoreResult<Opened> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| unavailable("cannot create data_dir", dir, e))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| unavailable("cannot open", &lock_path, e))?;
    lock.try_lock().map_err(|_| {
        StoreError::Unavailable(format!(
            "data_dir {} is in use by another anteroom server (it holds {}); \
             give each server its own data_dir",
            dir.display(),
            lock_path.display()
        ))
    })?;

    let path = dir.join(DB_FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        return Err(damaged(&path, "the file is empty, as if truncated"));
    }
    let mut conn = Connection::open(&path).map_err(|e| match StoreError::from(e) {
        StoreError::Corrupt(detail) => damaged(&path, detail),
        other => other,
    })?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| checked(&path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable(
            "cannot use write-ahead logging for",
            &path,
            format!("journal mode stays {mode}"),
        ));
    }
    let sync = match config.store_sync {
        StoreSync::Normal => "NORMAL",
        StoreSync::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0; PRAGMA busy_timeout = 5000;"
    ))
    .map_err(|e| checked(&path, e))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| checked(&path, e))?;
    if check != "ok" {
        return Err(damaged(&path, check));
    }

    // It reads, then writes: taking the write lock first lets the busy
    // timeout wait for another writer instead of failing on the upgrade.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| checked(&path, e))?;
    tx.execute_batch(SCHEMA).map_err(|e| checked(&path, e))?;
    let meta = |key: &str| -> rusqlite::Result<Option<rusqlite::types::Value>> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    let stored_epoch = meta("epoch").map_err(|e| checked(&path, e))?;
    let high_water = meta("high_water").map_err(|e| checked(&path, e))?;
    let newest: Option<i64> = tx
        .query_row("SELECT max(id) FROM messages", [], |r| r.get(0))
        .map_err(|e| checked(&path, e))?;
    let epoch = match stored_epoch {
        Some(rusqlite::types::Value::Text(epoch)) => epoch,
        None if newest.is_none() => {
            let epoch = random_hex(16);
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', ?1)",
                [&epoch],
            )
            .map_err(|e| checked(&path, e))?;
            epoch
        }
        _ => return Err(damaged(&path, "its epoch is missing")),
    };
    let high_water = match high_water {
        Some(rusqlite::types::Value::Integer(n)) => n.max(0) as u64,
        None => 0,
        Some(_) => return Err(damaged(&path, "its id high-water mark is not an integer")),
    };
    let last_id = high_water.max(newest.unwrap_or(0).max(0) as u64);
    // Until the first batch commits, a crash must not let ids repeat.
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('high_water', ?1)",
        [(last_id + ID_LEAD) as i64],
    )
    .map_err(|e| checked(&path, e))?;
    let count: i64 = tx
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .map_err(|e| checked(&path, e))?;
    let capacity = recent_capacity(config);
    let mut recent = read_page(&tx, i64::MAX, capacity + 1).map_err(|e| checked(&path, e))?;
    let older = recent.len() > capacity;
    if older {
        recent.remove(0);
    }
    let files = read_files(&tx).map_err(|e| checked(&path, e))?;
    tx.commit().map_err(|e| checked(&path, e))?;

    let (jobs, queue) = mpsc::channel::<Job>();
    let writer = Writer {
        conn,
        count: count.max(0) as u64,
        written_since_checkpoint: false,
    };
    std::thread::Builder::new()
        .name("chat-log-writer".into())
        .spawn(move || run_writer(writer, queue))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the chat log writer: {e}")))?;
    Ok(Opened {
        store: Arc::new(SqliteStore {
            jobs: Mutex::new(jobs),
            reads: Arc::new(Reads {
                path,
                pool: Mutex::new(Vec::new()),
            }),
            _lock: lock,
        }),
        epoch,
        last_id,
        recent,
        older,
        files,
    })
}

/// An error met while opening: damage names the file, the rest is passed on.
fn checked(path: &Path, error: rusqlite::Error) -> StoreError {
    match StoreError::from(error) {
        StoreError::Corrupt(detail) => damaged(path, detail),
        StoreError::Unavailable(detail) => unavailable("cannot use the chat log", path, detail),
        other => other,
    }
}

/// The writer thread: runs jobs in order; checkpoints after writes.
fn run_writer(mut writer: Writer, queue: mpsc::Receiver<Job>) {
    let mut last_checkpoint = Instant::now();
    loop {
        match queue.recv_timeout(CHECKPOINT_EVERY) {
            Ok(job) => job(&mut writer),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if writer.written_since_checkpoint && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            if let Err(error) = writer
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                tracing::warn!(%error, "chat log checkpoint failed");
            }
            writer.written_since_checkpoint = false;
            last_checkpoint = Instant::now();
        }
    }
    let _ = writer
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

impl SqliteStore {
    /// Runs `f` on the writer thread.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |writer| {
            let _ = tx.send(f(writer));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await
                .map_err(|_| StoreError::Closed)?
                .map_err(StoreError::from)
        }
        .boxed()
    }

    /// Runs `f` on a reading connection, on the blocking pool.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let store = self.reads.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let pooled = store.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let conn = match pooled {
                    Some(conn) => conn,
                    None => Connection::open_with_flags(
                        &store.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?,
                };
                let result = f(&conn);
                store
                    .pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                result
            })
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::from)
        }
        .boxed()
    }
}

/// The newest `limit` messages below `before`, oldest first.
fn read_page(conn: &Connection, before: i64, limit: usize) -> rusqlite::Result<Vec<Logged>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, sender, text, file_id, file_name, file_size, file_mime \
         FROM messages WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let mut page = stmt
        .query_map(params![before, limit as i64], |r| {
            let file_id: Option<String> = r.get(4)?;
            Ok(Logged {
                id: r.get::<_, i64>(0)? as u64,
                ts: r.get::<_, i64>(1)? as u64,
                from: r.get::<_, String>(2)?.into(),
                text: r.get::<_, String>(3)?.into(),
                attachment: match file_id {
                    Some(id) => Some(Arc::new(StoredFile {
                        id,
                        name: r.get(5)?,
                        size: r.get::<_, i64>(6)? as u64,
                        mime: r.get(7)?,
                        ts: r.get::<_, i64>(1)? as u64,
                    })),
                    None => None,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    page.reverse();
    Ok(page)
}

fn read_files(conn: &Connection) -> rusqlite::Result<Vec<StoredFile>> {
    let mut stmt = conn.prepare("SELECT id, name, size, mime, ts FROM files")?;
    stmt.query_map([], |r| {
        Ok(StoredFile {
            id: r.get(0)?,
            name: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
            mime: r.get(3)?,
            ts: r.get::<_, i64>(4)? as u64,
        })
    })?
    .collect()
}

impl LogStore for SqliteStore {
    fn append<'a>(&'a self, batch: &'a [Logged]) -> BoxFuture<'a, StoreResult<()>> {
        let batch = batch.to_vec();
        self.write(move |writer| {
            let Some(last) = batch.last().map(|m| m.id) else {
                return Ok(());
            };
            let tx = writer.conn.transaction()?;
            let mut added = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO messages \
                     (id, ts, sender, text, file_id, file_name, file_size, file_mime) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for m in &batch {
                    let file = m.attachment.as_deref();
                    added += insert.execute(params![
                        m.id as i64,
                        m.ts as i64,
                        &*m.from,
                        &*m.text,
                        file.map(|f| &f.id),
                        file.map(|f| &f.name),
                        file.map(|f| f.size as i64),
                        file.map(|f| &f.mime),
                    ])? as u64;
                }
                tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'high_water'")?
                    .execute([(last + ID_LEAD) as i64])?;
            }
            tx.commit()?;
            writer.count += added;
            writer.written_since_checkpoint = true;
            Ok(())
        })
    }

    fn page(&self, before: u64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Logged>>> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        self.read(move |conn| read_page(conn, before, limit))
    }

    fn add_file(&self, file: StoredFile) -> BoxFuture<'_, StoreResult<()>> {
        self.write(move |writer| {
            writer.conn.execute(
                "INSERT OR REPLACE INTO files (id, name, size, mime, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![file.id, file.name, file.size as i64, file.mime, file.ts as i64],
            )?;
            writer.written_since_checkpoint = true;
            Ok(())
        })
    }

    fn prune(&self, rule: Retention) -> BoxFuture<'_, StoreResult<Pruned>> {
        self.write(move |writer| {
            let over = writer.count.saturating_sub(rule.keep);
            let tx = writer.conn.transaction()?;
            // The oldest rows only: ids and times grow together, so this
            // never scans past the first batch.
            let by_count = over.min(rule.batch as u64) as i64;
            let mut messages = tx.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?1)",
                [by_count],
            )?;
            messages += tx.execute(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages ORDER BY id LIMIT ?1) AND ts < ?2",
                params![
                    (rule.batch - messages.min(rule.batch)) as i64,
                    rule.before_ts as i64
                ],
            )?;
            let oldest: Option<Logged> = read_page_oldest(&tx)?;
            let cutoff = file_cutoff(rule.before_ts, over > 0, oldest.as_ref());
            let files: Vec<String> = {
                let mut stmt =
                    tx.prepare_cached("SELECT id FROM files WHERE ts < ?1 ORDER BY ts LIMIT ?2")?;
                stmt.query_map(params![cutoff as i64, rule.batch as i64], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for id in &files {
                tx.execute("DELETE FROM files WHERE id = ?1", [id])?;
            }
            tx.commit()?;
            writer.count = writer.count.saturating_sub(messages as u64);
            if messages > 0 || !files.is_empty() {
                writer.written_since_checkpoint = true;
            }
            Ok(Pruned { messages, files })
        })
    }

    fn close(&self, last_id: u64) -> BoxFuture<'_, StoreResult<()>> {
        self.write(move |writer| {
            writer.conn.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'high_water'",
                [last_id as i64],
            )?;
            writer
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

fn read_page_oldest(conn: &Connection) -> rusqlite::Result<Option<Logged>> {
    conn.query_row("SELECT id, ts FROM messages ORDER BY id LIMIT 1", [], |r| {
        Ok(Logged {
            id: r.get::<_, i64>(0)? as u64,
            ts: r.get::<_, i64>(1)? as u64,
            from: Arc::from(""),
            text: Arc::from(""),
            attachment: None,
        })
    })
    .optional()
}
