//! The soak's report: one record of the run, printed for a person and as
//! one JSON line, and the reasons it failed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Args;
use super::checks::{Coverage, Kind};
use super::sampler::ServerFigures;
use super::shared::Shared;
use crate::lock;

/// One soak run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Report {
    pub workload: &'static str,
    pub broker: &'static str,
    pub clients: usize,
    pub max_active: usize,
    pub seed: u64,
    pub duration_s: f64,
    pub sessions: u64,
    pub connect_failed: u64,
    pub joins: u64,
    pub joins_direct: u64,
    pub promotions: u64,
    pub queued: u64,
    pub server_full: u64,
    pub messages_said: u64,
    pub messages_delivered: u64,
    pub rate_limited: u64,
    pub who: u64,
    pub gaps: u64,
    pub slow_consumer_cut_offs_while_reading: u64,
    pub acts: BTreeMap<&'static str, u64>,
    pub goodbyes: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub timeout_late_max_ms: f64,
    pub stretches_checked: u64,
    pub stretch_ids: u64,
    pub fifo_promotions_checked: u64,
    pub violations: u64,
    pub violations_by_kind: BTreeMap<&'static str, u64>,
    pub violation_examples: Vec<String>,
    pub rss_first_mb: f64,
    pub rss_warm_mb: f64,
    pub rss_last_mb: f64,
    pub rss_max_mb: f64,
    pub rss_after_mb: f64,
    pub rss_growth_mb: f64,
    pub rss_slope_mb_per_min: f64,
    pub rss_fit_growth_mb: f64,
    pub rss_limit_mb: f64,
    pub memory_flat: bool,
    pub fds_baseline: u64,
    pub fds_max: u64,
    pub fds_end: u64,
    pub connections_end: Option<u64>,
    pub back_to_baseline: bool,
    pub server_cpu_s: f64,
    pub server_errors: u64,
    /// The join/leave storm beside the clients, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<super::storm::StormFigures>,
    pub ok: bool,
}

impl Report {
    /// Sums up a run that lasted `ran_for` seconds.
    pub(super) fn new(
        args: &Args,
        shared: &Shared,
        ran_for: f64,
        coverage: Coverage,
        server: &ServerFigures,
    ) -> Self {
        let memory = server.memory;
        let hist = lock(&shared.latency_us).clone();
        let findings = lock(&shared.findings);
        let violations: u64 = findings.counts.values().sum();
        let c = &shared.counters;
        let tallies = lock(&shared.tallies);
        let ok = violations == 0
            && (!server.measurable
                || (memory.flat && server.back_to_baseline && server.errors == 0));
        let quantile = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Report {
            workload: "soak",
            broker: "anteroom",
            clients: args.clients,
            max_active: args.max_active,
            seed: args.seed,
            duration_s: ran_for,
            sessions: c.sessions.load(Ordering::Relaxed),
            connect_failed: c.connect_failed.load(Ordering::Relaxed),
            joins: c.joins.load(Ordering::Relaxed),
            joins_direct: c.direct.load(Ordering::Relaxed),
            promotions: c.promotions.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            server_full: c.server_full.load(Ordering::Relaxed),
            messages_said: c.said.load(Ordering::Relaxed),
            messages_delivered: c.delivered.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            who: c.who.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            slow_consumer_cut_offs_while_reading: c.cut_off_reading.load(Ordering::Relaxed),
            acts: tallies.acts.clone(),
            goodbyes: tallies.goodbyes.clone(),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms: hist.max() as f64 / 1000.0,
            timeout_late_max_ms: c.timeout_late_us.load(Ordering::Relaxed) as f64 / 1000.0,
            stretches_checked: coverage.stretches,
            stretch_ids: coverage.stretch_ids,
            fifo_promotions_checked: coverage.fifo_promotions,
            violations,
            violations_by_kind: Kind::ALL
                .iter()
                .map(|k| (k.name(), findings.counts.get(k).copied().unwrap_or(0)))
                .collect(),
            violation_examples: findings.examples.clone(),
            rss_first_mb: server.first.rss_bytes as f64 / 1e6,
            rss_warm_mb: memory.warm_mb,
            rss_last_mb: memory.last_mb,
            rss_max_mb: memory.max_mb,
            rss_after_mb: server.last.rss_bytes as f64 / 1e6,
            rss_growth_mb: memory.growth_mb,
            rss_slope_mb_per_min: memory.slope_mb_per_min,
            rss_fit_growth_mb: memory.fit_growth_mb,
            rss_limit_mb: memory.limit_mb,
            memory_flat: memory.flat,
            fds_baseline: server.fds_baseline,
            fds_max: server.fds_max,
            fds_end: server.fds_end,
            connections_end: server.connections_end,
            back_to_baseline: server.back_to_baseline,
            server_cpu_s: server.last.cpu_seconds - server.first.cpu_seconds,
            server_errors: server.errors,
            storm: None,
            ok,
        }
    }

    /// Why the run failed, for a run that is not `ok`.
    pub(super) fn failure(&self, measurable: bool) -> String {
        let mut reasons = Vec::new();
        if self.violations > 0 {
            reasons.push(format!("{} violation(s)", self.violations));
        }
        if measurable && !self.memory_flat {
            reasons.push(format!(
                "memory grew by {:.1} MB after the warm-up (limit {:.1} MB)",
                self.rss_growth_mb.max(self.rss_fit_growth_mb),
                self.rss_limit_mb
            ));
        }
        if measurable && !self.back_to_baseline {
            reasons.push(format!(
                "the server did not return to its baseline ({} descriptors for {}, {} connections)",
                self.fds_end,
                self.fds_baseline,
                self.connections_end.map_or("?".into(), |c| c.to_string())
            ));
        }
        if self.server_errors > 0 {
            reasons.push(format!(
                "{} error line(s) in the server's log",
                self.server_errors
            ));
        }
        format!("soak failed: {}", reasons.join("; "))
    }

    /// The human summary.
    pub(super) fn print(&self, measurable: bool) {
        let r = self;
        let join = |pairs: Vec<(String, u64)>| -> String {
            if pairs.is_empty() {
                "none".into()
            } else {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        println!(
            "sessions      {} ({} joins: {} direct, {} promoted; {} queued; {} server_full; {} failed to connect)",
            r.sessions,
            r.joins,
            r.joins_direct,
            r.promotions,
            r.queued,
            r.server_full,
            r.connect_failed
        );
        println!(
            "messages      {} said, {} delivered, {} rate-limited, {} who, {} gaps",
            r.messages_said, r.messages_delivered, r.rate_limited, r.who, r.gaps
        );
        println!(
            "latency       p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms
        );
        println!(
            "misbehaviour  {}",
            join(r.acts.iter().map(|(k, v)| (k.to_string(), *v)).collect())
        );
        println!(
            "goodbyes      {}; {} cut off while reading; timeouts at most {:.0} ms late",
            join(r.goodbyes.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            r.slow_consumer_cut_offs_while_reading,
            r.timeout_late_max_ms
        );
        if measurable {
            println!(
                "memory        rss {:.1} MB at start, {:.1} MB after warm-up, {:.1} MB last, {:.1} MB max, {:.1} MB with everyone gone; growth {:+.2} MB, fit {:+.2} MB ({:+.3} MB/min), limit {:.1} MB: {}",
                r.rss_first_mb,
                r.rss_warm_mb,
                r.rss_last_mb,
                r.rss_max_mb,
                r.rss_after_mb,
                r.rss_growth_mb,
                r.rss_fit_growth_mb,
                r.rss_slope_mb_per_min,
                r.rss_limit_mb,
                if r.memory_flat { "flat" } else { "GROWING" }
            );
            println!(
                "descriptors   {} at start, {} max, {} at the end; connections at the end {}: {}",
                r.fds_baseline,
                r.fds_max,
                r.fds_end,
                r.connections_end.map_or("?".into(), |c| c.to_string()),
                if r.back_to_baseline {
                    "back to baseline"
                } else {
                    "NOT BACK"
                }
            );
            println!(
                "server        {:.1} s CPU, {} error line(s) logged",
                r.server_cpu_s, r.server_errors
            );
            if let Some(storm) = r.storm {
                println!(
                    "storm         {} join/leave cycles from one host: {} welcomed, {} queued, {} turned away, {} failed",
                    storm.cycles, storm.welcomed, storm.queued, storm.refused, storm.failed
                );
            }
        } else {
            println!(
                "server        not started by the soak: memory, descriptors and timing not judged"
            );
        }
        println!(
            "checked       {} stretches of membership spanning {} message ids; {} promotions seen by the observer",
            r.stretches_checked, r.stretch_ids, r.fifo_promotions_checked
        );
        println!(
            "violations    {}{}",
            r.violations,
            if r.violations == 0 {
                String::new()
            } else {
                format!(
                    " ({})",
                    join(
                        r.violations_by_kind
                            .iter()
                            .filter(|(_, v)| **v > 0)
                            .map(|(k, v)| (k.to_string(), *v))
                            .collect()
                    )
                )
            }
        );
        for example in &r.violation_examples {
            println!("  {example}");
        }
    }
}
