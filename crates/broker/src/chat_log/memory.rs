//! The `memory` store: the log lives as long as the process. History works
//! as with any store; a restart starts a new epoch with nothing in it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::store::{LogStore, Opened, Pruned, Retention, StoreResult};
use super::{Logged, StoredFile, random_hex};

#[derive(Default)]
struct Inner {
    messages: VecDeque<Logged>,
    files: BTreeMap<String, StoredFile>,
}

/// The log in the process's memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new, empty log with a new epoch.
pub fn open() -> Opened {
    Opened {
        store: Arc::new(MemoryStore::default()),
        epoch: random_hex(16),
        last_id: 0,
        recent: Vec::new(),
        older: false,
        files: Vec::new(),
    }
}

impl LogStore for MemoryStore {
    fn append<'a>(&'a self, batch: &'a [Logged]) -> BoxFuture<'a, StoreResult<()>> {
        self.inner().messages.extend(batch.iter().cloned());
        futures_util::future::ready(Ok(())).boxed()
    }

    fn page(&self, before: u64, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Logged>>> {
        let inner = self.inner();
        let end = inner.messages.partition_point(|m| m.id < before);
        let page = inner
            .messages
            .range(end.saturating_sub(limit)..end)
            .cloned()
            .collect();
        futures_util::future::ready(Ok(page)).boxed()
    }

    fn add_file(&self, file: StoredFile) -> BoxFuture<'_, StoreResult<()>> {
        self.inner().files.insert(file.id.clone(), file);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn prune(&self, rule: Retention) -> BoxFuture<'_, StoreResult<Pruned>> {
        let mut inner = self.inner();
        let mut pruned = Pruned::default();
        let over = (inner.messages.len() as u64).saturating_sub(rule.keep) as usize;
        while pruned.messages < rule.batch
            && inner
                .messages
                .front()
                .is_some_and(|m| m.ts < rule.before_ts || pruned.messages < over)
        {
            inner.messages.pop_front();
            pruned.messages += 1;
        }
        let cutoff = file_cutoff(rule.before_ts, over > 0, inner.messages.front());
        let old: Vec<String> = inner
            .files
            .values()
            .filter(|f| f.ts < cutoff)
            .take(rule.batch)
            .map(|f| f.id.clone())
            .collect();
        for id in &old {
            inner.files.remove(id);
        }
        pruned.files = old;
        futures_util::future::ready(Ok(pruned)).boxed()
    }

    fn close(&self, _last_id: u64) -> BoxFuture<'_, StoreResult<()>> {
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// Files uploaded before this go: older than the age limit, or, while the
/// log is over its count, older than the oldest message it keeps (no kept
/// message can refer to them, short of one posted long after its upload).
pub fn file_cutoff(before_ts: u64, over_count: bool, oldest_kept: Option<&Logged>) -> u64 {
    match oldest_kept {
        Some(oldest) if over_count => before_ts.max(oldest.ts),
        _ => before_ts,
    }
}
