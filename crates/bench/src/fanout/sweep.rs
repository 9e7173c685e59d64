//! What one round measured, and the sweep that raises the rate round after
//! round to find the highest sustainable one.

use std::time::Duration;

use super::Args;
use super::room::Room;
use crate::server::{Broker, ServerUnderTest};

/// One measured run at one rate.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RunReport {
    pub workload: &'static str,
    pub broker: &'static str,
    pub members: usize,
    pub publishers: usize,
    pub payload: usize,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub delivered_ratio: f64,
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub server_cpu_s: f64,
    pub server_peak_rss_mb: f64,
    /// CPU the bench process itself used over the round (user + system).
    pub loadgen_cpu_s: f64,
    /// The bench's CPU per delivery: what the clients cost, which must be
    /// about equal across brokers for their figures to compare the brokers.
    pub loadgen_cpu_us_per_delivery: Option<f64>,
    /// The server's CPU per delivery; null when the bench did not start it.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server and load generator on a CPU each (`--pin`).
    pub pinned: bool,
    /// A round of a sweep, rather than the one round at `--rate`.
    pub sweep: bool,
}

impl RunReport {
    /// Whether this rate is sustainable: >= 99.9% delivered, p99 <= 50 ms.
    pub(super) fn sustainable(&self) -> bool {
        self.delivered_ratio >= 0.999 && self.p99_ms <= 50.0
    }

    pub(super) fn print(&self) {
        println!(
            "{:>9.0} msg/s offered  {:>6} sent  {:>6.2}% delivered  {:>11.0} deliveries/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  cpu {:>5.2} s  rss {:>6.1} MB  per delivery: server {} µs, load generator {} µs",
            self.offered_rate,
            self.sent,
            self.delivered_ratio * 100.0,
            self.deliveries_per_s,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.server_cpu_s,
            self.server_peak_rss_mb,
            per_delivery(self.server_cpu_us_per_delivery),
            per_delivery(self.loadgen_cpu_us_per_delivery),
        );
        println!("{}", serde_json::to_string(self).unwrap_or_default());
    }
}

fn per_delivery(us: Option<f64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("{us:.3}"))
}

/// The sweep's JSON line; `sustainable_rate` is null when even the
/// starting rate failed, and `capped` says `--max-rate` stopped the sweep.
pub(super) fn sweep_summary(
    args: &Args,
    broker: Broker,
    pinned: bool,
    best: Option<&RunReport>,
) -> String {
    let capped = best.is_some_and(|b| args.max_rate.is_some_and(|max| b.offered_rate * 2.0 > max));
    serde_json::json!({
        "workload": "fanout-sweep",
        "broker": broker.name(),
        "members": args.members,
        "publishers": args.publishers,
        "payload": args.payload,
        "start_rate": args.rate,
        "sustainable_rate": best.map(|b| b.offered_rate),
        "deliveries_per_s": best.map(|b| b.deliveries_per_s),
        "p99_ms": best.map(|b| b.p99_ms),
        "server_peak_rss_mb": best.map(|b| b.server_peak_rss_mb),
        "loadgen_cpu_us_per_delivery": best.and_then(|b| b.loadgen_cpu_us_per_delivery),
        "server_cpu_us_per_delivery": best.and_then(|b| b.server_cpu_us_per_delivery),
        "pinned": pinned,
        "capped": capped,
    })
    .to_string()
}

/// Doubles the rate until it fails, then bisects three times.
pub(super) async fn sweep(
    room: &mut Room,
    args: &Args,
    server: &ServerUnderTest,
) -> Option<RunReport> {
    let mut round = 0;
    let mut best: Option<RunReport> = None;
    let mut rate = args.rate;
    let mut failed: Option<f64> = None;
    while failed.is_none() {
        let report = room.round(round, rate, args.duration, server).await;
        round += 1;
        report.print();
        if report.sustainable() {
            best = Some(report);
            rate *= 2.0;
            if args.max_rate.is_some_and(|max| rate > max) {
                return best;
            }
        } else {
            failed = Some(rate);
        }
        settle().await;
    }
    let mut low = best.as_ref().map_or(0.0, |b| b.offered_rate);
    let mut high = failed.unwrap_or(rate);
    for _ in 0..3 {
        if low == 0.0 {
            break;
        }
        let mid = (low + high) / 2.0;
        let report = room.round(round, mid, args.duration, server).await;
        round += 1;
        report.print();
        if report.sustainable() {
            low = mid;
            best = Some(report);
        } else {
            high = mid;
        }
        settle().await;
    }
    best
}

/// Lets queues drain between rates.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}
