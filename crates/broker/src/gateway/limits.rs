//! Connection caps an operator can trust, applied by the listener before a
//! session exists:
//!
//! * a total cap on open connections (handshaking, waiting and in the room
//!   together), which start-up fits under the process's descriptor limit so
//!   that the server says `server_full` instead of running out of descriptors;
//! * per client address, a cap on open connections and a rate of new ones
//!   (a token bucket), so that one host can neither hold every place nor
//!   churn through the room. An IPv6 /64 counts as one address: one host is
//!   usually given a whole /64 and can pick any address in it.
//!
//! A connection over a cap or over its address's rate is told
//! `bye{reason:"server_full"}` and closed at once, without a session.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::rate::Rate;
use crate::telemetry::metrics;
use anteroom_protocol::ByeReason;

/// How often addresses with no open connection and a full bucket are
/// forgotten, so the table holds only addresses seen lately.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Descriptors kept free for what is not a chat connection: requests to the
/// metrics listener (at most [`crate::telemetry::http::MAX_CONNECTIONS`] at
/// once), a connection being refused, and files such as logs.
pub const DESCRIPTOR_HEADROOM: usize = 32;

/// Descriptors assumed open at start-up where they cannot be counted.
const ASSUMED_OPEN: usize = 16;

/// Why a connection was refused; both are told `server_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total cap, or its address's cap on open connections.
    Full,
    /// Its address opens connections faster than `connection_rate_per_ip`.
    Rate,
}

impl Refusal {
    /// The `reason` label it is counted under in `anteroom_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Full => "server_full",
            Refusal::Rate => "connection_rate",
        }
    }
}

/// What is known of one address: its open connections and its bucket.
#[derive(Debug)]
struct Host {
    open: usize,
    /// When its connection-rate bucket is full again (see [`Rate`]).
    full_at: Instant,
}

/// The caps, shared by the listener.
#[derive(Debug)]
pub struct Limits {
    slots: Arc<Semaphore>,
    per_ip: usize,
    rate: Option<Rate>,
    hosts: Arc<DashMap<IpAddr, Host>>,
    next_sweep: Mutex<Instant>,
}

/// A connection's place under the caps; released on drop.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _host: Option<HostHeld>,
}

#[derive(Debug)]
struct HostHeld {
    hosts: Arc<DashMap<IpAddr, Host>>,
    key: IpAddr,
}

impl Drop for HostHeld {
    fn drop(&mut self) {
        let now = Instant::now();
        // Forget the address once it holds nothing and its bucket is full;
        // otherwise the sweep does, later.
        self.hosts.remove_if_mut(&self.key, |_, host| {
            host.open = host.open.saturating_sub(1);
            host.open == 0 && host.full_at <= now
        });
    }
}

/// The address a client is counted under: its IPv4 address (also when it
/// comes IPv4-mapped through a dual-stack socket), or the /64 of its IPv6
/// address.
pub fn host_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

impl Limits {
    /// `total` open connections at most; per address, `per_ip` open
    /// connections (0: no limit) and new connections at `rate` (`None`: no
    /// limit). A `total` beyond what a semaphore holds (the parsers never
    /// give one) is clamped rather than a panic.
    pub fn new(total: usize, per_ip: usize, rate: Option<Rate>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            per_ip,
            rate,
            hosts: Arc::new(DashMap::new()),
            next_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Takes a place for a connection from `ip`, or says why not. Every
    /// attempt from an address counts against its rate, refused or not.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        if self.per_ip == 0 && self.rate.is_none() {
            let slot = self.slots.clone().try_acquire_owned();
            return Ok(Admitted {
                _slot: slot.map_err(|_| Refusal::Full)?,
                _host: None,
            });
        }
        let now = Instant::now();
        self.sweep(now);
        let key = host_key(ip);
        let mut host = self.hosts.entry(key).or_insert(Host {
            open: 0,
            full_at: now,
        });
        if let Some(rate) = &self.rate
            && rate.take(&mut host.full_at, now).is_err()
        {
            return Err(Refusal::Rate);
        }
        if self.per_ip > 0 && host.open >= self.per_ip {
            return Err(Refusal::Full);
        }
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        host.open += 1;
        Ok(Admitted {
            _slot: slot,
            _host: Some(HostHeld {
                hosts: self.hosts.clone(),
                key,
            }),
        })
    }

    /// Forgets addresses that hold no connection and whose bucket is full,
    /// at most once per [`SWEEP_EVERY`]: the table then holds the addresses
    /// with open connections and those seen in the last `burst / rate`
    /// seconds, whatever a spoofing or roaming client does.
    fn sweep(&self, now: Instant) {
        {
            let mut next = self.next_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if now < *next {
                return;
            }
            *next = now + SWEEP_EVERY;
        }
        self.hosts
            .retain(|_, host| host.open > 0 || host.full_at > now);
    }

    /// Connections from `ip`'s address (or /64) now; 0 when no per-address
    /// limit is configured.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.hosts.get(&host_key(ip)).map_or(0, |h| h.open)
    }

    /// Addresses the limits remember now.
    pub fn remembered(&self) -> usize {
        self.hosts.len()
    }
}

/// Tells a connection over a cap or a rate that the server is full and
/// closes it, without waiting for anything: a fresh socket's send buffer
/// takes the short `bye` at once, and closing at once means a flood of
/// refused connections holds no descriptor beyond the one being refused.
pub fn refuse(stream: TcpStream, why: Refusal) {
    metrics().rejected(why.reason());
    let _ = stream.try_write(&ByeReason::ServerFull.frame());
}

/// The limit on open descriptors in force, as start-up left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The soft limit: what the process may open.
    pub soft: u64,
    /// The soft limit before start-up raised it, if it did.
    pub raised_from: Option<u64>,
}

/// Raises the soft limit on open descriptors to the hard limit, so that the
/// connection cap is not held to a default soft limit (often 1024) that the
/// system lets the process raise. `None` where the limit cannot be read; a
/// limit that cannot be raised is kept (the connection cap then fits it).
pub fn raise_descriptor_limit() -> Option<DescriptorLimit> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(DescriptorLimit {
            soft: hard,
            raised_from: Some(soft),
        });
    }
    Some(DescriptorLimit {
        soft,
        raised_from: None,
    })
}

/// Descriptors the process has open now (assumed [`ASSUMED_OPEN`] where
/// they cannot be counted).
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        // The listing's own descriptor is among those listed.
        .map(|entries| entries.count().saturating_sub(1))
        .unwrap_or(ASSUMED_OPEN)
}

/// Connections that fit under a descriptor limit of `limit` when `open`
/// descriptors are in use for other things, keeping [`DESCRIPTOR_HEADROOM`]
/// free.
pub fn connections_within(limit: u64, open: usize) -> usize {
    let reserved = (open + DESCRIPTOR_HEADROOM) as u64;
    usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn caps_total_and_per_ip_and_release_on_drop() {
        let limits = Limits::new(3, 2, None);
        let a = ip("127.0.0.1");
        let b = ip("127.0.0.2");
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::Full, "per-IP cap");
        let third = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refusal::Full, "total cap");
        drop(third);
        drop(first);
        assert_eq!(limits.held_by(a), 1);
        assert!(limits.admit(a).is_ok());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            host_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            host_key(ip("2001:db8:1:2::1")),
            host_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(host_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(host_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[tokio::test]
    async fn one_slash_64_shares_one_cap() {
        let limits = Limits::new(100, 2, None);
        let _a = limits.admit(ip("2001:db8::1")).unwrap();
        let _b = limits.admit(ip("2001:db8::ffff:2")).unwrap();
        assert_eq!(
            limits.admit(ip("2001:db8::3:3:3")).unwrap_err(),
            Refusal::Full
        );
        assert!(limits.admit(ip("2001:db8:0:1::1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_rate_refills_and_forgets_quiet_addresses() {
        // 2 a second, bursts of 4, no cap on open connections.
        let limits = Limits::new(1000, 0, Rate::new(2.0, 4));
        let a = ip("198.51.100.1");
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(limits.admit(a).unwrap());
        }
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::Rate);
        // Closing connections gives nothing back; time does.
        open.clear();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::Rate);
        assert!(limits.admit(ip("198.51.100.2")).is_ok(), "another address");
        tokio::time::advance(Duration::from_millis(500)).await;
        let again = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::Rate);
        drop(again);
        // Once their buckets are full again, addresses are forgotten.
        tokio::time::advance(Duration::from_secs(5)).await;
        let _other = limits.admit(ip("198.51.100.3")).unwrap();
        assert_eq!(limits.remembered(), 1);
    }

    #[test]
    fn descriptors_keep_headroom() {
        assert_eq!(
            connections_within(1024, 12),
            1024 - 12 - DESCRIPTOR_HEADROOM
        );
        assert_eq!(connections_within(40, 12), 0);
        assert!(open_descriptors() >= 3);
    }
}
