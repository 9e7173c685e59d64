//! The room under measurement: members joined and reading, publishers
//! ready, and one round of paced publishing at a given rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::Args;
use super::members::{ReaderStats, stamp};
use super::publishers::Publisher;
use super::sweep::RunReport;
use crate::cpu::{own_cpu_seconds, us_per_delivery};
use crate::server::{Broker, ServerUnderTest};
use crate::transport::{Transport, udp_receive_buffer_errors};
use crate::{lock, progress};

/// The connected room: readers running, publishers ready.
pub(super) struct Room {
    broker: Broker,
    transport: Transport,
    epoch: Instant,
    readers: Vec<Arc<Mutex<ReaderStats>>>,
    publishers: Vec<Publisher>,
    /// Connections that must stay open for the room to exist.
    _keep: Vec<Box<dyn std::any::Any + Send>>,
    members: usize,
    payload: usize,
    /// Rounds of a sweep, or the one round at `--rate`.
    sweep: bool,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

impl Room {
    pub(super) fn new(
        args: &Args,
        broker: Broker,
        transport: Transport,
        epoch: Instant,
        readers: Vec<Arc<Mutex<ReaderStats>>>,
        publishers: Vec<Publisher>,
        keep: Vec<Box<dyn std::any::Any + Send>>,
    ) -> Self {
        Room {
            broker,
            transport,
            epoch,
            readers,
            publishers,
            _keep: keep,
            members: args.members,
            payload: args.payload,
            sweep: args.sweep,
        }
    }

    pub(super) async fn round(
        &mut self,
        round: u32,
        rate: f64,
        duration: Duration,
        server: &ServerUnderTest,
    ) -> RunReport {
        for stats in &self.readers {
            let mut s = lock(stats);
            s.round = round;
            s.count = 0;
            // Room for the round up front: growing the vector would copy
            // it on the receive path.
            s.latency_us.clear();
            s.latency_us
                .reserve((rate * duration.as_secs_f64() * 1.1) as usize);
        }
        let before = server.cpu();
        let redis_before = server.redis_cpu();
        let own_before = own_cpu_seconds();
        let udp_before = udp_receive_buffer_errors();
        let publishers = self.publishers.len();
        let interval = Duration::from_secs_f64(publishers as f64 / rate);
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + duration;
        let bar = progress(duration.as_secs().max(1), &format!("{rate:.0} msg/s"));
        let mut tasks = Vec::new();
        for (p, mut writer) in std::mem::take(&mut self.publishers).into_iter().enumerate() {
            let epoch = self.epoch;
            let payload = self.payload;
            // Stagger publishers evenly within one interval.
            let offset = interval.mul_f64(p as f64 / publishers as f64);
            tasks.push(tokio::spawn(async move {
                let mut sent = 0u64;
                let mut due = start + offset;
                while due < end {
                    tokio::time::sleep_until(due.into()).await;
                    let text = stamp(round, due.duration_since(epoch).as_nanos() as u64, payload);
                    if !writer.send(&text).await {
                        break;
                    }
                    sent += 1;
                    due += interval;
                }
                (writer, sent)
            }));
        }
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    bar.inc(1);
                }
            })
        };
        let mut sent = 0;
        for task in tasks {
            if let Ok((writer, n)) = task.await {
                self.publishers.push(writer);
                sent += n;
            }
        }
        ticker.abort();
        bar.finish_and_clear();
        let expected = sent * self.members as u64;
        // Wait for what is in flight, up to a grace period.
        let grace_end = Instant::now() + Duration::from_secs(3);
        let mut delivered = 0;
        while Instant::now() < grace_end {
            delivered = self.delivered();
            if delivered >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let own_cpu = own_cpu_seconds() - own_before;
        let server_cpu = match (before, server.cpu()) {
            (Some(before), Some(after)) => after.since(&before),
            _ => 0.0,
        };
        let redis_cpu = match (redis_before, server.redis_cpu()) {
            (Some(before), Some(after)) => Some(after.since(&before)),
            _ => None,
        };
        let peak_rss = server.usage().peak_rss_bytes;
        let udp_drops = match (udp_before, udp_receive_buffer_errors()) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let mut merged = histogram();
        for stats in &self.readers {
            let mut s = lock(stats);
            for &us in &s.latency_us {
                let _ = merged.record(u64::from(us));
            }
            // Merged: free it rather than hold every member's peak between
            // rounds.
            s.latency_us = Vec::new();
        }
        let q = |p: f64| merged.value_at_quantile(p) as f64 / 1000.0;
        RunReport {
            workload: "fanout",
            broker: self.broker.name(),
            transport: self.transport.name(),
            members: self.members,
            publishers,
            payload: self.payload,
            offered_rate: rate,
            duration_s: duration.as_secs_f64(),
            sent,
            expected,
            delivered,
            delivered_ratio: if expected == 0 {
                0.0
            } else {
                delivered as f64 / expected as f64
            },
            deliveries_per_s: delivered as f64 / elapsed.max(duration.as_secs_f64()),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: merged.max() as f64 / 1000.0,
            server_cpu_s: server_cpu,
            server_peak_rss_mb: peak_rss as f64 / 1e6,
            loadgen_cpu_s: own_cpu,
            loadgen_cpu_us_per_delivery: us_per_delivery(own_cpu, delivered),
            server_cpu_us_per_delivery: us_per_delivery(server_cpu, delivered),
            nodes: server.nodes().len(),
            redis_cpu_s: redis_cpu,
            udp_receive_buffer_errors: udp_drops,
            pinned: server.pinned,
            sweep: self.sweep,
        }
    }

    fn delivered(&self) -> u64 {
        self.readers.iter().map(|s| lock(s).count).sum()
    }
}
