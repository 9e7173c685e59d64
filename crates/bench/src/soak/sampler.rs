//! The server under the soak, watched from outside: its memory and open
//! descriptors sampled over the run, its connections from the metrics, and
//! whether it comes back to where it started once everyone has left.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::checks::Kind;
use super::shared::Shared;
use crate::lock;
use crate::server::{ServerUnderTest, Usage, read_usage};

/// Share of the run taken as warm-up before memory is judged.
const WARM_UP: f64 = 0.2;
/// Memory is flat when it grew by at most this much after the warm-up, or
/// by 10% of what it was then if that is more.
const FLAT_MB: f64 = 5.0;
const FLAT_SHARE: f64 = 0.10;

/// Open connections by state, from the server's metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Connections {
    handshake: u64,
    active: u64,
    waiting: u64,
}

impl Connections {
    fn total(self) -> u64 {
        self.handshake + self.active + self.waiting
    }
}

async fn scrape(metrics: SocketAddr) -> Option<Connections> {
    let fetch = async {
        let mut stream = TcpStream::connect(metrics).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: anteroom\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()??;
    let mut found = Connections::default();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("anteroom_connections{state=\"") else {
            continue;
        };
        let Some((state, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let value = value.trim().parse::<f64>().ok()? as u64;
        match state {
            "handshake" => found.handshake = value,
            "active" => found.active = value,
            "waiting" => found.waiting = value,
            _ => {}
        }
    }
    Some(found)
}

fn open_fds(pid: Option<u32>) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{}/fd", pid?)).ok()?;
    Some(dir.count() as u64)
}

/// How the server's memory moved after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Growth {
    pub(super) warm_mb: f64,
    pub(super) last_mb: f64,
    pub(super) max_mb: f64,
    pub(super) growth_mb: f64,
    pub(super) slope_mb_per_min: f64,
    pub(super) fit_growth_mb: f64,
    pub(super) limit_mb: f64,
    pub(super) flat: bool,
}

/// Judges `(seconds, MB)` samples: memory is flat when neither the last
/// sample nor the straight line fitted through the samples after
/// `warm_until` rises by more than the limit over that span.
pub(super) fn growth(samples: &[(f64, f64)], warm_until: f64) -> Growth {
    let after: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm_until)
        .collect();
    let after = if after.len() >= 2 {
        after
    } else {
        samples.to_vec()
    };
    let max_mb = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        return Growth {
            warm_mb: 0.0,
            last_mb: 0.0,
            max_mb,
            growth_mb: 0.0,
            slope_mb_per_min: 0.0,
            fit_growth_mb: 0.0,
            limit_mb: FLAT_MB,
            flat: true,
        };
    };
    let n = after.len() as f64;
    let mean_t = after.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_m = after.iter().map(|s| s.1).sum::<f64>() / n;
    let var = after.iter().map(|s| (s.0 - mean_t).powi(2)).sum::<f64>();
    let cov = after
        .iter()
        .map(|s| (s.0 - mean_t) * (s.1 - mean_m))
        .sum::<f64>();
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    let growth_mb = last.1 - first.1;
    let fit_growth_mb = slope * (last.0 - first.0);
    let limit_mb = FLAT_MB.max(first.1 * FLAT_SHARE);
    Growth {
        warm_mb: first.1,
        last_mb: last.1,
        max_mb,
        growth_mb,
        slope_mb_per_min: slope * 60.0,
        fit_growth_mb,
        limit_mb,
        flat: growth_mb <= limit_mb && fit_growth_mb <= limit_mb,
    }
}

/// Samples of the server taken during a run, from its baseline on.
pub(super) struct Sampler {
    pid: Option<u32>,
    metrics: Option<SocketAddr>,
    fds_baseline: u64,
    first: Usage,
    /// `(seconds, MB)` of resident memory.
    rss: Vec<(f64, f64)>,
    fds_max: u64,
    server_gone: bool,
}

/// What the sampler found, for the report.
pub(super) struct ServerFigures {
    pub(super) first: Usage,
    pub(super) last: Usage,
    pub(super) memory: Growth,
    pub(super) fds_baseline: u64,
    pub(super) fds_max: u64,
    pub(super) fds_end: u64,
    pub(super) connections_end: Option<u64>,
    pub(super) back_to_baseline: bool,
    pub(super) errors: u64,
    pub(super) measurable: bool,
}

impl Sampler {
    /// The baseline: a settled server that has answered one scrape.
    pub(super) async fn baseline(server: &ServerUnderTest, metrics: Option<SocketAddr>) -> Self {
        let pid = server.pid();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(metrics) = metrics {
            scrape(metrics).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fds_baseline = open_fds(pid).unwrap_or(0);
        Sampler {
            pid,
            metrics,
            fds_baseline,
            first: server.usage(),
            rss: Vec::new(),
            fds_max: fds_baseline,
            server_gone: false,
        }
    }

    /// Samples every `every` until `duration` is over, printing a line of
    /// progress each time; `started` is when the clients started.
    pub(super) async fn watch(
        &mut self,
        shared: &Shared,
        started: Instant,
        every: Duration,
        duration: Duration,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let end = tokio::time::Instant::now() + duration;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::time::sleep_until(end) => break,
            }
            self.sample(shared, started.elapsed().as_secs_f64()).await;
        }
    }

    async fn sample(&mut self, shared: &Shared, t: f64) {
        let pid = self.pid;
        let usage = pid.and_then(read_usage);
        if pid.is_some() && usage.is_none() && !self.server_gone {
            self.server_gone = true;
            shared.report(
                Kind::ServerExit,
                format!("the server exited after {t:.1} s"),
            );
        }
        let fds = open_fds(pid);
        let conns = match self.metrics {
            Some(m) => scrape(m).await,
            None => None,
        };
        let rss_mb = usage.map_or(0.0, |u| u.rss_bytes as f64 / 1e6);
        if usage.is_some() {
            self.rss.push((t, rss_mb));
        }
        self.fds_max = self.fds_max.max(fds.unwrap_or(0));
        let c = &shared.counters;
        println!(
            "{t:>7.1} s  rss {:>6} MB  fds {:>5}  conns {}  clients {} in room, {} queued  said {}  delivered {}  violations {}",
            usage.map_or("-".into(), |_| format!("{rss_mb:.1}")),
            fds.map_or("-".into(), |f| f.to_string()),
            conns.map_or("-".into(), |c| format!(
                "{:>4} ({} active, {} waiting, {} handshake)",
                c.total(),
                c.active,
                c.waiting,
                c.handshake
            )),
            shared.members_now.load(Ordering::Relaxed),
            shared.queued_now.load(Ordering::Relaxed),
            c.said.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
            shared.violations()
        );
    }

    /// With everyone gone, waits (up to 15 s) for the server to be back
    /// where it started, then sums up; `duration` is the run's planned
    /// length, of which the warm-up is a share.
    pub(super) async fn settle(
        self,
        server: &ServerUnderTest,
        duration: Duration,
    ) -> ServerFigures {
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut fds_end, mut connections_end);
        loop {
            connections_end = match self.metrics {
                Some(m) => scrape(m).await.map(Connections::total),
                None => None,
            };
            fds_end = open_fds(self.pid).unwrap_or(0);
            let back = fds_end <= self.fds_baseline && connections_end.unwrap_or(0) == 0;
            if back || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let back_to_baseline = fds_end <= self.fds_baseline && connections_end.unwrap_or(0) == 0;
        let last = server.usage();
        let log_errors = lock(&server.log_errors).clone();
        for line in log_errors.first {
            println!("server error: {line}");
        }
        ServerFigures {
            first: self.first,
            last,
            memory: growth(&self.rss, duration.as_secs_f64() * WARM_UP),
            fds_baseline: self.fds_baseline,
            fds_max: self.fds_max,
            fds_end,
            connections_end,
            back_to_baseline,
            errors: log_errors.count,
            measurable: server.measurable(),
        }
    }
}
