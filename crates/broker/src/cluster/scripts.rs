//! The cluster's Lua scripts and typed calls to them. Each script runs
//! atomically in Redis after the shared prelude, which releases the nodes
//! whose lease ran out; the scripts are the only writers of the cluster's
//! keys.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use super::Settings;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("prelude.lua"),
                "\n",
                include_str!($file)
            ))
        })
    };
}

static JOIN: LazyLock<Script> = script!("join.lua");
static SNAPSHOT: LazyLock<Script> = script!("snapshot.lua");
static CLAIM: LazyLock<Script> = script!("claim.lua");
static ARRIVE: LazyLock<Script> = script!("arrive.lua");
static DEPART: LazyLock<Script> = script!("depart.lua");
static RENEW: LazyLock<Script> = script!("renew.lua");
static RANKS: LazyLock<Script> = script!("ranks.lua");
static POST: LazyLock<Script> = script!("post.lua");
static WHISPER: LazyLock<Script> = script!("whisper.lua");
static LEAVE: LazyLock<Script> = script!("leave.lua");

/// The cluster's keys, in the order the scripts take them.
const KEYS: [&str; 8] = [
    "anteroom:seats",
    "anteroom:queue",
    "anteroom:owners",
    "anteroom:nodes",
    "anteroom:counters",
    "anteroom:log",
    "anteroom:config",
    "anteroom:epoch",
];

/// The ordered log every node reads.
pub const LOG: &str = "anteroom:log";

/// A node's inbox of direct messages.
pub fn inbox(node: &str) -> String {
    format!("anteroom:inbox:{node}")
}

/// Entries the log keeps, about: enough for a node that falls seconds
/// behind to catch up, and for history when the store is `memory`.
pub const LOG_LEN: usize = 100_000;

/// Calls the scripts for one node.
#[derive(Clone)]
pub struct Scripts {
    conn: ConnectionManager,
    node: String,
    lease_ms: u64,
    max_active: usize,
    max_waiting: usize,
}

/// A script's reply: a flat array of strings.
type Reply = Vec<String>;

impl Scripts {
    pub fn new(conn: ConnectionManager, settings: &Settings) -> Self {
        Self {
            conn,
            node: settings.node.to_string(),
            lease_ms: settings.lease.as_millis() as u64,
            max_active: settings.max_active,
            max_waiting: settings.max_waiting,
        }
    }

    async fn call(&self, script: &Script, args: &[&str]) -> redis::RedisResult<Reply> {
        let mut invocation = script.prepare_invoke();
        for key in KEYS {
            invocation.key(key);
        }
        invocation
            .arg(&self.node)
            .arg(self.lease_ms)
            .arg(self.max_active)
            .arg(LOG_LEN);
        for arg in args {
            invocation.arg(*arg);
        }
        invocation.invoke_async(&mut self.conn.clone()).await
    }

    /// Joins the cluster with `store` and a fresh `epoch` candidate, which
    /// replaces the cluster's if `new_epoch` and the cluster's is still
    /// `known_epoch`; message ids go on after `last_id`.
    pub async fn join(
        &self,
        store: &str,
        epoch: &str,
        new_epoch: bool,
        last_id: u64,
        known_epoch: &str,
    ) -> redis::RedisResult<Reply> {
        let waiting = self.max_waiting.to_string();
        let new_epoch = if new_epoch { "1" } else { "0" };
        let last_id = last_id.to_string();
        self.call(
            &JOIN,
            &[&waiting, store, epoch, new_epoch, &last_id, known_epoch],
        )
        .await
    }

    /// Releases everything this node holds, as it stops.
    pub async fn leave(&self) -> redis::RedisResult<Reply> {
        self.call(&LEAVE, &[]).await
    }

    pub async fn snapshot(&self) -> redis::RedisResult<Reply> {
        self.call(&SNAPSHOT, &[]).await
    }

    pub async fn claim(&self, key: &str, owner: &str) -> redis::RedisResult<Reply> {
        self.call(&CLAIM, &[key, owner]).await
    }

    pub async fn arrive(&self, key: &str, owner: &str) -> redis::RedisResult<Reply> {
        let waiting = self.max_waiting.to_string();
        self.call(&ARRIVE, &[key, owner, &waiting]).await
    }

    pub async fn depart(&self, key: &str, owner: &str, reason: &str) -> redis::RedisResult<Reply> {
        self.call(&DEPART, &[key, owner, reason]).await
    }

    pub async fn renew(&self) -> redis::RedisResult<Reply> {
        self.call(&RENEW, &[]).await
    }

    pub async fn ranks(&self, keys: &[&str]) -> redis::RedisResult<Reply> {
        self.call(&RANKS, keys).await
    }

    pub async fn post(
        &self,
        key: &str,
        owner: &str,
        text: &str,
        ts: u64,
    ) -> redis::RedisResult<Reply> {
        self.call(&POST, &[key, owner, text, &ts.to_string()]).await
    }

    pub async fn whisper(
        &self,
        to_key: &str,
        from: &str,
        text: &str,
        ts: u64,
    ) -> redis::RedisResult<Reply> {
        self.call(&WHISPER, &[to_key, from, text, &ts.to_string()])
            .await
    }
}
