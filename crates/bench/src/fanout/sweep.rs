//! What one round measured, and the sweep that raises the rate round after
//! round to find the highest sustainable one.

use std::time::Duration;

use super::Args;
use super::room::Room;
use crate::server::{Broker, ServerUnderTest};
use crate::transport::Transport;

/// One measured run at one rate.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RunReport {
    pub workload: &'static str,
    pub broker: &'static str,
    /// How the clients reached the broker: `tcp`, `tls` or `quic`.
    pub transport: &'static str,
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
    /// In a cluster, every node's and Redis's together.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// anteroom nodes serving the room (1: a single node).
    pub nodes: usize,
    /// In a cluster, Redis's own CPU over the round (included in
    /// `server_cpu_s`).
    pub redis_cpu_s: Option<f64>,
    /// UDP datagrams the kernel dropped for a full socket receive buffer
    /// during the round, machine-wide: QUIC's packets lost on the way in
    /// (to the server or to the members), which it then sends again.
    pub udp_receive_buffer_errors: Option<u64>,
    /// Server and load generator on a CPU each (`--pin`).
    pub pinned: bool,
    /// A round of a sweep, rather than the one round at `--rate`.
    pub sweep: bool,
}

/// What a rate must achieve to count: every criterion asks for >= 99.9%
/// delivered, and bounds the p99 latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Criterion {
    /// p99 <= 50 ms: the rate a chat room can run at.
    Strict,
    /// p99 <= 250 ms: the most the broker moves before latency runs away.
    Capacity,
}

impl Criterion {
    fn p99_limit_ms(self) -> f64 {
        match self {
            Criterion::Strict => 50.0,
            Criterion::Capacity => 250.0,
        }
    }
}

impl RunReport {
    /// Whether this rate meets `criterion`.
    pub(super) fn meets(&self, criterion: Criterion) -> bool {
        self.delivered_ratio >= 0.999 && self.p99_ms <= criterion.p99_limit_ms()
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
        if let Some(redis) = self.redis_cpu_s {
            println!(
                "          {} nodes; Redis used {redis:.2} s of CPU ({} µs per message sent)",
                self.nodes,
                per_delivery(crate::cpu::us_per_delivery(redis, self.sent)),
            );
        }
        println!("{}", serde_json::to_string(self).unwrap_or_default());
    }
}

fn per_delivery(us: Option<f64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("{us:.3}"))
}

/// The sweep's JSON line. `sustainable_rate` (strict) and `capacity_rate`
/// are null when even the starting rate failed them, and `capped` says
/// `--max-rate` stopped the sweep.
pub(super) fn sweep_summary(
    args: &Args,
    broker: Broker,
    transport: Transport,
    store: Option<&str>,
    pinned: bool,
    found: &Found,
) -> String {
    let (best, capacity) = (found.strict.as_ref(), found.capacity.as_ref());
    let capped =
        capacity.is_some_and(|b| args.max_rate.is_some_and(|max| b.offered_rate * 2.0 > max));
    serde_json::json!({
        "workload": "fanout-sweep",
        "broker": broker.name(),
        "transport": transport.name(),
        "store": store,
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
        "capacity_rate": capacity.map(|b| b.offered_rate),
        "capacity_deliveries_per_s": capacity.map(|b| b.deliveries_per_s),
        "capacity_p99_ms": capacity.map(|b| b.p99_ms),
        "capacity_server_peak_rss_mb": capacity.map(|b| b.server_peak_rss_mb),
        "capacity_loadgen_cpu_us_per_delivery": capacity.and_then(|b| b.loadgen_cpu_us_per_delivery),
        "capacity_server_cpu_us_per_delivery": capacity.and_then(|b| b.server_cpu_us_per_delivery),
        "pinned": pinned,
        "capped": capped,
    })
    .to_string()
}

/// The best round found for each criterion.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub strict: Option<RunReport>,
    pub capacity: Option<RunReport>,
}

/// What the rounds so far say about one criterion: the highest rate that
/// met it, and the lowest that did not.
#[derive(Debug, Default)]
struct Bounds {
    best: Option<RunReport>,
    failed: Option<f64>,
}

impl Bounds {
    fn learn(&mut self, criterion: Criterion, report: &RunReport) {
        let rate = report.offered_rate;
        if report.meets(criterion) {
            if self.best.as_ref().is_none_or(|b| b.offered_rate < rate) {
                self.best = Some(report.clone());
            }
        } else if self.failed.is_none_or(|f| rate < f) {
            self.failed = Some(rate);
        }
    }

    /// The next rate to try between the two, if there is a gap to narrow.
    fn midpoint(&self) -> Option<f64> {
        let low = self.best.as_ref()?.offered_rate;
        let high = self.failed?;
        (high > low).then_some((low + high) / 2.0)
    }
}

/// Doubles the rate until it fails the capacity criterion, then bisects
/// three times towards the strict boundary and three times towards the
/// capacity one. Every round informs both.
pub(super) async fn sweep(room: &mut Room, args: &Args, server: &ServerUnderTest) -> Found {
    let mut round = 0;
    let mut strict = Bounds::default();
    let mut capacity = Bounds::default();
    let mut rate = args.rate;
    loop {
        let report = room.round(round, rate, args.duration, server).await;
        round += 1;
        report.print();
        strict.learn(Criterion::Strict, &report);
        capacity.learn(Criterion::Capacity, &report);
        settle().await;
        if !report.meets(Criterion::Capacity) {
            break;
        }
        rate *= 2.0;
        if args.max_rate.is_some_and(|max| rate > max) {
            break;
        }
    }
    for target in [Criterion::Strict, Criterion::Capacity] {
        for _ in 0..3 {
            let bounds = match target {
                Criterion::Strict => &strict,
                Criterion::Capacity => &capacity,
            };
            let Some(mid) = bounds.midpoint() else { break };
            let report = room.round(round, mid, args.duration, server).await;
            round += 1;
            report.print();
            strict.learn(Criterion::Strict, &report);
            capacity.learn(Criterion::Capacity, &report);
            settle().await;
        }
    }
    Found {
        strict: strict.best,
        capacity: capacity.best,
    }
}

/// Lets queues drain between rates.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}
