//! Every chat log store keeps the same contract: one suite of checks runs
//! against the memory store, SQLite (in a temporary `data_dir`) and
//! PostgreSQL (a throwaway server, a new database per check), each check on
//! a new, empty store. Then what only PostgreSQL has: its errors, and
//! reconnecting after the connection or the server went away.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anteroom_broker::chat_log::postgres::MAX_BACKOFF;
use anteroom_broker::chat_log::store::{ID_LEAD, LogStore, Pruned, Retention};
use anteroom_broker::chat_log::{self, Logged, Opened, StoreError, StoredFile};
use anteroom_broker::config::{Config, StoreKind};
use support::postgres::{PASSWORD_ROLE, Postgres};

/// Where one check's store lives.
struct Place<'a> {
    config: Config,
    /// SQLite's directory, removed at the end.
    dir: Option<PathBuf>,
    /// The server and database of a PostgreSQL store.
    postgres: Option<(&'a Postgres, String)>,
}

impl Place<'_> {
    fn memory() -> Self {
        Place {
            config: config(StoreKind::Memory),
            dir: None,
            postgres: None,
        }
    }

    fn sqlite() -> Self {
        static DIRS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "anteroom-stores-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = config(StoreKind::Sqlite);
        config.data_dir = dir.clone();
        Place {
            config,
            dir: Some(dir),
            postgres: None,
        }
    }

    fn postgres<'a>(pg: &'a Postgres, database: &str) -> Place<'a> {
        let url = pg.database(database);
        Place {
            config: config(StoreKind::Postgres(url)),
            dir: None,
            postgres: Some((pg, database.to_string())),
        }
    }

    /// Whether what is stored outlives the store.
    fn durable(&self) -> bool {
        self.config.store_kind() != StoreKind::Memory
    }

    async fn open(&self) -> Opened {
        chat_log::open(&self.config)
            .await
            .unwrap_or_else(|e| panic!("open {:?}: {e}", self.config.store))
    }

    /// Removes the log, as an operator starting afresh would.
    fn wipe(&self) {
        if let Some(dir) = &self.dir {
            std::fs::remove_dir_all(dir).expect("remove data_dir");
        }
        if let Some((pg, db)) = &self.postgres {
            pg.sql(
                db,
                "DROP TABLE anteroom_meta, anteroom_messages, anteroom_files",
            );
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn config(store: StoreKind) -> Config {
    Config {
        store: Some(store),
        ..Config::default()
    }
}

fn message(id: u64, ts: u64) -> Logged {
    Logged {
        id,
        from: "ann".into(),
        text: format!("message {id}").into(),
        ts,
        attachment: None,
    }
}

/// Messages `ids`, `ts` 1000 + 10 × id.
fn messages(ids: std::ops::RangeInclusive<u64>) -> Vec<Logged> {
    ids.map(|id| message(id, 1000 + 10 * id)).collect()
}

fn ids(page: &[Logged]) -> Vec<u64> {
    page.iter().map(|m| m.id).collect()
}

fn file(id: &str, ts: u64) -> StoredFile {
    StoredFile {
        id: id.to_string(),
        name: format!("{id}.txt"),
        size: 3,
        mime: "text/plain".to_string(),
        ts,
    }
}

async fn page(store: &Arc<dyn LogStore>, before: u64, limit: usize) -> Vec<Logged> {
    store.page(before, limit).await.expect("page")
}

/// Prunes until a step deletes less than `rule.batch` of both kinds;
/// checks every step stays within the batch. Returns what every step
/// deleted.
async fn prune_all(store: &Arc<dyn LogStore>, rule: Retention) -> Vec<Pruned> {
    let mut steps = Vec::new();
    loop {
        let pruned = store.prune(rule).await.expect("prune");
        assert!(pruned.messages <= rule.batch, "{pruned:?}");
        assert!(pruned.files.len() <= rule.batch, "{pruned:?}");
        let done = pruned.messages < rule.batch && pruned.files.len() < rule.batch;
        steps.push(pruned);
        if done {
            return steps;
        }
        assert!(steps.len() < 1000, "retention never finishes");
    }
}

// ---- The checks ----

async fn append_and_page_in_order(place: &Place<'_>) {
    let opened = place.open().await;
    assert_eq!(opened.last_id, 0);
    assert!(opened.recent.is_empty() && !opened.older && opened.files.is_empty());
    let store = opened.store;
    store.append(&messages(1..=4)).await.unwrap();
    store.append(&[]).await.unwrap();
    store.append(&messages(5..=10)).await.unwrap();
    assert_eq!(page(&store, u64::MAX, 100).await, messages(1..=10));
    assert_eq!(ids(&page(&store, u64::MAX, 3).await), [8, 9, 10]);
    assert_eq!(ids(&page(&store, 8, 3).await), [5, 6, 7]);
    // A page of limit + 1 says whether older ones exist, as history does.
    assert_eq!(ids(&page(&store, 4, 3 + 1).await), [1, 2, 3], "no more");
    assert_eq!(ids(&page(&store, 5, 3 + 1).await), [1, 2, 3, 4], "more");
    assert!(page(&store, 1, 5).await.is_empty());
    assert!(page(&store, 0, 5).await.is_empty());
}

async fn text_and_attachments_round_trip(place: &Place<'_>) {
    let texts = [
        "héllo wörld",
        "日本語のテキスト",
        "emoji 🎉👍🏽 and a joined 👩‍💻",
        "a NUL \0 inside, and one at the end \0",
        "'; DROP TABLE anteroom_messages; --",
        "line\nbreak\ttab \\ backslash",
        "",
    ];
    let mut batch: Vec<Logged> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| Logged {
            id: i as u64 + 1,
            from: if i % 2 == 0 { "Zoë" } else { "名前" }.into(),
            text: (*text).into(),
            ts: 1_700_000_000_000 + i as u64,
            attachment: None,
        })
        .collect();
    let long = "ü".repeat(2048);
    batch.push(Logged {
        id: 8,
        from: "ann".into(),
        text: long.as_str().into(),
        ts: 1_700_000_000_100,
        attachment: None,
    });
    // The log keeps a file as the message showed it; its time is the
    // message's.
    for (id, text, name) in [(9, "", "résumé 📄.pdf"), (10, "see this", "plain.txt")] {
        let ts = 1_700_000_000_200 + id;
        batch.push(Logged {
            id,
            from: "bob".into(),
            text: text.into(),
            ts,
            attachment: Some(Arc::new(StoredFile {
                id: format!("{id:032x}"),
                name: name.to_string(),
                size: 4_294_967_296 + id,
                mime: "application/pdf".to_string(),
                ts,
            })),
        });
    }
    let opened = place.open().await;
    opened.store.append(&batch).await.unwrap();
    assert_eq!(page(&opened.store, u64::MAX, 100).await, batch);
    if place.durable() {
        opened.store.close(10).await.unwrap();
        drop(opened);
        let again = place.open().await;
        assert_eq!(again.recent, batch);
    }
}

async fn files_round_trip(place: &Place<'_>) {
    let opened = place.open().await;
    let first = StoredFile {
        id: "00112233445566778899aabbccddeeff".to_string(),
        name: "ça 🌍.png".to_string(),
        size: 12_345,
        mime: "image/png".to_string(),
        ts: 1_700_000_000_000,
    };
    opened.store.add_file(first.clone()).await.unwrap();
    opened.store.add_file(file("second", 5)).await.unwrap();
    if place.durable() {
        opened.store.close(0).await.unwrap();
        drop(opened);
        let again = place.open().await;
        let mut files = again.files.clone();
        files.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(files, [first, file("second", 5)]);
    } else {
        // The records are there for retention to find.
        let rule = Retention {
            before_ts: 2_000_000_000_000,
            keep: 10,
            batch: 10,
        };
        let pruned = opened.store.prune(rule).await.unwrap();
        let gone: BTreeSet<_> = pruned.files.into_iter().collect();
        assert_eq!(gone, BTreeSet::from([first.id, "second".to_string()]));
    }
}

async fn a_new_store_gets_a_new_epoch_kept_until_wiped(place: &Place<'_>) {
    let first = place.open().await;
    assert_eq!(first.epoch.len(), 32, "{}", first.epoch);
    assert!(first.epoch.chars().all(|c| c.is_ascii_hexdigit()));
    first.store.append(&messages(1..=3)).await.unwrap();
    first.store.close(3).await.unwrap();
    let epoch = first.epoch.clone();
    drop(first);
    let again = place.open().await;
    if !place.durable() {
        // Every memory store is new.
        assert_ne!(again.epoch, epoch);
        assert_eq!(again.last_id, 0);
        assert!(again.recent.is_empty());
        return;
    }
    assert_eq!(again.epoch, epoch, "reopening keeps the epoch");
    drop(again);
    place.wipe();
    let wiped = place.open().await;
    assert_ne!(wiped.epoch, epoch, "a wiped store is a new one");
    assert_eq!(wiped.epoch.len(), 32);
    assert_eq!(wiped.last_id, 0);
    assert!(wiped.recent.is_empty() && wiped.files.is_empty() && !wiped.older);
}

async fn ids_continue_after_a_clean_close(place: &Place<'_>) {
    if !place.durable() {
        return;
    }
    let first = place.open().await;
    first.store.append(&messages(1..=5)).await.unwrap();
    first.store.close(5).await.unwrap();
    drop(first);
    let again = place.open().await;
    assert_eq!(again.last_id, 5);
    assert_eq!(again.recent, messages(1..=5));
    again.store.append(&messages(6..=7)).await.unwrap();
    again.store.close(7).await.unwrap();
    drop(again);
    assert_eq!(place.open().await.last_id, 7);
}

async fn ids_skip_ahead_after_an_unclean_stop(place: &Place<'_>) {
    if !place.durable() {
        return;
    }
    let first = place.open().await;
    let epoch = first.epoch.clone();
    first.store.append(&messages(1..=5)).await.unwrap();
    drop(first); // no close: as if the server crashed
    let second = place.open().await;
    assert!(second.last_id >= 5 + ID_LEAD, "{}", second.last_id);
    assert_eq!(second.epoch, epoch);
    assert_eq!(second.recent, messages(1..=5));
    let after_crash = second.last_id;
    drop(second); // crashed again before committing anything
    let third = place.open().await;
    assert!(third.last_id > after_crash, "{}", third.last_id);
    // Ids issued before the first crash are never issued again.
    let next = third.last_id + 1;
    third.store.append(&[message(next, 5000)]).await.unwrap();
    third.store.close(next).await.unwrap();
    drop(third);
    let fourth = place.open().await;
    assert_eq!(fourth.last_id, next);
    assert_eq!(ids(&fourth.recent), [1, 2, 3, 4, 5, next]);
}

async fn appending_again_changes_nothing(place: &Place<'_>) {
    if !place.durable() {
        return;
    }
    let opened = place.open().await;
    let store = opened.store;
    store.append(&messages(1..=3)).await.unwrap();
    // A retried batch, and one that overlaps.
    store.append(&messages(1..=3)).await.unwrap();
    store.append(&messages(3..=4)).await.unwrap();
    assert_eq!(page(&store, u64::MAX, 100).await, messages(1..=4));
    // The count retention keeps is 4, not 9.
    let rule = Retention {
        before_ts: 0,
        keep: 3,
        batch: 100,
    };
    assert_eq!(store.prune(rule).await.unwrap().messages, 1);
}

async fn recent_is_the_newest_that_memory_holds(place: &Place<'_>) {
    if !place.durable() {
        return;
    }
    let mut place_config = place.config.clone();
    // Memory holds as many as retention keeps, here 5.
    place_config.history_max_messages = 5;
    assert_eq!(chat_log::recent_capacity(&place_config), 5);
    let open = || async {
        chat_log::open(&place_config)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let first = open().await;
    first.store.append(&messages(1..=5)).await.unwrap();
    first.store.close(5).await.unwrap();
    drop(first);
    let full = open().await;
    assert_eq!(full.recent, messages(1..=5));
    assert!(!full.older);
    full.store.append(&messages(6..=8)).await.unwrap();
    full.store.close(8).await.unwrap();
    drop(full);
    let over = open().await;
    assert_eq!(over.recent, messages(4..=8));
    assert!(over.older);
}

async fn prune_by_count_in_batches(place: &Place<'_>) {
    let opened = place.open().await;
    let store = opened.store;
    store.append(&messages(1..=25)).await.unwrap();
    let rule = Retention {
        before_ts: 0,
        keep: 10,
        batch: 4,
    };
    let steps = prune_all(&store, rule).await;
    let counts: Vec<usize> = steps.iter().map(|s| s.messages).collect();
    assert_eq!(counts, [4, 4, 4, 3]);
    assert_eq!(page(&store, u64::MAX, 100).await, messages(16..=25));
    assert_eq!(store.prune(rule).await.unwrap().messages, 0);
    store.append(&messages(26..=30)).await.unwrap();
    assert_eq!(prune_all(&store, rule).await[0].messages, 4);
    assert_eq!(
        ids(&page(&store, u64::MAX, 100).await),
        (21..=30).collect::<Vec<_>>()
    );
    if place.durable() {
        // The count is right after reopening too.
        store.close(30).await.unwrap();
        drop(store);
        let again = place.open().await;
        again.store.append(&messages(31..=32)).await.unwrap();
        let total: usize = prune_all(&again.store, rule)
            .await
            .iter()
            .map(|s| s.messages)
            .sum();
        assert_eq!(total, 2);
        assert_eq!(
            ids(&page(&again.store, u64::MAX, 100).await),
            (23..=32).collect::<Vec<_>>()
        );
    }
}

async fn prune_by_age_in_batches(place: &Place<'_>) {
    let opened = place.open().await;
    let store = opened.store;
    store.append(&messages(1..=20)).await.unwrap();
    // Messages 1..=13 are older than this.
    let rule = Retention {
        before_ts: 1000 + 10 * 13 + 1,
        keep: 1000,
        batch: 5,
    };
    let counts: Vec<usize> = prune_all(&store, rule)
        .await
        .iter()
        .map(|s| s.messages)
        .collect();
    assert_eq!(counts, [5, 5, 3]);
    assert_eq!(page(&store, u64::MAX, 100).await, messages(14..=20));
}

async fn prune_files_by_the_same_rules(place: &Place<'_>) {
    let opened = place.open().await;
    let store = opened.store;
    // Messages at ts 1010..=1100.
    store.append(&messages(1..=10)).await.unwrap();
    for (id, ts) in [
        ("old", 100),
        ("between", 1040),
        ("mid", 1080),
        ("new", 9000),
    ] {
        store.add_file(file(id, ts)).await.unwrap();
    }
    // By age alone.
    let by_age = Retention {
        before_ts: 500,
        keep: 1000,
        batch: 10,
    };
    let pruned = store.prune(by_age).await.unwrap();
    assert_eq!(
        (pruned.messages, pruned.files),
        (0, vec!["old".to_string()])
    );
    // Over the count: messages 1..=5 go, and files older than the oldest
    // message kept (6, at 1060) with them.
    let by_count = Retention {
        before_ts: 500,
        keep: 5,
        batch: 10,
    };
    let pruned = store.prune(by_count).await.unwrap();
    assert_eq!(pruned.messages, 5);
    assert_eq!(pruned.files, ["between"]);
    assert_eq!(
        store.prune(by_count).await.unwrap().files,
        Vec::<String>::new()
    );
    // Files go in batches too.
    for n in 0..7 {
        store
            .add_file(file(&format!("batch{n}"), 200 + n))
            .await
            .unwrap();
    }
    let small = Retention {
        before_ts: 500,
        keep: 1000,
        batch: 3,
    };
    let steps = prune_all(&store, small).await;
    let counts: Vec<usize> = steps.iter().map(|s| s.files.len()).collect();
    assert_eq!(counts, [3, 3, 1]);
    let gone: BTreeSet<String> = steps.into_iter().flat_map(|s| s.files).collect();
    assert_eq!(gone, (0..7).map(|n| format!("batch{n}")).collect());
    if place.durable() {
        store.close(10).await.unwrap();
        drop(store);
        let again = place.open().await;
        let kept: BTreeSet<String> = again.files.iter().map(|f| f.id.clone()).collect();
        assert_eq!(kept, BTreeSet::from(["mid".to_string(), "new".to_string()]));
        assert_eq!(ids(&again.recent), [6, 7, 8, 9, 10]);
    }
}

/// Runs every check, each on a new store from `place`.
async fn conforms<'a>(mut place: impl FnMut(&str) -> Place<'a>) {
    macro_rules! checks {
        ($($check:ident),* $(,)?) => {
            $(
                println!("check: {}", stringify!($check));
                $check(&place(stringify!($check))).await;
            )*
        };
    }
    checks!(
        append_and_page_in_order,
        text_and_attachments_round_trip,
        files_round_trip,
        a_new_store_gets_a_new_epoch_kept_until_wiped,
        ids_continue_after_a_clean_close,
        ids_skip_ahead_after_an_unclean_stop,
        appending_again_changes_nothing,
        recent_is_the_newest_that_memory_holds,
        prune_by_count_in_batches,
        prune_by_age_in_batches,
        prune_files_by_the_same_rules,
    );
}

#[tokio::test]
async fn the_memory_store_conforms() {
    conforms(|_| Place::memory()).await;
}

#[tokio::test]
async fn the_sqlite_store_conforms() {
    conforms(|_| Place::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_conforms() {
    let Some(pg) = support::postgres() else {
        return;
    };
    conforms(|check| Place::postgres(&pg, check)).await;
}

// ---- PostgreSQL only ----

async fn open_error(url: &str) -> StoreError {
    match chat_log::open(&config(StoreKind::Postgres(url.to_string()))).await {
        Ok(_) => panic!("{url} opened"),
        Err(error) => error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_says_what_failed_and_never_the_password() {
    let Some(pg) = support::postgres() else {
        return;
    };
    pg.sql(
        "postgres",
        &format!("CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right-horse-battery'"),
    );
    pg.database("errors");

    let started = Instant::now();
    let closed_port = support::postgres::free_port();
    let error = open_error(&format!(
        "postgres://postgres:pa55word@127.0.0.1:{closed_port}/errors"
    ))
    .await;
    let text = error.to_string();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{closed_port}")), "{text}");
    assert!(!text.contains("pa55word"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused promptly"
    );

    let url = |password: &str, db: &str| {
        format!(
            "postgres://{PASSWORD_ROLE}:{password}@127.0.0.1:{}/{db}",
            pg.port
        )
    };
    let text = open_error(&url("wrong-horse-battery", "errors"))
        .await
        .to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains(PASSWORD_ROLE), "{text}");
    assert!(!text.contains("wrong-horse"), "{text}");

    let text = open_error(&url("right-horse-battery", "nowhere"))
        .await
        .to_string();
    assert!(text.contains("no such database"), "{text}");
    assert!(text.contains("database nowhere"), "{text}");
    assert!(!text.contains("right-horse"), "{text}");

    let text = open_error(&format!("{}?sslmode=require", pg.url("errors")))
        .await
        .to_string();
    assert!(
        text.contains("TLS to PostgreSQL is not supported"),
        "{text}"
    );

    // Not a chat log: no permission to create its tables.
    let text = open_error(&url("right-horse-battery", "errors"))
        .await
        .to_string();
    assert!(text.contains("permission denied"), "{text}");
    assert!(!text.contains("right-horse"), "{text}");

    // A Unix socket needs no TLS.
    let opened = chat_log::open(&config(StoreKind::Postgres(pg.socket_url("errors"))))
        .await
        .unwrap();
    assert!(opened.recent.is_empty());
    drop(opened);

    // TLS left optional works without it.
    let opened = chat_log::open(&config(StoreKind::Postgres(format!(
        "{}?sslmode=prefer",
        pg.url("errors")
    ))))
    .await
    .unwrap();
    opened.store.append(&messages(1..=2)).await.unwrap();
    opened.store.close(2).await.unwrap();
    drop(opened);
    assert_eq!(
        pg.sql("errors", "SELECT count(*) FROM anteroom_messages"),
        "2"
    );

    // A log whose epoch or high-water mark was damaged is refused.
    pg.sql("errors", "DELETE FROM anteroom_meta WHERE key = 'epoch'");
    let error = open_error(&pg.url("errors")).await;
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    assert!(error.to_string().contains("epoch is missing"), "{error}");
    pg.sql(
        "errors",
        "INSERT INTO anteroom_meta VALUES ('epoch', 'e'); \
         UPDATE anteroom_meta SET value = 'lots' WHERE key = 'high_water'",
    );
    let error = open_error(&pg.url("errors")).await;
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
}

/// Appends `batch` until it is committed, within `within`; every failure
/// before must be `Unavailable`, and prompt.
async fn append_until_ok(store: &Arc<dyn LogStore>, batch: &[Logged], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        let started = Instant::now();
        match store.append(batch).await {
            Ok(()) => return failures,
            Err(StoreError::Unavailable(why)) => {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "a failed append took {:?}: {why}",
                    started.elapsed()
                );
                failures += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "not committed within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_the_connection_or_the_server_went_away() {
    let Some(mut pg) = support::postgres() else {
        return;
    };
    let url = pg.database("reconnect");
    let opened = chat_log::open(&config(StoreKind::Postgres(url.clone())))
        .await
        .unwrap();
    let store = opened.store;
    store.append(&messages(1..=3)).await.unwrap();
    assert_eq!(ids(&page(&store, u64::MAX, 10).await), [1, 2, 3]);

    // The server ends both connections.
    pg.sql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = 'reconnect' AND pid <> pg_backend_pid()",
    );
    append_until_ok(&store, &messages(4..=4), Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let page_again = loop {
        match store.page(u64::MAX, 10).await {
            Ok(page) => break page,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    };
    assert_eq!(ids(&page_again), [1, 2, 3, 4]);

    // The server stops: calls fail at once, and keep failing at once
    // while the backoff runs.
    pg.stop();
    for id in 5..=8 {
        let started = Instant::now();
        let error = store.append(&[message(id, 2000)]).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{error}");
        let rule = Retention {
            before_ts: 0,
            keep: 100,
            batch: 10,
        };
        assert!(matches!(
            store.prune(rule).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    // Back, the store is too: within the longest backoff and a little.
    pg.start_again();
    let failures = append_until_ok(&store, &messages(9..=10), MAX_BACKOFF * 2).await;
    println!("appends refused while reconnecting: {failures}");
    assert_eq!(ids(&page(&store, u64::MAX, 20).await), [1, 2, 3, 4, 9, 10]);
    // Retention counts again after the break.
    let rule = Retention {
        before_ts: 0,
        keep: 5,
        batch: 10,
    };
    assert_eq!(store.prune(rule).await.unwrap().messages, 1);
    store.close(10).await.unwrap();
    drop(store);
    let again = chat_log::open(&config(StoreKind::Postgres(url)))
        .await
        .unwrap();
    assert_eq!(again.last_id, 10);
    assert_eq!(ids(&again.recent), [2, 3, 4, 9, 10]);
}
