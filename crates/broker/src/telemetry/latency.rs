//! The delivery latency histogram, recorded once per delivered frame.
//!
//! It is the one series on the fan-out path: with a thousand members, every
//! message is one sample per member. A generic histogram costs an allocation
//! and a shared queue push per sample, which measured at most of the cost of
//! delivering a frame. This one has fixed buckets, and writers aggregate a
//! whole batch locally ([`LocalLatency`]) before touching the shared atomic
//! counters once per bucket, so a sample costs a comparison or four and no
//! shared-memory traffic.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds, in seconds: 100 µs to 10 s.
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const BUCKETS: usize = BOUNDS.len() + 1;

const fn bounds_ns() -> [u64; BOUNDS.len()] {
    let mut out = [0u64; BOUNDS.len()];
    let mut i = 0;
    while i < BOUNDS.len() {
        out[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    out
}

const BOUNDS_NS: [u64; BOUNDS.len()] = bounds_ns();

/// Samples of one writer batch, not yet published.
#[derive(Debug, Default)]
pub struct LocalLatency {
    counts: [u64; BUCKETS],
    sum_ns: u64,
    total: u64,
}

impl LocalLatency {
    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|bound| *bound < ns);
        self.counts[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.total += 1;
    }
}

/// A Prometheus histogram of fixed buckets over shared atomic counters.
#[derive(Debug)]
pub struct LatencyHistogram {
    name: &'static str,
    help: &'static str,
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    total: AtomicU64,
}

impl LatencyHistogram {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Publishes a batch's samples and resets it.
    pub fn publish(&self, local: &mut LocalLatency) {
        if local.total == 0 {
            return;
        }
        for (shared, count) in self.counts.iter().zip(local.counts.iter()) {
            if *count > 0 {
                shared.fetch_add(*count, Ordering::Relaxed);
            }
        }
        self.sum_ns.fetch_add(local.sum_ns, Ordering::Relaxed);
        self.total.fetch_add(local.total, Ordering::Relaxed);
        *local = LocalLatency::default();
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Appends the series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, count) in BOUNDS.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = LatencyHistogram::new("t_seconds", "test");
        let mut local = LocalLatency::default();
        local.record(Duration::from_micros(100)); // exactly on the first bound
        local.record(Duration::from_micros(101));
        local.record(Duration::from_secs(60)); // beyond the last bound
        h.publish(&mut local);
        let mut out = String::new();
        h.render(&mut out);
        assert!(out.contains("t_seconds_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(
            out.contains("t_seconds_bucket{le=\"0.00025\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("t_seconds_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_count 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }
}
