//! A room served by many nodes, with Redis as its one linearization point.
//!
//! Nodes that share `cluster_redis` keep the room's state in Redis and
//! change it only through Lua scripts ([`scripts`]), each atomic: seats and
//! the FIFO queue as sorted sets, names in a hash, every node's hold on
//! them as one lease per node (a sorted set of expiries, renewed twice a
//! second; each script first releases the nodes whose lease ran out).
//! Whatever members must see in one order (joins, leaves, messages) is
//! appended by those scripts to one Redis stream, the log, which every node
//! reads in order and replays onto its own bus ([`node`]): room delivery,
//! the roster and the chat log keep their single-node logic, and members
//! of other nodes reach them as remote members. Direct messages go to the
//! recipient's node through its inbox stream.

pub mod entry;
pub mod node;
pub mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use redis::AsyncConnectionConfig;

use crate::config::Config;
use crate::conn::handle::{ConnId, Peer};
use entry::{Owner, name_key};
use scripts::Scripts;

/// How long a node waits for Redis to answer before counting it lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest wait between two attempts to reach Redis again.
const RETRY_DELAY_MAX: Duration = Duration::from_millis(500);

/// What a node needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Redis URL the nodes share.
    pub url: String,
    pub node: Arc<str>,
    pub lease: Duration,
    pub max_active: usize,
    pub max_waiting: usize,
    /// The store as the nodes must agree on it (no password).
    pub store: String,
    /// Whether every node keeps the whole log itself (`memory`), rather
    /// than one shared store written once per message.
    pub store_per_node: bool,
    /// The last message id in this node's store: the cluster's ids go on
    /// after it, so a shared store never sees one twice, even after Redis
    /// lost its counters.
    pub last_id: u64,
}

impl Settings {
    /// `None` on a single node.
    pub fn from_config(config: &Config) -> Option<Self> {
        let url = config.cluster_redis.clone()?;
        let node: Arc<str> = if config.node_id.is_empty() {
            default_node_id().into()
        } else {
            config.node_id.as_str().into()
        };
        let store = config.store_kind();
        Some(Self {
            url,
            node,
            lease: config.cluster_lease,
            max_active: config.max_active,
            max_waiting: config.max_waiting,
            store_per_node: store == crate::config::StoreKind::Memory,
            store: crate::server::store_shown(&store),
            last_id: 0,
        })
    }
}

/// The host name and the process id: unique among live nodes without
/// configuration.
fn default_node_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Why a node could not join or act in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach the cluster's Redis at cluster_redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A key that must agree across the nodes does not.
    #[error(
        "{key} = {ours} differs from the cluster's {key} = {theirs}: every node of a cluster must have the same {key}"
    )]
    Mismatch {
        key: String,
        ours: String,
        theirs: String,
    },
    #[error("unexpected reply from the cluster's Redis: {0:?}")]
    Reply(Vec<String>),
}

/// The answer to a cluster-wide name claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    Taken,
    /// Redis cannot be reached, or this node lost its lease: the node is
    /// not admitting.
    Unavailable,
}

/// A node's membership of the cluster, shared by its sessions and its
/// [`node`] component.
pub struct Cluster {
    pub settings: Settings,
    scripts: Scripts,
    client: redis::Client,
    /// Members on other nodes by name key, for whispers.
    remote: DashMap<String, Owner>,
    /// Whether the node is admitting (Redis reachable, lease held).
    serving: AtomicBool,
    /// The epoch the node joined under.
    epoch: std::sync::Mutex<String>,
    /// The highest message id this node has delivered.
    last_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects and joins: the nodes' configurations must agree, or the
    /// node must not start.
    pub async fn join(settings: Settings) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(settings.url.as_str())?;
        // Reconnects by itself once Redis is back.
        let conn = client
            .get_connection_manager_with_config(
                redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REPLY_TIMEOUT))
                    .set_response_timeout(Some(REPLY_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(RETRY_DELAY_MAX),
            )
            .await?;
        let cluster = Arc::new(Self {
            scripts: Scripts::new(conn, &settings),
            settings,
            client,
            remote: DashMap::new(),
            serving: AtomicBool::new(false),
            epoch: std::sync::Mutex::new(String::new()),
            last_id: std::sync::atomic::AtomicU64::new(0),
        });
        cluster.rejoin(false).await?;
        Ok(cluster)
    }

    /// Joins (again): releases what this node id held before, checks the
    /// configuration, and records the epoch; a `new_epoch` replaces the
    /// cluster's, once Redis is found to have lost writes.
    async fn rejoin(&self, new_epoch: bool) -> Result<String, ClusterError> {
        let candidate = crate::chat_log::random_hex(8);
        let reply = self
            .scripts
            .join(
                &self.settings.store,
                &candidate,
                new_epoch,
                self.settings
                    .last_id
                    .max(self.last_id.load(Ordering::Relaxed)),
                &self.epoch(),
            )
            .await?;
        match reply.as_slice() {
            [ok, epoch] if ok == "ok" => {
                *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = epoch.clone();
                // Names may be claimed from now on; admission waits for the
                // node component to take the room.
                self.serving.store(true, Ordering::SeqCst);
                Ok(epoch.clone())
            }
            [mismatch, key, theirs] if mismatch == "mismatch" => {
                let ours = match key.as_str() {
                    "max_active" => self.settings.max_active.to_string(),
                    "max_waiting" => self.settings.max_waiting.to_string(),
                    _ => self.settings.store.clone(),
                };
                Err(ClusterError::Mismatch {
                    key: key.clone(),
                    ours,
                    theirs: theirs.clone(),
                })
            }
            _ => Err(ClusterError::Reply(reply)),
        }
    }

    /// The cluster's epoch: it changes only when Redis lost the room's
    /// state (a restart without persistence, a failover).
    pub fn epoch(&self) -> String {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes a message id delivered here, which a later join keeps the
    /// cluster's ids above.
    fn delivered(&self, id: u64) {
        self.last_id.fetch_max(id, Ordering::Relaxed);
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    fn owner_of(&self, peer: &Peer, name: &str, whisper: bool) -> String {
        Owner::encode(&self.settings.node, peer.id, whisper, name)
    }

    /// Claims `name` across the cluster for `peer`, which will be granted
    /// `whisper` or not.
    pub async fn claim(&self, peer: &Peer, name: &str, whisper: bool) -> Claim {
        if !self.is_serving() {
            return Claim::Unavailable;
        }
        let owner = self.owner_of(peer, name, whisper);
        match self.scripts.claim(&name_key(name), &owner).await {
            Ok(reply) if reply.first().is_some_and(|r| r == "ok") => Claim::Claimed,
            Ok(reply) if reply.first().is_some_and(|r| r == "taken") => Claim::Taken,
            _ => Claim::Unavailable,
        }
    }

    /// Appends a member's message to the log; `None` if it could not be.
    pub async fn post(&self, peer: &Peer, name: &str, text: &str, ts: u64) -> Option<u64> {
        let whisper = peer.features().has(anteroom_protocol::Feature::Whisper);
        let owner = self.owner_of(peer, name, whisper);
        match self.scripts.post(&name_key(name), &owner, text, ts).await {
            Ok(reply) if reply.first().is_some_and(|r| r == "ok") => reply.get(1)?.parse().ok(),
            _ => None,
        }
    }

    /// A member on another node, by name as names are matched.
    pub fn remote_member(&self, name: &str) -> Option<Owner> {
        self.remote
            .get(&name_key(name.trim()))
            .map(|o| o.value().clone())
    }

    /// Sends a direct message to a member of another node. Whether it was
    /// handed to that node.
    pub async fn whisper(&self, to: &Owner, from: &str, text: &str, ts: u64) -> bool {
        matches!(
            self.scripts.whisper(&name_key(&to.name), from, text, ts).await,
            Ok(reply) if reply.first().is_some_and(|r| r == "ok")
        )
    }

    /// A connection to Redis of its own, for the blocking reads of the log.
    async fn reader_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await
    }
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REPLY_TIMEOUT))
        .set_response_timeout(Some(REPLY_TIMEOUT))
}

/// A remote member's stand-in id on this node: far above any connection id
/// the node gives out.
pub fn remote_id(n: u64) -> ConnId {
    (1 << 62) | n
}
