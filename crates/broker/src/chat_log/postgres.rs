//! The `postgres` store: the log in a PostgreSQL database, in tables named
//! `anteroom_*`, created when missing.
//!
//! Two connections. The writing one runs appends, file records, retention
//! and the clean close one after another, as the SQLite writer thread does;
//! the reading one serves history pages, so that a page never waits behind
//! a commit. A batch is one statement, so one transaction and one round trip:
//! the rows go in as arrays (`unnest`) together with the id high-water mark.
//!
//! A connection that breaks is made again by the next call that needs it,
//! no sooner than a backoff allows (doubling up to [`MAX_BACKOFF`]); until
//! then calls fail at once with [`StoreError::Unavailable`], which the
//! committer counts as dropped messages. Every call has a deadline
//! ([`CALL_TIMEOUT`]): a server that stops answering counts as gone.
//!
//! There is no TLS: a URL that asks for it is refused at start-up, rather
//! than silently sending the log and the password in clear.
//!
//! PostgreSQL's `text` cannot hold NUL, which a message may: such a text is
//! kept exactly in `raw_text` (UTF-8 bytes), and `text` shows it with each
//! NUL replaced by U+FFFD for whoever reads the table.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;
use tokio::time::{Instant, error::Elapsed, timeout};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Row, Statement};
use tracing::{info, warn};

use super::memory::file_cutoff;
use super::store::{ID_LEAD, LogStore, Opened, Pruned, Retention, StoreError, StoreResult};
use super::{Logged, StoredFile, random_hex, recent_capacity};
use crate::config::{Config, StoreSync};

type PgError = tokio_postgres::Error;

const SCHEMA: &str = "
SET LOCAL client_min_messages = warning;
CREATE TABLE IF NOT EXISTS anteroom_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS anteroom_messages (
    id BIGINT PRIMARY KEY,
    ts BIGINT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    raw_text BYTEA,
    file_id TEXT,
    file_name TEXT,
    file_size BIGINT,
    file_mime TEXT
);
CREATE TABLE IF NOT EXISTS anteroom_files (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    mime TEXT NOT NULL,
    ts BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS anteroom_files_by_ts ON anteroom_files (ts);
";

/// One batch: the rows as arrays, and the high-water mark, in one
/// statement (data-modifying `WITH` parts always run to completion).
const APPEND: &str = "
WITH added AS (
    INSERT INTO anteroom_messages
        (id, ts, sender, text, raw_text, file_id, file_name, file_size, file_mime)
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::bytea[],
                         $6::text[], $7::text[], $8::int8[], $9::text[])
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
), marked AS (
    UPDATE anteroom_meta SET value = $10::int8::text WHERE key = 'high_water'
)
SELECT count(*) FROM added";

const PAGE: &str = "
SELECT id, ts, sender, text, raw_text, file_id, file_name, file_size, file_mime
FROM anteroom_messages WHERE id < $1 ORDER BY id DESC LIMIT $2";

const MARK: &str = "UPDATE anteroom_meta SET value = $1::int8::text WHERE key = 'high_water'";

/// The oldest `$1` rows, of which the first `$2` go (over the count) and
/// any older than `$3` (over the age).
const PRUNE_MESSAGES: &str = "
DELETE FROM anteroom_messages WHERE id IN (
    SELECT id FROM (
        SELECT id, ts, row_number() OVER (ORDER BY id) AS n
        FROM anteroom_messages ORDER BY id LIMIT $1
    ) AS oldest
    WHERE n <= $2 OR ts < $3
)";

const PRUNE_FILES: &str = "
DELETE FROM anteroom_files WHERE id IN (
    SELECT id FROM anteroom_files WHERE ts < $1 ORDER BY ts LIMIT $2
) RETURNING id";

/// Held while a server opens the log: two servers starting at once on one
/// database would otherwise race to create the tables and the epoch.
const OPEN_LOCK: i64 = 0x616e_7465_726f_6f6d;

/// How long making a connection may take, unless the URL says
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one call (a batch, a page, a retention step) may take
/// before its connection counts as gone.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest opening may take: it counts the messages and reads the
/// newest ones.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// The wait after the first failed attempt to connect again; it doubles
/// with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The longest wait between attempts to connect again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the database is and how to reach it.
struct Target {
    config: tokio_postgres::Config,
    /// The server, database and user, never the password: for messages.
    shown: String,
    sync: StoreSync,
}

impl Target {
    fn parse(url: &str, sync: StoreSync) -> StoreResult<Self> {
        let url = without_tls_options(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: PgError| {
            StoreError::Unavailable(format!(
                "the store URL is not a PostgreSQL URL: {}",
                chain(&e)
            ))
        })?;
        if config.get_hosts().is_empty() {
            return Err(StoreError::Unavailable(
                "the store URL names no PostgreSQL server: give a host \
                 (postgres://user@host/database) or a socket directory \
                 (postgres://user@/database?host=/var/run/postgresql)"
                    .to_string(),
            ));
        }
        config.ssl_mode(SslMode::Disable);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("anteroom");
        }
        let shown = shown(&config);
        Ok(Self {
            config,
            shown,
            sync,
        })
    }

    /// A failed call, named and explained.
    fn failed(&self, what: &str, error: &PgError) -> StoreError {
        StoreError::Unavailable(format!("{what} {}: {}", self.shown, reason(error)))
    }

    fn silent(&self, what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "{what} {}: no answer within {} s",
            self.shown,
            CALL_TIMEOUT.as_secs()
        ))
    }

    fn damaged(&self, detail: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "the chat log in {} is damaged ({detail}); the server will not serve a broken \
             log. Restore the database from a backup, or drop its anteroom_* tables to start \
             a new log with a new epoch",
            self.shown
        ))
    }
}

/// The URL without `sslmode` (TLS off is set in the parsed configuration);
/// refused when it asks for TLS.
fn without_tls_options(url: &str) -> StoreResult<Cow<'_, str>> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(Cow::Borrowed(url));
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("sslmode", "disable" | "allow" | "prefer") => {}
            ("sslmode", _) | ("sslnegotiation", "direct") => {
                return Err(StoreError::Unavailable(format!(
                    "the store URL asks for TLS ({pair}), and TLS to PostgreSQL is not \
                     supported: connect over a local Unix socket (?host=/var/run/postgresql), \
                     an SSH tunnel or a TLS sidecar on this host, and drop sslmode \
                     (or set it to prefer or disable)"
                )));
            }
            _ => kept.push(pair),
        }
    }
    Ok(match kept.is_empty() {
        true => Cow::Borrowed(base),
        false => Cow::Owned(format!("{base}?{}", kept.join("&"))),
    })
}

/// `PostgreSQL at host:port (database d, user u)`.
fn shown(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let mut about = Vec::new();
    if let Some(db) = config.get_dbname() {
        about.push(format!("database {db}"));
    }
    if let Some(user) = config.get_user() {
        about.push(format!("user {user}"));
    }
    match about.is_empty() {
        true => format!("PostgreSQL at {}", hosts.join(",")),
        false => format!("PostgreSQL at {} ({})", hosts.join(","), about.join(", ")),
    }
}

/// What went wrong, in words first, then the driver's and the server's
/// own. Neither ever holds the password.
fn reason(error: &PgError) -> String {
    if let Some(db) = error.as_db_error() {
        let what = match *db.code() {
            SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                "authentication failed"
            }
            SqlState::INVALID_CATALOG_NAME => "no such database",
            SqlState::INSUFFICIENT_PRIVILEGE => "permission denied",
            SqlState::TOO_MANY_CONNECTIONS => "the server has no connection to spare",
            SqlState::CANNOT_CONNECT_NOW | SqlState::ADMIN_SHUTDOWN | SqlState::CRASH_SHUTDOWN => {
                "the server is starting or stopping"
            }
            SqlState::DISK_FULL => "the server's disk is full",
            _ => return format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        };
        return format!("{what}: {}", db.message());
    }
    let io = std::iter::successors(std::error::Error::source(error), |e| e.source())
        .find_map(|e| e.downcast_ref::<std::io::Error>());
    use std::io::ErrorKind::*;
    let what = match io.map(std::io::Error::kind) {
        Some(ConnectionRefused) => "connection refused: is PostgreSQL running and listening there?",
        Some(HostUnreachable | NetworkUnreachable) => "host unreachable",
        Some(TimedOut) => "timed out",
        Some(NotFound) => "no server socket there",
        Some(PermissionDenied) => "permission denied",
        Some(ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof) => {
            "the connection broke"
        }
        _ if error.is_closed() => "the connection is closed",
        _ => return chain(error),
    };
    format!("{what} ({})", chain(error))
}

/// An error and its causes, `outer: inner: ...`.
fn chain(error: &PgError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A new connection; its driver task ends with it.
async fn connect(target: &Target) -> StoreResult<Client> {
    let connecting = target.config.connect(NoTls);
    let (client, connection) = timeout(CALL_TIMEOUT, connecting)
        .await
        .map_err(|_| target.silent("cannot connect to"))?
        .map_err(|e| target.failed("cannot connect to", &e))?;
    let shown = target.shown.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            warn!(store = %shown, error = %reason(&error), "chat log connection to PostgreSQL ended");
        }
    });
    Ok(client)
}

/// A connection of the store, with what is prepared on it.
trait Session: Sized + Send {
    /// Connects and prepares.
    fn start(target: &Target) -> impl Future<Output = StoreResult<Self>> + Send;
    fn client(&self) -> &Client;
}

/// The writing connection.
struct Writer {
    client: Client,
    append: Statement,
    mark: Statement,
    /// Messages in the table, kept so that retention by count never scans
    /// it; `None` on a new connection after a break (a commit cut off by
    /// it may or may not have landed) until retention counts again.
    count: Option<u64>,
}

impl Writer {
    async fn prepare(client: Client, target: &Target, count: Option<u64>) -> StoreResult<Self> {
        let prepared = async {
            if target.sync == StoreSync::Normal {
                // Like SQLite's `synchronous = NORMAL`: a crash of the
                // database's machine may lose the last moments of commits.
                client.batch_execute("SET synchronous_commit = off").await?;
            }
            let append = client.prepare(APPEND).await?;
            let mark = client.prepare(MARK).await?;
            Ok::<_, PgError>((append, mark))
        };
        let (append, mark) = timeout(CALL_TIMEOUT, prepared)
            .await
            .map_err(|_| target.silent("cannot prepare the chat log's writes in"))?
            .map_err(|e| target.failed("cannot prepare the chat log's writes in", &e))?;
        Ok(Self {
            client,
            append,
            mark,
            count,
        })
    }
}

impl Session for Writer {
    async fn start(target: &Target) -> StoreResult<Self> {
        let client = connect(target).await?;
        Self::prepare(client, target, None).await
    }

    fn client(&self) -> &Client {
        &self.client
    }
}

/// The reading connection, shared by concurrent pages.
struct Reader {
    client: Client,
    page: Statement,
}

impl Session for Arc<Reader> {
    async fn start(target: &Target) -> StoreResult<Self> {
        let client = connect(target).await?;
        let page = timeout(CALL_TIMEOUT, client.prepare(PAGE))
            .await
            .map_err(|_| target.silent("cannot prepare history reads in"))?
            .map_err(|e| target.failed("cannot prepare history reads in", &e))?;
        Ok(Arc::new(Reader { client, page }))
    }

    fn client(&self) -> &Client {
        &self.client
    }
}

/// One connection of the store: made when first needed and again after it
/// broke, no more often than the backoff allows.
struct Link<S> {
    role: &'static str,
    session: Option<S>,
    /// Failed attempts to connect since the last success.
    failures: u32,
    /// No attempt before this, after a failed one.
    retry_at: Option<Instant>,
    /// Why the last attempt failed, for the calls refused until the next.
    last_error: String,
    /// A connection was lost and not yet made again.
    reconnecting: bool,
}

impl<S: Session> Link<S> {
    fn new(role: &'static str, session: Option<S>) -> Self {
        Self {
            role,
            session,
            failures: 0,
            retry_at: None,
            last_error: String::new(),
            reconnecting: false,
        }
    }

    /// The connection, made now if it is missing and the backoff allows.
    async fn ready(&mut self, target: &Target) -> StoreResult<&mut S> {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.client().is_closed())
        {
            self.lost(target);
        }
        if self.session.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                return Err(StoreError::Unavailable(format!(
                    "{} (trying again in {} ms)",
                    self.last_error,
                    at.saturating_duration_since(Instant::now()).as_millis()
                )));
            }
            match S::start(target).await {
                Ok(session) => {
                    if self.reconnecting {
                        info!(store = %target.shown, connection = self.role, "chat log reconnected to PostgreSQL");
                    }
                    self.session = Some(session);
                    self.failures = 0;
                    self.retry_at = None;
                    self.reconnecting = false;
                }
                Err(error) => {
                    self.failures += 1;
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << (self.failures - 1).min(8))
                        .min(MAX_BACKOFF);
                    self.retry_at = Some(Instant::now() + backoff);
                    self.last_error = error.to_string();
                    return Err(error);
                }
            }
        }
        Ok(self.session.as_mut().expect("made above"))
    }

    /// Drops the connection: the next call makes a new one.
    fn lost(&mut self, target: &Target) {
        if self.session.take().is_some() {
            self.reconnecting = true;
            warn!(
                store = %target.shown,
                connection = self.role,
                "chat log lost its PostgreSQL connection; the next call makes a new one"
            );
        }
    }

    /// A call's outcome: a connection that broke or went silent is dropped.
    fn settle<T>(&mut self, target: &Target, what: &str, outcome: Outcome<T>) -> StoreResult<T> {
        if let Some(session) = &self.session
            && broken(session.client(), &outcome)
        {
            self.lost(target);
        }
        report(target, what, outcome)
    }
}

/// What a call with a deadline gives.
type Outcome<T> = Result<Result<T, PgError>, Elapsed>;

/// Whether `outcome` shows the connection of `client` gone: closed, failed
/// without an SQLSTATE (the trouble is the connection itself), or silent
/// past the deadline.
fn broken<T>(client: &Client, outcome: &Outcome<T>) -> bool {
    match outcome {
        Ok(Ok(_)) => false,
        Ok(Err(error)) => error.code().is_none() || client.is_closed(),
        Err(_) => true,
    }
}

/// A call's outcome as the store reports it.
fn report<T>(target: &Target, what: &str, outcome: Outcome<T>) -> StoreResult<T> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(target.failed(what, &error)),
        Err(_) => Err(target.silent(what)),
    }
}

/// The PostgreSQL store.
pub struct PostgresStore {
    target: Target,
    writer: Mutex<Link<Writer>>,
    reader: Mutex<Link<Arc<Reader>>>,
}

/// Opens (or creates) the log in the database at `url`.
pub async fn open(url: &str, config: &Config) -> StoreResult<Opened> {
    let target = Target::parse(url, config.store_sync)?;
    let mut client = connect(&target).await?;
    let loaded = timeout(
        OPEN_TIMEOUT,
        load(&mut client, &target, recent_capacity(config)),
    )
    .await
    .map_err(|_| target.silent("cannot open the chat log in"))??;
    let writer = Writer::prepare(client, &target, Some(loaded.count)).await?;
    Ok(Opened {
        store: Arc::new(PostgresStore {
            target,
            writer: Mutex::new(Link::new("writer", Some(writer))),
            reader: Mutex::new(Link::new("reader", None)),
        }),
        epoch: loaded.epoch,
        last_id: loaded.last_id,
        recent: loaded.recent,
        older: loaded.older,
        files: loaded.files,
    })
}

/// What opening read.
struct Loaded {
    epoch: String,
    last_id: u64,
    count: u64,
    recent: Vec<Logged>,
    older: bool,
    files: Vec<StoredFile>,
}

/// Creates the tables if missing, applies the epoch and high-water rules
/// and reads what the broker starts from, in one transaction.
async fn load(client: &mut Client, target: &Target, capacity: usize) -> StoreResult<Loaded> {
    let failed = |e: PgError| target.failed("cannot open the chat log in", &e);
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OPEN_LOCK])
        .await
        .map_err(failed)?;
    tx.batch_execute(SCHEMA).await.map_err(failed)?;
    let meta = async |key: &str| -> Result<Option<String>, PgError> {
        let row = tx
            .query_opt("SELECT value FROM anteroom_meta WHERE key = $1", &[&key])
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    };
    let stored_epoch = meta("epoch").await.map_err(failed)?;
    let high_water = meta("high_water").await.map_err(failed)?;
    let newest: Option<i64> = tx
        .query_one("SELECT max(id) FROM anteroom_messages", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(failed)?;
    let epoch = match stored_epoch {
        Some(epoch) => epoch,
        None if newest.is_none() => {
            let epoch = random_hex(16);
            tx.execute(
                "INSERT INTO anteroom_meta (key, value) VALUES ('epoch', $1)",
                &[&epoch],
            )
            .await
            .map_err(failed)?;
            epoch
        }
        None => return Err(target.damaged("its epoch is missing")),
    };
    let high_water = match high_water {
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| target.damaged("its id high-water mark is not an integer"))?
            .max(0) as u64,
        None => 0,
    };
    let last_id = high_water.max(newest.unwrap_or(0).max(0) as u64);
    // Until the first batch commits, a crash must not let ids repeat.
    tx.execute(
        "INSERT INTO anteroom_meta (key, value) VALUES ('high_water', $1::int8::text) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&((last_id + ID_LEAD) as i64)],
    )
    .await
    .map_err(failed)?;
    let count: i64 = tx
        .query_one("SELECT count(*) FROM anteroom_messages", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(failed)?;
    let mut recent = read_page(&tx, PAGE, i64::MAX, capacity + 1)
        .await
        .map_err(failed)?;
    let older = recent.len() > capacity;
    if older {
        recent.remove(0);
    }
    let files = tx
        .query("SELECT id, name, size, mime, ts FROM anteroom_files", &[])
        .await
        .and_then(|rows| rows.iter().map(stored_file).collect())
        .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(Loaded {
        epoch,
        last_id,
        count: count.max(0) as u64,
        recent,
        older,
        files,
    })
}

/// The newest `limit` messages below `before`, oldest first.
async fn read_page<C: GenericClient, S: tokio_postgres::ToStatement + Sync + Send + ?Sized>(
    client: &C,
    statement: &S,
    before: i64,
    limit: usize,
) -> Result<Vec<Logged>, PgError> {
    let rows = client
        .query(
            statement,
            &[&before, &(limit.min(i64::MAX as usize) as i64)],
        )
        .await?;
    let mut page = rows.iter().map(logged).collect::<Result<Vec<_>, _>>()?;
    page.reverse();
    Ok(page)
}

fn logged(row: &Row) -> Result<Logged, PgError> {
    let ts = row.try_get::<_, i64>(1)? as u64;
    let text: String = match row.try_get::<_, Option<Vec<u8>>>(4)? {
        // Written from a `str`: valid UTF-8 unless edited by hand.
        Some(raw) => String::from_utf8(raw)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        None => row.try_get(3)?,
    };
    let attachment = match row.try_get::<_, Option<String>>(5)? {
        Some(id) => Some(Arc::new(StoredFile {
            id,
            name: row.try_get(6)?,
            size: row.try_get::<_, i64>(7)? as u64,
            mime: row.try_get(8)?,
            ts,
        })),
        None => None,
    };
    Ok(Logged {
        id: row.try_get::<_, i64>(0)? as u64,
        ts,
        from: row.try_get::<_, String>(2)?.into(),
        text: text.into(),
        attachment,
    })
}

fn stored_file(row: &Row) -> Result<StoredFile, PgError> {
    Ok(StoredFile {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        size: row.try_get::<_, i64>(2)? as u64,
        mime: row.try_get(3)?,
        ts: row.try_get::<_, i64>(4)? as u64,
    })
}

/// A batch as the columns of [`APPEND`].
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<i64>,
    ts: Vec<i64>,
    senders: Vec<&'a str>,
    texts: Vec<Cow<'a, str>>,
    raw_texts: Vec<Option<&'a [u8]>>,
    file_ids: Vec<Option<&'a str>>,
    file_names: Vec<Option<&'a str>>,
    file_sizes: Vec<Option<i64>>,
    file_mimes: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [Logged]) -> Self {
        let mut c = Columns::default();
        for m in batch {
            let file = m.attachment.as_deref();
            c.ids.push(m.id as i64);
            c.ts.push(m.ts as i64);
            c.senders.push(&m.from);
            if m.text.contains('\0') {
                c.texts.push(Cow::Owned(m.text.replace('\0', "\u{FFFD}")));
                c.raw_texts.push(Some(m.text.as_bytes()));
            } else {
                c.texts.push(Cow::Borrowed(&m.text));
                c.raw_texts.push(None);
            }
            c.file_ids.push(file.map(|f| f.id.as_str()));
            c.file_names.push(file.map(|f| f.name.as_str()));
            c.file_sizes.push(file.map(|f| f.size as i64));
            c.file_mimes.push(file.map(|f| f.mime.as_str()));
        }
        c
    }
}

/// One retention step on the writing connection, in one transaction.
async fn prune_on(writer: &mut Writer, rule: Retention) -> Result<Pruned, PgError> {
    let tx = writer.client.transaction().await?;
    let count = match writer.count {
        Some(count) => count,
        None => {
            let n: i64 = tx
                .query_one("SELECT count(*) FROM anteroom_messages", &[])
                .await?
                .try_get(0)?;
            n.max(0) as u64
        }
    };
    let over = count.saturating_sub(rule.keep);
    let batch = rule.batch.min(i64::MAX as usize) as i64;
    let by_count = over.min(rule.batch as u64) as i64;
    let before_ts = rule.before_ts.min(i64::MAX as u64) as i64;
    let messages = tx
        .execute(PRUNE_MESSAGES, &[&batch, &by_count, &before_ts])
        .await? as usize;
    let oldest: Option<i64> = tx
        .query_opt("SELECT ts FROM anteroom_messages ORDER BY id LIMIT 1", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let oldest = oldest.map(|ts| Logged {
        id: 0,
        ts: ts.max(0) as u64,
        from: Arc::from(""),
        text: Arc::from(""),
        attachment: None,
    });
    let cutoff = file_cutoff(rule.before_ts, over > 0, oldest.as_ref());
    let files = tx
        .query(
            PRUNE_FILES,
            &[&(cutoff.min(i64::MAX as u64) as i64), &batch],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    tx.commit().await?;
    writer.count = Some(count.saturating_sub(messages as u64));
    Ok(Pruned { messages, files })
}

impl LogStore for PostgresStore {
    fn append<'a>(&'a self, batch: &'a [Logged]) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let Some(last) = batch.last().map(|m| m.id) else {
                return Ok(());
            };
            let c = Columns::of(batch);
            let high_water = (last + ID_LEAD) as i64;
            let mut link = self.writer.lock().await;
            let writer = link.ready(&self.target).await?;
            let call = async {
                let params: [&(dyn ToSql + Sync); 10] = [
                    &c.ids,
                    &c.ts,
                    &c.senders,
                    &c.texts,
                    &c.raw_texts,
                    &c.file_ids,
                    &c.file_names,
                    &c.file_sizes,
                    &c.file_mimes,
                    &high_water,
                ];
                writer
                    .client
                    .query_one(&writer.append, &params)
                    .await?
                    .try_get::<_, i64>(0)
            };
            let outcome = timeout(CALL_TIMEOUT, call).await;
            let added = link.settle(&self.target, "cannot commit messages to", outcome)?;
            if let Some(writer) = link.session.as_mut() {
                writer.count = writer.count.map(|n| n + added.max(0) as u64);
            }
            Ok(())
        }
        .boxed()
    }

    fn page(&self, before: u64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Logged>>> {
        async move {
            let before = i64::try_from(before).unwrap_or(i64::MAX);
            let reader = self.reader.lock().await.ready(&self.target).await?.clone();
            let outcome = timeout(
                CALL_TIMEOUT,
                read_page(&reader.client, &reader.page, before, limit),
            )
            .await;
            if broken(&reader.client, &outcome) {
                let mut link = self.reader.lock().await;
                // Unless another page already found it broken and replaced it.
                if link
                    .session
                    .as_ref()
                    .is_some_and(|current| Arc::ptr_eq(current, &reader))
                {
                    link.lost(&self.target);
                }
            }
            report(&self.target, "cannot read history from", outcome)
        }
        .boxed()
    }

    fn add_file(&self, file: StoredFile) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut link = self.writer.lock().await;
            let writer = link.ready(&self.target).await?;
            let (size, ts) = (file.size as i64, file.ts as i64);
            let params: [&(dyn ToSql + Sync); 5] = [&file.id, &file.name, &size, &file.mime, &ts];
            let call = writer.client.execute(
                "INSERT INTO anteroom_files (id, name, size, mime, ts) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, size = EXCLUDED.size, \
                 mime = EXCLUDED.mime, ts = EXCLUDED.ts",
                &params,
            );
            let outcome = timeout(CALL_TIMEOUT, call).await;
            link.settle(&self.target, "cannot record an uploaded file in", outcome)?;
            Ok(())
        }
        .boxed()
    }

    fn prune(&self, rule: Retention) -> BoxFuture<'_, StoreResult<Pruned>> {
        async move {
            let mut link = self.writer.lock().await;
            let writer = link.ready(&self.target).await?;
            let outcome = timeout(CALL_TIMEOUT, prune_on(writer, rule)).await;
            link.settle(&self.target, "cannot delete old messages from", outcome)
        }
        .boxed()
    }

    fn close(&self, last_id: u64) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut link = self.writer.lock().await;
            let writer = link.ready(&self.target).await?;
            let call = async {
                let tx = writer.client.transaction().await?;
                // The clean-shutdown mark is durable whatever `store_sync` says.
                tx.batch_execute("SET LOCAL synchronous_commit = on")
                    .await?;
                tx.execute(&writer.mark, &[&(last_id as i64)]).await?;
                tx.commit().await
            };
            let outcome = timeout(CALL_TIMEOUT, call).await;
            link.settle(&self.target, "cannot mark the chat log closed in", outcome)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match Target::parse(url, StoreSync::Normal) {
            Err(StoreError::Unavailable(message)) => message,
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url} was accepted"),
        }
    }

    #[test]
    fn tls_is_refused_with_the_ways_around_it() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let message = refused(&format!("postgres://u:pw@db.example/chat?sslmode={mode}"));
            assert!(
                message.contains("TLS to PostgreSQL is not supported"),
                "{message}"
            );
            assert!(message.contains("SSH tunnel"), "{message}");
            assert!(!message.contains("pw@"), "{message}");
        }
        let message = refused("postgres://u@db.example/chat?sslnegotiation=direct");
        assert!(message.contains("not supported"), "{message}");
    }

    #[test]
    fn tls_left_optional_connects_without_it() {
        for url in [
            "postgres://u:pw@db.example:6543/chat",
            "postgres://u:pw@db.example:6543/chat?sslmode=prefer",
            "postgres://u:pw@db.example:6543/chat?sslmode=disable&application_name=x",
            "postgresql://u@db.example:6543/chat?sslmode=allow",
        ] {
            let target = Target::parse(url, StoreSync::Normal).unwrap();
            assert_eq!(target.config.get_ssl_mode(), SslMode::Disable, "{url}");
            assert_eq!(
                target.shown,
                "PostgreSQL at db.example:6543 (database chat, user u)"
            );
        }
    }

    #[test]
    fn a_socket_directory_is_a_host() {
        let target = Target::parse(
            "postgres://anteroom@/chat?host=/var/run/postgresql",
            StoreSync::Full,
        )
        .unwrap();
        assert_eq!(
            target.shown,
            "PostgreSQL at /var/run/postgresql/.s.PGSQL.5432 (database chat, user anteroom)"
        );
        let message = refused("postgres://anteroom@/chat");
        assert!(message.contains("names no PostgreSQL server"), "{message}");
    }

    #[test]
    fn a_bad_url_says_so_without_the_password() {
        let message = refused("postgres://u:hunter2@db.example:notaport/chat");
        assert!(message.contains("not a PostgreSQL URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn nul_survives_beside_a_readable_text() {
        let batch = [Logged {
            id: 1,
            from: "a".into(),
            text: "x\0y".into(),
            ts: 1,
            attachment: None,
        }];
        let c = Columns::of(&batch);
        assert_eq!(c.texts[0], "x\u{FFFD}y");
        assert_eq!(c.raw_texts[0], Some(&b"x\0y"[..]));
    }
}
