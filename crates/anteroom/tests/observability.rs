//! Metrics as an operator sees them: a real broker under real traffic,
//! scraped and linted with `promtool`, then scraped by a real Prometheus that
//! must answer every query of the Grafana dashboard with data.
//!
//! The Prometheus tools come from Debian's `prometheus` package; when they
//! are missing these checks print why they were skipped (`.ci/run`
//! installs them, so CI always runs them).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::process::{Running, spawn};
use support::{Client, http_get, metric};

/// Finds a program on PATH. Under CI (`CI` set) a missing program is a
/// failure, not a skip: `.ci/run` installs it, so it must be there.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() && std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{name} is required under CI but not installed (apt-get install prometheus)");
    }
    found
}

/// Broker settings that make every kind of event easy to provoke.
fn start_broker() -> Running {
    spawn(
        &["--max-active", "3", "--max-waiting", "1"],
        &[
            ("ANTEROOM_OUTBOX_LIMIT", "256"),
            ("ANTEROOM_RATE_LIMIT", "20"),
            ("ANTEROOM_RATE_BURST", "10"),
            // A slow consumer is provoked by pings the client never reads,
            // thousands of them: more than a connection may send at once.
            ("ANTEROOM_REQUEST_RATE", "0"),
        ],
    )
}

/// A member that answers pings and reads everything, so it is never slow.
async fn reading_member(running: &Running, name: &str) -> tokio::task::JoinHandle<()> {
    let mut c = Client::connect(running.addr).await;
    c.hello(name).await;
    c.recv_type("welcome").await;
    tokio::spawn(async move {
        while let Some(v) = c.try_recv().await {
            if v["type"].as_str() == Some("ping") {
                c.send_type("pong", &[("id", v["id"].clone())]).await;
            }
        }
    })
}

/// Makes a member with a tiny receive window ask for pongs without reading
/// them, until its outbox overflows and the broker cuts it off as a slow
/// consumer.
async fn provoke_slow_consumer(running: &Running) {
    let mut slow = Client::connect_small(running.addr).await;
    slow.hello("slow").await;
    slow.recv_type("welcome").await;
    let ping = support::frame_of(&support::map(&[("type", "ping".into()), ("id", 1.into())]));
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 4096)
        .collect();
    let started = Instant::now();
    loop {
        let body = http_get(running.metrics_addr, "/metrics").await.1;
        let dropped = metric(
            &body,
            "anteroom_subscribers_dropped_total{component=\"room_delivery\",reason=\"slow_consumer\"}",
        );
        if dropped >= Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no slow consumer dropped"
        );
        if tokio::time::timeout(Duration::from_millis(200), slow.send_raw(&burst))
            .await
            .is_err()
        {
            // The server stopped reading from it: it has been cut off.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(slow);
    support::wait_metric(
        running.metrics_addr,
        "anteroom_connections{state=\"active\"}",
        |v| v == 0.0,
    )
    .await;
}

/// One round of everything a busy broker sees: chat, a promotion from the
/// queue, an abandoned queue place, refusals of every kind.
async fn traffic_round(running: &Running, round: usize) {
    let addr = running.addr;
    // The third seat: joins, talks, leaves while someone waits.
    let mut seat = Client::connect(addr).await;
    seat.hello(&format!("seat{round}")).await;
    let first = seat.recv().await;
    if first["type"].as_str() == Some("queued") {
        seat.recv_type("welcome").await;
    }
    let mut waiter = Client::connect(addr).await;
    waiter.hello(&format!("wait{round}")).await;
    waiter.recv_type("queued").await;
    let mut full = Client::connect(addr).await;
    full.hello(&format!("full{round}")).await;
    full.expect_bye("server_full").await;
    for i in 0..5 {
        seat.say(&format!("round {round} message {i}")).await;
    }
    seat.send_type("bye", &[]).await;
    waiter.recv_type("welcome").await;
    // The next one waits, then gives up.
    let mut quitter = Client::connect(addr).await;
    quitter.hello(&format!("quit{round}")).await;
    quitter.recv_type("queued").await;
    drop(quitter);
    // Refusals.
    let mut rude = Client::connect(addr).await;
    rude.hello("ann").await;
    rude.expect_error("name_taken").await;
    rude.hello("").await;
    rude.expect_error("name_invalid").await;
    rude.send_raw(&0u32.to_be_bytes()).await;
    rude.expect_error("bad_frame").await;
    rude.expect_bye("protocol_error").await;
    // Over the 10-message burst: some are refused as rate_limited.
    let mut burst = Vec::new();
    let fast = support::frame_of(&support::map(&[
        ("type", "say".into()),
        ("text", "fast".into()),
    ]));
    for _ in 0..15 {
        burst.extend_from_slice(&fast);
    }
    // Read while writing: the waiter must not itself become a slow consumer.
    let (mut rx, mut tx) = waiter.stream.into_split();
    let writer = tokio::spawn(async move {
        tokio::io::AsyncWriteExt::write_all(&mut tx, &burst)
            .await
            .unwrap();
        tx
    });
    loop {
        let v = support::read_frame(&mut rx)
            .await
            .expect("waiter still connected");
        if v["code"].as_str() == Some("rate_limited") {
            break;
        }
    }
    drop(writer.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_pass_promtool() {
    let running = start_broker();
    provoke_slow_consumer(&running).await;
    let _ann = reading_member(&running, "ann").await;
    let _bob = reading_member(&running, "bob").await;
    traffic_round(&running, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = http_get(running.metrics_addr, "/metrics").await.1;
    let at_least = |series: &str, min: f64| {
        let v = metric(&body, series).unwrap_or_else(|| panic!("{series} missing\n{body}"));
        assert!(v >= min, "{series} = {v}, expected >= {min}");
    };
    at_least("anteroom_connections{state=\"active\"}", 2.0);
    at_least("anteroom_room_capacity", 3.0);
    at_least("anteroom_bus_published_total{topic=\"room\"}", 5.0);
    at_least("anteroom_bus_published_total{topic=\"presence\"}", 6.0);
    at_least("anteroom_bus_published_total{topic=\"queue\"}", 3.0);
    at_least("anteroom_messages_delivered_total", 10.0);
    at_least("anteroom_delivery_latency_seconds_count", 10.0);
    at_least("anteroom_queue_wait_seconds_count", 1.0);
    at_least("anteroom_promotions_total", 1.0);
    at_least("anteroom_queue_abandoned_total", 1.0);
    at_least(
        "anteroom_subscribers_dropped_total{component=\"room_delivery\",reason=\"slow_consumer\"}",
        1.0,
    );
    for reason in [
        "server_full",
        "name_taken",
        "name_invalid",
        "rate_limited",
        "protocol_error",
    ] {
        at_least(
            &format!("anteroom_rejected_total{{reason=\"{reason}\"}}"),
            1.0,
        );
    }
    for component in ["room_delivery", "roster", "waitlist"] {
        at_least(
            &format!("anteroom_subscriber_lag{{component=\"{component}\"}}"),
            0.0,
        );
    }

    let Some(promtool) = find_program("promtool") else {
        println!("skipped promtool check: promtool not found (apt-get install prometheus)");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_passes_promtool() {
    let Some(promtool) = find_program("promtool") else {
        println!("skipped: promtool not found (apt-get install prometheus)");
        return;
    };
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prometheus/prometheus.yml");
    let out = Command::new(promtool)
        .arg("check")
        .arg("config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `expr` in the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana/dashboards/anteroom.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "20s")
                    .replace("$__interval", "5s")
                    .replace("$__range", "1m")
                    // The deployment and node selectors, at "All".
                    .replace("$job", ".*")
                    .replace("$instance", ".*");
                queries.push((title.clone(), expr));
            }
        }
    }
    assert!(queries.len() >= 10, "dashboard has too few queries");
    queries
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let Some(prometheus) = find_program("prometheus") else {
        println!("skipped: prometheus not found (apt-get install prometheus)");
        return;
    };
    let queries = dashboard_queries();
    let running = start_broker();
    let dir = std::env::temp_dir().join(format!("anteroom-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: anteroom\n    static_configs:\n      - targets: [\"{}\"]\n",
            running.metrics_addr
        ),
    )
    .unwrap();
    let port = free_port();
    let prom_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _prometheus = KillOnDrop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // Traffic in the background for the whole run.
    provoke_slow_consumer(&running).await;
    let _ann = reading_member(&running, "ann").await;
    let _bob = reading_member(&running, "bob").await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let addr = running.addr;
        let metrics_addr = running.metrics_addr;
        tokio::spawn(async move {
            let running = Running::borrowed(addr, metrics_addr);
            let mut round = 1;
            while !stop.load(Ordering::Relaxed) {
                traffic_round(&running, round).await;
                round += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Until every query has data, or the deadline passes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures;
    tokio::time::sleep(Duration::from_secs(6)).await;
    loop {
        failures = Vec::new();
        for (title, expr) in &queries {
            let encoded =
                percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC);
            let (status, body) =
                http_get(prom_addr, &format!("/api/v1/query?query={encoded}")).await;
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let results = answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let numeric = results.iter().any(|r| {
                r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            if status != 200 || answer["status"] != "success" || !numeric {
                failures.push(format!("{title}: {expr} -> {status} {body}"));
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "queries without data:\n{}",
        failures.join("\n")
    );
    println!("all {} dashboard queries returned data", queries.len());
}
