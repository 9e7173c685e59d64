//! The fan-out hot path, and what metrics add to it.
//!
//! Measures, in one run on the same machine:
//! * the baseline: room delivery of one message per pass to N members
//!   (encode once, push the pass's shared run into every outbox) and a
//!   writer shard sweeping those outboxes into a sink, per delivered frame:
//!   with one event per pass, every frame pays for a whole write;
//! * the metrics the writer records for delivered frames (a latency sample
//!   per frame, published with the delivered counter once per batch), per
//!   frame.
//!
//! Figures are printed as nanoseconds and as the ratio of the metrics cost
//! to the baseline. Run with `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anteroom_broker::bus::RoomEvent;
use anteroom_broker::conn::handle::Peer;
use anteroom_broker::conn::shards::{Shards, run_sharded_writer};
use anteroom_broker::conn::writer::ByteSink;
use anteroom_broker::room::delivery::RoomDelivery;

const MEMBERS: usize = 1000;
const MESSAGES: usize = 2000;

fn fan_out_per_frame(runtime: &tokio::runtime::Runtime) -> f64 {
    runtime.block_on(async {
        let mut delivery = RoomDelivery::new(MEMBERS, false);
        let mut writers = Vec::new();
        for i in 0..MEMBERS {
            let peer = Arc::new(Peer::new(MESSAGES + 16));
            delivery.handle(RoomEvent::MemberJoined {
                peer: peer.clone(),
                name: format!("member{i}").into(),
                from_queue: false,
                ts: 0,
            });
            writers.push(peer);
        }
        let shards = Shards::start(1);
        let handles: Vec<_> = writers
            .iter()
            .map(|peer| {
                let writer = run_sharded_writer(
                    peer.clone(),
                    ByteSink(tokio::io::sink()),
                    None,
                    shards.clone(),
                );
                tokio::spawn(async move {
                    let _ = writer.await;
                })
            })
            .collect();
        // Let the writers flush the welcomes and joins first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text: Arc<str> = "x".repeat(128).into();
        let from: Arc<str> = "member0".into();
        let started = Instant::now();
        for _ in 0..MESSAGES {
            delivery.handle(RoomEvent::MessagePosted {
                from: from.clone(),
                text: text.clone(),
                ts: 0,
                read_at: Instant::now(),
                attachment: None,
                id: None,
                logged: true,
            });
            // One event per pass: the most work per delivery.
            delivery.flush();
            tokio::task::yield_now().await;
        }
        while writers.iter().any(|p| p.outbox.depth() > 0) {
            tokio::task::yield_now().await;
        }
        let elapsed = started.elapsed();
        for peer in &writers {
            peer.outbox.close(&[], false);
        }
        for h in handles {
            let _ = h.await;
        }
        elapsed.as_nanos() as f64 / (MESSAGES * MEMBERS) as f64
    })
}

fn metrics_per_frame() -> f64 {
    // As the writer does it: one batch of frames, a sample per frame, then
    // one publication per batch.
    let m = anteroom_broker::telemetry::metrics();
    let batches = 20_000;
    let per_batch = 100;
    let mut local = anteroom_broker::telemetry::LocalLatency::default();
    let posted = Instant::now();
    let started = Instant::now();
    for _ in 0..batches {
        let now = Instant::now();
        for _ in 0..per_batch {
            local.record(black_box(now.saturating_duration_since(posted)));
        }
        m.delivery_latency.publish(&mut local);
        m.delivered.increment(black_box(per_batch as u64));
    }
    let elapsed = started.elapsed();
    elapsed.as_nanos() as f64 / (batches * per_batch) as f64
}

fn main() {
    // Installs the Prometheus recorder, as the server does.
    let _ = anteroom_broker::telemetry::metrics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut baseline = Vec::new();
    let mut metrics = Vec::new();
    for _ in 0..3 {
        baseline.push(fan_out_per_frame(&runtime));
        metrics.push(metrics_per_frame());
    }
    baseline.sort_by(f64::total_cmp);
    metrics.sort_by(f64::total_cmp);
    let (b, m) = (baseline[1], metrics[1]);
    println!("hot path, {MEMBERS} members x {MESSAGES} messages of 128 bytes, median of 3:");
    println!("  delivery per frame (fan-out + write, metrics included): {b:8.1} ns");
    println!("  metrics recorded per frame (histogram + counter):        {m:8.1} ns");
    println!(
        "  metrics share of the per-frame cost:                     {:8.1} %",
        100.0 * m / b
    );
}
