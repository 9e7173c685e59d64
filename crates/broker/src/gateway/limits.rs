//! Connection caps an operator can trust: a total cap on open connections
//! (handshaking, waiting and in the room together), which start-up fits
//! under the process's descriptor limit so that the server says
//! `server_full` instead of running out of descriptors, and an optional cap
//! per IP address. A connection over a cap is told
//! `bye{reason:"server_full"}` and closed, without ever reaching a session.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::metrics;
use anteroom_protocol::ByeReason;

/// Descriptors kept free for what is not a chat connection: requests to the
/// metrics listener (at most [`crate::telemetry::http::MAX_CONNECTIONS`] at
/// once), a connection being refused, and files such as logs.
pub const DESCRIPTOR_HEADROOM: usize = 32;

/// Descriptors assumed open at start-up where they cannot be counted.
const ASSUMED_OPEN: usize = 16;

/// The caps, shared by the listener.
#[derive(Debug)]
pub struct Limits {
    slots: Arc<Semaphore>,
    per_ip: usize,
    by_ip: Arc<DashMap<IpAddr, usize>>,
}

/// A connection's place under the caps; released on drop.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _ip: Option<IpHeld>,
}

#[derive(Debug)]
struct IpHeld {
    by_ip: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl Drop for IpHeld {
    fn drop(&mut self) {
        if let dashmap::mapref::entry::Entry::Occupied(mut held) = self.by_ip.entry(self.ip) {
            *held.get_mut() -= 1;
            if *held.get() == 0 {
                held.remove();
            }
        }
    }
}

impl Limits {
    /// `total` open connections at most; `per_ip` from one address (0: no limit).
    pub fn new(total: usize, per_ip: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(total)),
            per_ip,
            by_ip: Arc::new(DashMap::new()),
        }
    }

    /// Takes a place for a connection from `ip`, or `None` if a cap is reached.
    pub fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let ip = if self.per_ip == 0 {
            None
        } else {
            let mut held = self.by_ip.entry(ip).or_insert(0);
            if *held >= self.per_ip {
                return None;
            }
            *held += 1;
            Some(IpHeld {
                by_ip: self.by_ip.clone(),
                ip,
            })
        };
        Some(Admitted {
            _slot: slot,
            _ip: ip,
        })
    }

    /// Connections from `ip` now (0 when there is no per-IP cap).
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).map_or(0, |n| *n)
    }
}

/// Tells a connection over a cap that the server is full and closes it,
/// without waiting for anything: a fresh socket's send buffer takes the
/// short `bye` at once, and closing at once means a flood of refused
/// connections holds no descriptor beyond the one being refused.
pub fn refuse(stream: TcpStream) {
    metrics().rejected("server_full");
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

    #[test]
    fn caps_total_and_per_ip_and_release_on_drop() {
        let limits = Limits::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "per-IP cap");
        let third = limits.admit(b).unwrap();
        assert!(limits.admit(b).is_none(), "total cap");
        drop(third);
        drop(first);
        assert_eq!(limits.held_by(a), 1);
        assert!(limits.admit(a).is_some());
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
