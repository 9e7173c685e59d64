//! Rates with a burst, for everything the broker meters: connections per
//! address, entries into the room, and each connection's requests.
//!
//! [`Rate`] is a token bucket of `burst` tokens refilled at `per_second`,
//! computed as the generic cell rate algorithm: the whole state of one bucket
//! is a single [`Instant`] (when the bucket will next be full), so a limiter
//! per connection or per address costs 16 bytes and no allocation. Time is
//! tokio's, so tests can run the clock paused.

use std::time::Duration;

use tokio::time::Instant;

/// The longest time one event may cost: rates below one per 1000 s are
/// treated as one per 1000 s, so no arithmetic on instants can overflow.
const LONGEST_INTERVAL: Duration = Duration::from_secs(1000);

/// A rate limit: `per_second` events a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// What one event costs: 1 / `per_second`.
    interval: Duration,
    /// How far ahead of now the bucket's schedule may run: `burst` - 1 events.
    tolerance: Duration,
}

impl Rate {
    /// A limit of `per_second` events a second with bursts of `burst`;
    /// `None` (no limit) when `per_second` is 0, as configuration keys use it.
    pub fn new(per_second: f64, burst: u32) -> Option<Self> {
        if per_second.is_nan() || per_second <= 0.0 {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / per_second)
            .unwrap_or(LONGEST_INTERVAL)
            .min(LONGEST_INTERVAL);
        Some(Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
        })
    }

    /// Takes one event at `now` from the bucket whose state is `full_at`
    /// (a new bucket starts full: any instant up to `now`). On refusal the
    /// state is unchanged, and the error is the first instant at which an
    /// event would be allowed.
    pub fn take(&self, full_at: &mut Instant, now: Instant) -> Result<(), Instant> {
        let start = (*full_at).max(now);
        if start > now + self.tolerance {
            return Err(start - self.tolerance);
        }
        *full_at = start + self.interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let rate = Rate::new(2.0, 3).unwrap();
        let t0 = Instant::now();
        let mut bucket = t0;
        for _ in 0..3 {
            assert!(rate.take(&mut bucket, t0).is_ok());
        }
        let next = rate.take(&mut bucket, t0).unwrap_err();
        assert_eq!(next, t0 + Duration::from_millis(500));
        // A refusal costs nothing: the next token still comes at `next`.
        assert_eq!(rate.take(&mut bucket, t0).unwrap_err(), next);
        assert!(rate.take(&mut bucket, next).is_ok());
        assert!(rate.take(&mut bucket, next).is_err());
        // After a quiet spell the bucket is full again, never fuller.
        let later = next + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rate.take(&mut bucket, later).is_ok());
        }
        assert!(rate.take(&mut bucket, later).is_err());
    }

    #[test]
    fn zero_means_no_limit_and_extreme_rates_do_not_overflow() {
        assert_eq!(Rate::new(0.0, 10), None);
        let slow = Rate::new(1e-300, u32::MAX).unwrap();
        let fast = Rate::new(1e300, 0).unwrap();
        let t0 = Instant::now();
        let (mut a, mut b) = (t0, t0);
        for _ in 0..1000 {
            assert!(slow.take(&mut a, t0).is_ok());
            let _ = fast.take(&mut b, t0);
        }
    }
}
