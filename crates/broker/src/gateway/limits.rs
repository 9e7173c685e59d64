//! Connection caps an operator can trust: a total cap on open connections
//! (handshaking, waiting and in the room together) and an optional cap per
//! IP address. A connection over a cap is told `bye{reason:"server_full"}`
//! and closed, without ever reaching a session.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::metrics;
use anteroom_protocol::ByeReason;

/// How long a refused connection may take to receive its `bye`.
const REFUSAL_WRITE_LIMIT: Duration = Duration::from_secs(1);

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
    /// A `total` beyond what a semaphore holds (the parsers never give one)
    /// is clamped rather than a panic.
    pub fn new(total: usize, per_ip: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
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

/// Tells a connection over a cap that the server is full, then closes it.
pub async fn refuse(mut stream: TcpStream) {
    metrics().rejected("server_full");
    let bye = ByeReason::ServerFull.frame();
    let _ = tokio::time::timeout(REFUSAL_WRITE_LIMIT, async {
        let _ = stream.write_all(&bye).await;
        let _ = stream.shutdown().await;
    })
    .await;
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
}
