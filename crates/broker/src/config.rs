//! Configuration: embedded defaults, then the TOML file, then `ANTEROOM_*`
//! environment variables, then command-line flags; each later source wins.
//!
//! Every key is declared once, below: its name, type, default (as the TOML
//! literal the shipped `config/anteroom.toml` writes), parser and meaning.
//! The struct, the list of keys, the per-key parser dispatch, the
//! command-line flags, the environment variables and the documentation's key
//! table all come from that one declaration. Every value from every source
//! goes through the same parser, so an error always names the key
//! (`max_active`), the offending value and where it came from, and start-up
//! never proceeds half-configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;

mod parse;
use parse::*;

/// One configuration key, as documentation, flags and variables present it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written in the file, e.g. `max_active`.
    pub name: &'static str,
    /// The default as a TOML literal, e.g. `1000` or `"10s"`.
    pub default: &'static str,
    /// What it means, with its unit.
    pub doc: &'static str,
}

impl Key {
    /// The command-line flag without dashes: `max-active`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The environment variable: `ANTEROOM_MAX_ACTIVE`.
    pub fn env_var(&self) -> String {
        env_var(self.name)
    }
}

macro_rules! declare_config {
    ($( #[doc = $doc:literal] $name:ident : $ty:ty = $default:literal, $parse:expr; )*) => {
        /// The broker's complete configuration; [`Config::validate`] checks
        /// the relations between keys.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( #[doc = $doc] pub $name: $ty, )*
        }

        /// Every configuration key, in the order the documentation lists them.
        pub const KEYS: &[Key] = &[
            $( Key { name: stringify!($name), default: $default, doc: $doc.trim_ascii() }, )*
        ];

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $( $name: default_of(stringify!($name), $default, $parse), )*
                }
            }
        }

        impl Config {
            /// Sets one key from one source, parsing and range-checking the value.
            pub fn set(&mut self, key: &str, raw: Raw<'_>, source: &Source) -> Result<(), ConfigError> {
                let invalid = |reason: String| ConfigError::Invalid {
                    key: key.to_string(),
                    value: raw.shown(),
                    reason,
                    origin: source.clone(),
                };
                match key {
                    $( stringify!($name) => self.$name = ($parse)(raw).map_err(invalid)?, )*
                    _ => {
                        return Err(ConfigError::UnknownKey {
                            key: key.to_string(),
                            origin: source.clone(),
                        })
                    }
                }
                Ok(())
            }
        }
    };
}

declare_config! {
    /// Chat listener (TCP address).
    listen: SocketAddr = "\"127.0.0.1:7878\"", addr;
    /// HTTP listener for /metrics, /healthz and /readyz.
    metrics_listen: SocketAddr = "\"127.0.0.1:9878\"", addr;
    /// TLS listener (TCP address, TLS 1.2 and 1.3); `""` turns it off. Needs `tls_cert` and `tls_key`.
    tls_listen: Option<SocketAddr> = "\"\"", optional_addr;
    /// QUIC listener (UDP address, ALPN `anteroom/1`); `""` turns it off. Needs `tls_cert` and `tls_key`.
    quic_listen: Option<SocketAddr> = "\"\"", optional_addr;
    /// Web listener (TCP address): the browser client at `/` and WebSocket at `/ws`; `""` turns it off.
    web_listen: Option<SocketAddr> = "\"127.0.0.1:7880\"", optional_addr;
    /// Serve the web listener over HTTPS and WSS, with `tls_cert` and `tls_key`.
    web_tls: bool = "false", boolean;
    /// Origins allowed to open `/ws` besides the listener's own, like `"https://chat.example"` (as a flag or variable: comma-separated).
    web_allowed_origins: Vec<String> = "[]", origins;
    /// PEM file with the certificate chain for TLS, QUIC and `web_tls`, leaf first; reloaded on SIGHUP for new connections.
    tls_cert: Option<PathBuf> = "\"\"", optional_path;
    /// PEM file with the private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1); reloaded with it.
    tls_key: Option<PathBuf> = "\"\"", optional_path;
    /// Room capacity: members in the room at once.
    max_active: usize = "1000", count(1, MAX_MEMBERS);
    /// Clients allowed to wait in the queue; beyond it a client gets `bye{server_full}`.
    max_waiting: usize = "10000", count(0, MAX_MEMBERS);
    /// Largest frame accepted from a client, in bytes of MessagePack.
    max_frame_bytes: usize = "65536", count(64, MAX_SERVER_FRAME_BYTES);
    /// Largest `say.text` accepted, in UTF-8 bytes.
    max_message_bytes: usize = "4096", count(1, MAX_SERVER_FRAME_BYTES);
    /// Time a new connection has to send a valid `hello`.
    handshake_timeout: Duration = "\"10s\"", duration;
    /// Silence after which the server sends a `ping`.
    heartbeat_interval: Duration = "\"15s\"", duration;
    /// Silence after which the connection is closed.
    idle_timeout: Duration = "\"45s\"", duration;
    /// A socket that makes the writer wait must take 64 KiB (or the rest of the batch) within this, or its client is a slow consumer; under `skip`, the longer of this and `idle_timeout`.
    write_timeout: Duration = "\"10s\"", duration;
    /// Frames buffered per connection before it counts as a slow consumer.
    outbox_limit: usize = "1024", count(1, MAX_OUTBOX_FRAMES);
    /// What to do with a slow consumer: `"disconnect"` (`bye{slow_consumer}`) or `"skip"` (drop events, send `gap`).
    slow_consumer: SlowConsumerPolicy = "\"disconnect\"", policy;
    /// `say` messages per second per member (integer or float).
    rate_limit: f64 = "20", rate;
    /// Token-bucket burst for `rate_limit`, in messages.
    rate_burst: u32 = "40", burst;
    /// Longest a SIGTERM or SIGINT shutdown may take.
    shutdown_grace: Duration = "\"5s\"", duration;
    /// Open connections in any state; 0: `max_active + max_waiting + 1000`.
    max_connections: usize = "0", count(0, MAX_CONNECTIONS);
    /// Open connections from one IP address (an IPv6 /64 counts as one address); 0: no limit.
    max_connections_per_ip: usize = "256", count(0, MAX_CONNECTIONS);
    /// New connections per second from one IP address (an IPv6 /64 counts as one), on average; over it `bye{server_full}`; 0: no limit.
    connection_rate_per_ip: f64 = "10", rate_or_off;
    /// Token-bucket burst for `connection_rate_per_ip`, in connections.
    connection_burst_per_ip: u32 = "100", burst;
    /// Entries into the room per second, all clients together (direct and from the queue); a `welcome` over it waits its turn; 0: no limit.
    join_rate: f64 = "100", rate_or_off;
    /// Token-bucket burst for `join_rate`, in entries.
    join_burst: u32 = "100", burst;
    /// Frames per second one connection may send, of every type; over it the connection is closed with `bye{protocol_error}`; 0: no limit.
    request_rate: f64 = "100", rate_or_off;
    /// Token-bucket burst for `request_rate`, in frames.
    request_burst: u32 = "200", burst;
    /// `who` requests per second per member; over it `error{rate_limited}`; 0: no limit.
    who_rate: f64 = "1", rate_or_off;
    /// Token-bucket burst for `who_rate`, in requests.
    who_burst: u32 = "5", burst;
    /// Bytes buffered for one connection before it counts as a slow consumer.
    max_outbox_bytes: usize = "8388608", count(1024, MAX_OUTBOX_BYTES);
    /// Directory of the embedded chat log (`chat.sqlite3`) and of uploaded files; created if missing.
    data_dir: PathBuf = "\"anteroom-data\"", path;
    /// The chat log: `"sqlite"` (embedded, in `data_dir`), `"memory"` (nothing kept across restarts), or a `postgres://` URL; `""`: `sqlite` on a single node, `memory` in a cluster.
    store: Option<StoreKind> = "\"\"", store_kind;
    /// `"normal"`: committed in batches, an application crash loses nothing delivered more than `store_flush` ago; `"full"`: also survives power loss (fsync per batch).
    store_sync: StoreSync = "\"normal\"", store_sync;
    /// The longest a delivered message waits to be committed to the chat log.
    store_flush: Duration = "\"100ms\"", duration;
    /// Messages in the `history` sent after `welcome`.
    history_on_join: usize = "50", count(0, MAX_HISTORY_PAGE);
    /// Most messages in one `history` page.
    history_page_max: usize = "200", count(1, MAX_HISTORY_PAGE);
    /// Messages (and uploaded files) older than this are deleted from the log, like `"30d"` or `"12h"`.
    history_max_age: Duration = "\"30d\"", age;
    /// Most messages the log keeps; the oldest beyond it are deleted.
    history_max_messages: usize = "1000000", count(1, MAX_LOG_MESSAGES);
    /// Largest file accepted by `POST /upload`, in bytes.
    max_upload_bytes: usize = "8388608", count(1, MAX_UPLOAD_BYTES);
    /// Uploads per minute per connection; over it HTTP 429.
    upload_rate: u32 = "10", burst;
    /// How long a dropped `resume` client keeps its seat or place; `"0s"` turns it off.
    resume_grace: Duration = "\"30s\"", duration_or_off;
    /// The longest a `presence_batch` client waits for a `presence` frame.
    presence_interval: Duration = "\"1s\"", duration;
    /// A `redis://` URL: every node with the same URL serves one room; `""`: a single node.
    cluster_redis: Option<String> = "\"\"", redis_url;
    /// This node's name in the cluster (letters, digits, `.`, `_`, `-`); `""`: the host name and the process id.
    node_id: String = "\"\"", node_name;
    /// A node that stops renewing its lease this long loses its members' seats and queue places.
    cluster_lease: Duration = "\"15s\"", duration;
}

/// Largest `history_on_join` and `history_page_max`: a page must fit in a
/// frame a client accepts (16 MiB) even when every message is at its largest.
pub const MAX_HISTORY_PAGE: usize = 1000;

/// Shortest `cluster_lease` in a cluster.
pub const MIN_CLUSTER_LEASE: Duration = Duration::from_secs(2);

/// Largest `history_max_messages`.
pub const MAX_LOG_MESSAGES: usize = 1_000_000_000_000;

/// Largest `max_upload_bytes`: 4 GiB.
pub const MAX_UPLOAD_BYTES: usize = 1 << 32;

/// Longest `history_max_age`: a century.
pub const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Where the chat log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite in `data_dir`.
    Sqlite,
    /// Nothing kept across restarts.
    Memory,
    /// A PostgreSQL database at this URL.
    Postgres(String),
}

/// How hard a commit of the chat log works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSync {
    /// Survives the process crashing, not the machine losing power.
    Normal,
    /// Survives power loss too: every batch is flushed to the disk.
    Full,
}

/// Largest `max_active` and `max_waiting`: a room or a queue of ten million
/// is far beyond what one process serves, and the bound keeps every sum of
/// counts (the automatic connection cap) far from overflowing.
pub const MAX_MEMBERS: usize = 10_000_000;

/// Largest `max_connections` and `max_connections_per_ip`: far more than the
/// descriptors a process gets, and far below the largest semaphore tokio
/// can build (`Semaphore::MAX_PERMITS`), which would panic.
pub const MAX_CONNECTIONS: usize = 100_000_000;

/// Largest `outbox_limit`, in frames: replies add 64 to it, which must not
/// overflow.
pub const MAX_OUTBOX_FRAMES: usize = 100_000_000;

/// Largest `max_outbox_bytes`: 1 GiB waiting for one connection.
pub const MAX_OUTBOX_BYTES: usize = 1 << 30;

/// Shortest duration any key accepts: the timers' resolution. A shorter
/// one is a typo (`1ns`), not a setting.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// Longest duration any key accepts. Deadlines are `Instant::now()` plus a
/// duration, which a duration of centuries overflows (a panic).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Range of `rate_limit`, in messages per second. Below the minimum the
/// rate limiter's period overflows its arithmetic (a panic); the maximum
/// (one message per nanosecond) already means no limit.
pub const RATE_LIMIT_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1e9;

/// Largest `rate_burst`.
pub const MAX_RATE_BURST: u32 = 1_000_000_000;

/// Longest time the token bucket may take to refill a whole burst
/// (`rate_burst / rate_limit`): a year, far inside the rate limiter's
/// nanosecond arithmetic.
pub const MAX_BURST_REFILL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What to do with a member whose outbox overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Cut the member off with `bye{reason:"slow_consumer"}` (the default).
    Disconnect,
    /// Keep the member, drop the events it cannot take and tell it with `gap`.
    Skip,
}

impl Config {
    /// The total connection cap, with 0 resolved to its automatic value.
    pub fn connection_cap(&self) -> usize {
        match self.max_connections {
            // Saturating: a `Config` built in code skips the parsers' ranges.
            0 => self
                .max_active
                .saturating_add(self.max_waiting)
                .saturating_add(1000),
            n => n,
        }
    }
}

/// Parses a declared default; a default that does not parse is a bug in the
/// declaration, caught by the tests before it can ship.
fn default_of<T>(key: &str, literal: &str, parse: impl Fn(Raw<'_>) -> Result<T, String>) -> T {
    let table: toml::Table = format!("v = {literal}")
        .parse()
        .unwrap_or_else(|e| panic!("default of `{key}` is not TOML: {e}"));
    parse(Raw::Toml(&table["v"])).unwrap_or_else(|e| panic!("default of `{key}`: {e}"))
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A configuration that cannot be used. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid value for `{key}`: {value} ({reason}; from {origin})")]
    Invalid {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: String,
        /// Where the value came from.
        origin: Source,
    },
    /// A key that does not exist (a typo must not be silently ignored).
    #[error("unknown configuration key `{key}` in {origin}")]
    UnknownKey {
        /// The key as given.
        key: String,
        /// Where it came from.
        origin: Source,
    },
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML: {error}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        error: String,
    },
    /// Values that are each valid but do not agree with each other.
    #[error("invalid configuration: `{key}` {reason}")]
    Inconsistent {
        /// The key to change.
        key: &'static str,
        /// Why, naming the other key.
        reason: String,
    },
}

/// A raw value before it is parsed for its key.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    /// From the environment or a flag: always text.
    Text(&'a str),
    /// From the TOML file: already typed.
    Toml(&'a toml::Value),
}

impl Raw<'_> {
    fn shown(&self) -> String {
        match self {
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(v) => v.to_string(),
        }
    }
}

impl Config {
    /// Applies every key of a TOML document; unknown keys are an error.
    pub fn apply_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    error: e.to_string(),
                })?;
        let source = Source::File(path.to_path_buf());
        for (key, value) in &table {
            self.set(key, Raw::Toml(value), &source)?;
        }
        Ok(())
    }

    /// Applies every `ANTEROOM_<KEY>` variable found by `lookup`.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for key in KEYS {
            let var = key.env_var();
            if let Some(value) = lookup(&var) {
                self.set(key.name, Raw::Text(&value), &Source::Env(var))?;
            }
        }
        Ok(())
    }

    /// The chat log in use: `store`, or its default for the mode (`sqlite`
    /// on a single node; `memory` in a cluster, whose log must be shared).
    pub fn store_kind(&self) -> StoreKind {
        match (&self.store, &self.cluster_redis) {
            (Some(kind), _) => kind.clone(),
            (None, None) => StoreKind::Sqlite,
            (None, Some(_)) => StoreKind::Memory,
        }
    }

    /// Checks relations between keys that no single value can violate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, on) in [
            ("tls_listen", self.tls_listen.is_some()),
            ("quic_listen", self.quic_listen.is_some()),
            ("web_tls", self.web_tls && self.web_listen.is_some()),
        ] {
            if on && (self.tls_cert.is_none() || self.tls_key.is_none()) {
                return Err(ConfigError::Inconsistent {
                    key,
                    reason: "needs tls_cert and tls_key (PEM files; `anteroom cert` makes a self-signed pair for trying)".to_string(),
                });
            }
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Inconsistent {
                key: "idle_timeout",
                reason: format!(
                    "({}) must be longer than heartbeat_interval ({}) so that a silent client is pinged before it is dropped",
                    humantime::format_duration(self.idle_timeout),
                    humantime::format_duration(self.heartbeat_interval)
                ),
            });
        }
        let refill = f64::from(self.rate_burst) / self.rate_limit;
        if refill.is_nan() || refill > MAX_BURST_REFILL.as_secs_f64() {
            return Err(ConfigError::Inconsistent {
                key: "rate_burst",
                reason: format!(
                    "({}) at rate_limit ({}) per second takes {refill:.0} s to refill; keep rate_burst / rate_limit within {} s (a year)",
                    self.rate_burst,
                    self.rate_limit,
                    MAX_BURST_REFILL.as_secs()
                ),
            });
        }
        if self.max_message_bytes.saturating_add(64) > self.max_frame_bytes {
            return Err(ConfigError::Inconsistent {
                key: "max_message_bytes",
                reason: format!(
                    "({}) must leave room for the frame envelope within max_frame_bytes ({}); keep it at least 64 bytes smaller",
                    self.max_message_bytes, self.max_frame_bytes
                ),
            });
        }
        if self.cluster_redis.is_some() && self.store == Some(StoreKind::Sqlite) {
            return Err(ConfigError::Inconsistent {
                key: "store",
                reason: "cannot be \"sqlite\" in a cluster (cluster_redis is set): every node serves one log, so it must be shared; use a postgres:// URL, or \"memory\" to keep history in the cluster's log only".to_string(),
            });
        }
        if self.cluster_redis.is_some() && self.cluster_lease < MIN_CLUSTER_LEASE {
            return Err(ConfigError::Inconsistent {
                key: "cluster_lease",
                reason: format!(
                    "({}) must be at least {} in a cluster: a node renews its lease twice a second, and a shorter lease would expire on one slow reply",
                    humantime::format_duration(self.cluster_lease),
                    humantime::format_duration(MIN_CLUSTER_LEASE)
                ),
            });
        }
        if self.request_rate > 0.0
            && (self.request_rate < self.rate_limit || self.request_burst < self.rate_burst)
        {
            return Err(ConfigError::Inconsistent {
                key: "request_rate",
                reason: format!(
                    "({}, burst {}) must allow at least the `say` rate, rate_limit ({}, rate_burst {}): a client keeping to rate_limit would be cut off; raise request_rate and request_burst, or set request_rate to 0",
                    self.request_rate, self.request_burst, self.rate_limit, self.rate_burst
                ),
            });
        }
        Ok(())
    }
}

/// The environment variable for a key: `max_active` is `ANTEROOM_MAX_ACTIVE`.
pub fn env_var(key: &str) -> String {
    format!("ANTEROOM_{}", key.to_ascii_uppercase())
}

/// The shipped configuration file, generated from [`KEYS`]: every key with
/// its default and meaning. A test keeps `config/anteroom.toml` equal to it.
pub fn sample_file() -> String {
    let mut out = String::from(
        "# anteroom configuration. Every key is shown with its default.\n\
         # Precedence: command-line flag (--key-name), then ANTEROOM_<KEY> environment\n\
         # variable, then this file. Durations are written like \"10s\" or \"250ms\".\n\n",
    );
    let width = KEYS
        .iter()
        .map(|k| k.name.len() + k.default.len() + 3)
        .max()
        .unwrap_or(0);
    for key in KEYS {
        let assignment = format!("{} = {}", key.name, key.default);
        out.push_str(&format!("{assignment:<width$}  # {}\n", one_line(key.doc)));
    }
    out
}

/// The documentation's key table, generated from [`KEYS`]. A test keeps the
/// table in docs/operations.md equal to it.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in KEYS {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            key.name,
            key.default,
            one_line(key.doc)
        ));
    }
    out
}

fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
