//! Configuration: embedded defaults, then the TOML file, then `ANTEROOM_*`
//! environment variables, then command-line flags; each later source wins.
//!
//! Every value from every source goes through the same per-key parser, so an
//! error always names the key (`max_active`), the offending value and where it
//! came from, and start-up never proceeds half-configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every configuration key, in the order the documentation lists them.
pub const KEYS: &[&str] = &[
    "listen",
    "metrics_listen",
    "max_active",
    "max_waiting",
    "max_frame_bytes",
    "max_message_bytes",
    "handshake_timeout",
    "heartbeat_interval",
    "idle_timeout",
    "write_timeout",
    "outbox_limit",
    "slow_consumer",
    "rate_limit",
    "rate_burst",
    "shutdown_grace",
    "max_connections",
    "max_connections_per_ip",
    "max_outbox_bytes",
];

/// What to do with a member whose outbox overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Cut the member off with `bye{reason:"slow_consumer"}` (the default).
    Disconnect,
    /// Keep the member, drop the events it cannot take and tell it with `gap`.
    Skip,
}

/// The broker's complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub max_active: usize,
    pub max_waiting: usize,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub handshake_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub outbox_limit: usize,
    pub slow_consumer: SlowConsumerPolicy,
    pub rate_limit: f64,
    pub rate_burst: u32,
    pub shutdown_grace: Duration,
    /// Open connections in any state; 0 means `max_active + max_waiting + 1000`.
    pub max_connections: usize,
    /// Open connections from one IP address; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// Bytes waiting in one connection's outbox before it is a slow consumer.
    pub max_outbox_bytes: usize,
}

impl Config {
    /// The total connection cap, with 0 resolved to its automatic value.
    pub fn connection_cap(&self) -> usize {
        match self.max_connections {
            0 => self.max_active + self.max_waiting + 1000,
            n => n,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9878)),
            max_active: 1000,
            max_waiting: 10_000,
            max_frame_bytes: 65_536,
            max_message_bytes: 4096,
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            write_timeout: Duration::from_secs(10),
            outbox_limit: 1024,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            rate_limit: 20.0,
            rate_burst: 40,
            shutdown_grace: Duration::from_secs(5),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_outbox_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env(String),
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
    #[error("invalid value for `{key}`: {value} ({reason}; from {origin})")]
    Invalid {
        key: String,
        value: String,
        reason: String,
        origin: Source,
    },
    #[error("unknown configuration key `{key}` in {origin}")]
    UnknownKey { key: String, origin: Source },
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {error}")]
    Syntax { path: PathBuf, error: String },
    #[error("invalid configuration: `{key}` {reason}")]
    Inconsistent { key: &'static str, reason: String },
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
    /// Sets one key from one source, parsing and range-checking the value.
    pub fn set(&mut self, key: &str, raw: Raw<'_>, source: &Source) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: key.to_string(),
            value: raw.shown(),
            reason: reason.to_string(),
            origin: source.clone(),
        };
        match key {
            "listen" => {
                self.listen = parse_addr(raw)
                    .ok_or_else(|| invalid("expected an address like 127.0.0.1:7878"))?
            }
            "metrics_listen" => {
                self.metrics_listen = parse_addr(raw)
                    .ok_or_else(|| invalid("expected an address like 127.0.0.1:9878"))?
            }
            "max_active" => {
                self.max_active =
                    parse_count(raw, 1).ok_or_else(|| invalid("expected an integer >= 1"))?
            }
            "max_waiting" => {
                self.max_waiting =
                    parse_count(raw, 0).ok_or_else(|| invalid("expected an integer >= 0"))?
            }
            "max_frame_bytes" => {
                self.max_frame_bytes = parse_count(raw, 64)
                    .filter(|n| *n <= anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES)
                    .ok_or_else(|| invalid("expected an integer from 64 to 16777216"))?
            }
            "max_message_bytes" => {
                self.max_message_bytes =
                    parse_count(raw, 1).ok_or_else(|| invalid("expected an integer >= 1"))?
            }
            "handshake_timeout" => {
                self.handshake_timeout = parse_duration(raw).ok_or_else(|| invalid(DURATION))?
            }
            "heartbeat_interval" => {
                self.heartbeat_interval = parse_duration(raw).ok_or_else(|| invalid(DURATION))?
            }
            "idle_timeout" => {
                self.idle_timeout = parse_duration(raw).ok_or_else(|| invalid(DURATION))?
            }
            "write_timeout" => {
                self.write_timeout = parse_duration(raw).ok_or_else(|| invalid(DURATION))?
            }
            "shutdown_grace" => {
                self.shutdown_grace = parse_duration(raw).ok_or_else(|| invalid(DURATION))?
            }
            "max_connections" => {
                self.max_connections = parse_count(raw, 0)
                    .ok_or_else(|| invalid("expected an integer >= 0 (0: automatic)"))?
            }
            "max_connections_per_ip" => {
                self.max_connections_per_ip = parse_count(raw, 0)
                    .ok_or_else(|| invalid("expected an integer >= 0 (0: no limit)"))?
            }
            "max_outbox_bytes" => {
                self.max_outbox_bytes =
                    parse_count(raw, 1024).ok_or_else(|| invalid("expected an integer >= 1024"))?
            }
            "outbox_limit" => {
                self.outbox_limit =
                    parse_count(raw, 1).ok_or_else(|| invalid("expected an integer >= 1"))?
            }
            "slow_consumer" => {
                self.slow_consumer = match text_of(raw) {
                    Some("disconnect") => SlowConsumerPolicy::Disconnect,
                    Some("skip") => SlowConsumerPolicy::Skip,
                    _ => return Err(invalid("expected \"disconnect\" or \"skip\"")),
                }
            }
            "rate_limit" => {
                self.rate_limit = parse_float(raw)
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| invalid("expected a number of messages per second > 0"))?
            }
            "rate_burst" => {
                self.rate_burst = parse_count(raw, 1)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| invalid("expected an integer >= 1"))?
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_string(),
                    origin: source.clone(),
                });
            }
        }
        Ok(())
    }

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
            let var = env_var(key);
            if let Some(value) = lookup(&var) {
                self.set(key, Raw::Text(&value), &Source::Env(var))?;
            }
        }
        Ok(())
    }

    /// Checks relations between keys that no single value can violate.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if self.max_message_bytes + 64 > self.max_frame_bytes {
            return Err(ConfigError::Inconsistent {
                key: "max_message_bytes",
                reason: format!(
                    "({}) must leave room for the frame envelope within max_frame_bytes ({}); keep it at least 64 bytes smaller",
                    self.max_message_bytes, self.max_frame_bytes
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

const DURATION: &str = "expected a duration like \"10s\" or \"250ms\", greater than zero";

fn text_of(raw: Raw<'_>) -> Option<&str> {
    match raw {
        Raw::Text(s) => Some(s.trim()),
        Raw::Toml(v) => v.as_str(),
    }
}

fn parse_addr(raw: Raw<'_>) -> Option<SocketAddr> {
    text_of(raw)?.parse().ok()
}

fn parse_count(raw: Raw<'_>, min: usize) -> Option<usize> {
    let n = match raw {
        Raw::Text(s) => s.trim().parse::<usize>().ok()?,
        Raw::Toml(v) => usize::try_from(v.as_integer()?).ok()?,
    };
    (n >= min).then_some(n)
}

fn parse_float(raw: Raw<'_>) -> Option<f64> {
    match raw {
        Raw::Text(s) => s.trim().parse().ok(),
        Raw::Toml(toml::Value::Float(f)) => Some(*f),
        Raw::Toml(toml::Value::Integer(i)) => Some(*i as f64),
        Raw::Toml(_) => None,
    }
}

fn parse_duration(raw: Raw<'_>) -> Option<Duration> {
    let d = humantime::parse_duration(text_of(raw)?).ok()?;
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_toml(text, Path::new("test.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9878");
        assert_eq!(
            (c.max_active, c.max_waiting, c.outbox_limit),
            (1000, 10_000, 1024)
        );
        assert_eq!((c.max_frame_bytes, c.max_message_bytes), (65_536, 4096));
        assert_eq!(c.rate_limit, 20.0);
        assert_eq!(c.rate_burst, 40);
        c.validate().unwrap();
    }

    #[test]
    fn file_values_are_typed() {
        let c = file("max_active = 3\nhandshake_timeout = \"250ms\"\nrate_limit = 2.5\nslow_consumer = \"skip\"").unwrap();
        assert_eq!(c.max_active, 3);
        assert_eq!(c.handshake_timeout, Duration::from_millis(250));
        assert_eq!(c.rate_limit, 2.5);
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::Skip);
        assert_eq!(file("rate_limit = 5").unwrap().rate_limit, 5.0);
    }

    #[test]
    fn errors_name_the_key() {
        let e = file("max_active = \"lots\"").unwrap_err().to_string();
        assert!(e.contains("`max_active`") && e.contains("lots"), "{e}");
        let e = file("colour = 1").unwrap_err().to_string();
        assert!(e.contains("`colour`"), "{e}");
        let e = file("idle_timeout = \"10s\"").unwrap_err().to_string();
        assert!(e.contains("idle_timeout"), "{e}");
        let e = file("write_timeout = \"0s\"").unwrap_err().to_string();
        assert!(e.contains("write_timeout"), "{e}");
    }

    #[test]
    fn env_uses_upper_cased_keys() {
        let mut c = Config::default();
        c.apply_env(|v| (v == "ANTEROOM_MAX_WAITING").then(|| "7".to_string()))
            .unwrap();
        assert_eq!(c.max_waiting, 7);
        let e = c
            .apply_env(|v| (v == "ANTEROOM_RATE_BURST").then(|| "0".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`rate_burst`") && e.contains("ANTEROOM_RATE_BURST"),
            "{e}"
        );
    }

    #[test]
    fn shipped_config_file_lists_every_key_with_its_default() {
        let text = include_str!("../../../config/anteroom.toml");
        let table: toml::Table = text.parse().unwrap();
        for key in KEYS {
            assert!(table.contains_key(*key), "config/anteroom.toml lacks {key}");
        }
        assert_eq!(file(text).unwrap(), Config::default());
    }
}
