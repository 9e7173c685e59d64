//! The parsers of the key declarations: one per kind of value, each saying
//! what it expected when a value does not fit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

pub(super) fn text_of(raw: Raw<'_>) -> Option<&str> {
    match raw {
        Raw::Text(s) => Some(s.trim()),
        Raw::Toml(v) => v.as_str(),
    }
}

pub(super) fn addr(raw: Raw<'_>) -> Result<SocketAddr, String> {
    text_of(raw)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "expected an address like 127.0.0.1:7878".to_string())
}

pub(super) fn count(min: usize, max: usize) -> impl Fn(Raw<'_>) -> Result<usize, String> {
    move |raw| {
        let n = match raw {
            Raw::Text(s) => s.trim().parse::<usize>().ok(),
            Raw::Toml(v) => v.as_integer().and_then(|i| usize::try_from(i).ok()),
        };
        n.filter(|n| (min..=max).contains(n)).ok_or_else(|| {
            if max == usize::MAX {
                format!("expected an integer >= {min}")
            } else {
                format!("expected an integer from {min} to {max}")
            }
        })
    }
}

pub(super) fn duration(raw: Raw<'_>) -> Result<Duration, String> {
    text_of(raw)
        .and_then(|s| humantime::parse_duration(s).ok())
        .filter(|d| (MIN_DURATION..=MAX_DURATION).contains(d))
        .ok_or_else(|| {
            format!(
                "expected a duration like \"10s\" or \"250ms\", from {} to {}",
                humantime::format_duration(MIN_DURATION),
                humantime::format_duration(MAX_DURATION)
            )
        })
}

/// A duration where `"0s"` turns the feature off.
pub(super) fn duration_or_off(raw: Raw<'_>) -> Result<Duration, String> {
    text_of(raw)
        .and_then(|s| humantime::parse_duration(s).ok())
        .filter(|d| d.is_zero() || (MIN_DURATION..=MAX_DURATION).contains(d))
        .ok_or_else(|| {
            format!(
                "expected a duration like \"30s\", from {} to {}, or \"0s\" for off",
                humantime::format_duration(MIN_DURATION),
                humantime::format_duration(MAX_DURATION)
            )
        })
}

/// Like [`duration`], for ages of days and months.
pub(super) fn age(raw: Raw<'_>) -> Result<Duration, String> {
    text_of(raw)
        .and_then(|s| humantime::parse_duration(s).ok())
        .filter(|d| (Duration::from_secs(1)..=MAX_AGE).contains(d))
        .ok_or_else(|| "expected an age like \"30d\" or \"12h\", from 1s to 100 years".to_string())
}

pub(super) fn path(raw: Raw<'_>) -> Result<PathBuf, String> {
    match text_of(raw) {
        Some("") | None => Err("expected a directory path as a non-empty string".to_string()),
        Some(path) => Ok(PathBuf::from(path)),
    }
}

pub(super) fn store_kind(raw: Raw<'_>) -> Result<Option<StoreKind>, String> {
    match text_of(raw) {
        Some("") => Ok(None),
        Some("sqlite") => Ok(Some(StoreKind::Sqlite)),
        Some("memory") => Ok(Some(StoreKind::Memory)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Some(StoreKind::Postgres(url.to_string())))
        }
        _ => Err(
            "expected \"sqlite\", \"memory\", a postgres:// URL, or \"\" for the default"
                .to_string(),
        ),
    }
}

pub(super) fn redis_url(raw: Raw<'_>) -> Result<Option<String>, String> {
    match text_of(raw) {
        Some("") => Ok(None),
        Some(url) if url.starts_with("redis://") && redis::parse_redis_url(url).is_some() => {
            Ok(Some(url.to_string()))
        }
        _ => Err(
            "expected a URL like \"redis://127.0.0.1:6379\", or \"\" for a single node".to_string(),
        ),
    }
}

/// A node id goes into the cluster's keys and records, which use `|` and
/// `:` as separators.
pub(super) fn node_name(raw: Raw<'_>) -> Result<String, String> {
    match text_of(raw) {
        Some(name)
            if name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
        {
            Ok(name.to_string())
        }
        _ => Err("expected up to 64 letters, digits, `.`, `_` or `-`, or \"\" for the host name and process id".to_string()),
    }
}

pub(super) fn store_sync(raw: Raw<'_>) -> Result<StoreSync, String> {
    match text_of(raw) {
        Some("normal") => Ok(StoreSync::Normal),
        Some("full") => Ok(StoreSync::Full),
        _ => Err("expected \"normal\" or \"full\"".to_string()),
    }
}

pub(super) fn policy(raw: Raw<'_>) -> Result<SlowConsumerPolicy, String> {
    match text_of(raw) {
        Some("disconnect") => Ok(SlowConsumerPolicy::Disconnect),
        Some("skip") => Ok(SlowConsumerPolicy::Skip),
        _ => Err("expected \"disconnect\" or \"skip\"".to_string()),
    }
}

pub(super) fn rate(raw: Raw<'_>) -> Result<f64, String> {
    let r = match raw {
        Raw::Text(s) => s.trim().parse().ok(),
        Raw::Toml(toml::Value::Float(f)) => Some(*f),
        Raw::Toml(toml::Value::Integer(i)) => Some(*i as f64),
        Raw::Toml(_) => None,
    };
    r.filter(|r: &f64| RATE_LIMIT_RANGE.contains(r))
        .ok_or_else(|| {
            format!(
                "expected a number of messages per second from {} to {}",
                RATE_LIMIT_RANGE.start(),
                RATE_LIMIT_RANGE.end()
            )
        })
}

/// A rate where 0 turns the limit off; otherwise at least one event per
/// 1000 seconds, so that an event's cost stays a sane duration.
pub(super) fn rate_or_off(raw: Raw<'_>) -> Result<f64, String> {
    let r = match raw {
        Raw::Text(s) => s.trim().parse().ok(),
        Raw::Toml(toml::Value::Float(f)) => Some(*f),
        Raw::Toml(toml::Value::Integer(i)) => Some(*i as f64),
        Raw::Toml(_) => None,
    };
    r.filter(|r: &f64| r.is_finite() && (*r == 0.0 || *r >= 0.001))
        .ok_or_else(|| "expected a number per second: 0 (no limit) or at least 0.001".to_string())
}

pub(super) fn burst(raw: Raw<'_>) -> Result<u32, String> {
    count(1, MAX_RATE_BURST as usize)(raw).map(|n| n as u32)
}

/// An address, or `""` for a listener that is off.
pub(super) fn optional_addr(raw: Raw<'_>) -> Result<Option<SocketAddr>, String> {
    match text_of(raw) {
        Some("") => Ok(None),
        _ => addr(raw)
            .map(Some)
            .map_err(|e| format!("{e}, or \"\" for off")),
    }
}

/// A file path, or `""` for none.
pub(super) fn optional_path(raw: Raw<'_>) -> Result<Option<PathBuf>, String> {
    match text_of(raw) {
        Some("") => Ok(None),
        Some(path) => Ok(Some(PathBuf::from(path))),
        None => Err("expected a file path as a string".to_string()),
    }
}

/// `true` or `false` (flags and variables also take `1`, `0`, `yes`, `no`).
pub(super) fn boolean(raw: Raw<'_>) -> Result<bool, String> {
    let parsed = match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Some(*b),
        Raw::Toml(_) => None,
        Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
    };
    parsed.ok_or_else(|| "expected true or false".to_string())
}

/// Web origins: a TOML array of strings, or comma-separated text. Each is
/// `scheme://host[:port]`, compared exactly with a browser's `Origin`.
pub(super) fn origins(raw: Raw<'_>) -> Result<Vec<String>, String> {
    let items: Vec<String> = match raw {
        Raw::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
        Raw::Toml(toml::Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| "expected an array of strings".to_string())?,
        Raw::Toml(_) => return Err("expected an array of origins".to_string()),
    };
    for origin in &items {
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
        });
        if !valid {
            return Err(format!(
                "{origin:?} is not an origin; write it like \"https://chat.example\" (scheme and host, no path)"
            ));
        }
    }
    Ok(items)
}
