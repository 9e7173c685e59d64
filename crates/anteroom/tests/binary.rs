//! The real `anteroom` binary: start-up, configuration precedence and
//! errors, the metrics endpoint of a fresh process, and SIGTERM shutdown.

mod support;

use std::time::{Duration, Instant};

use support::process::{Running, command, spawn};
use support::{Client, http_get, metric, wait_metric};

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn refuses(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = command(args, env).output().expect("run anteroom");
    assert!(!out.status.success(), "started despite bad configuration");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn capacity_of(running: &Running) -> u64 {
    let mut c = Client::connect(running.addr).await;
    c.hello("probe").await;
    c.recv_type("welcome").await["capacity"].as_u64().unwrap()
}

/// A configuration file of a test's own, removed when the test ends.
struct TempConfig(std::path::PathBuf);

impl std::ops::Deref for TempConfig {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_config(contents: &str) -> TempConfig {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("anteroom-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    TempConfig(path)
}

#[tokio::test]
async fn flag_beats_env_beats_file_beats_default() {
    let file = temp_config("max_active = 3\n");
    let file = file.to_str().unwrap();
    let default = spawn(&[], &[]);
    assert_eq!(capacity_of(&default).await, 1000);
    let from_file = spawn(&["--config", file], &[]);
    assert_eq!(capacity_of(&from_file).await, 3);
    let from_env_file = spawn(&[], &[("ANTEROOM_CONFIG", file)]);
    assert_eq!(capacity_of(&from_env_file).await, 3);
    let from_env = spawn(&["--config", file], &[("ANTEROOM_MAX_ACTIVE", "4")]);
    assert_eq!(capacity_of(&from_env).await, 4);
    let from_flag = spawn(
        &["--config", file, "--max-active", "5"],
        &[("ANTEROOM_MAX_ACTIVE", "4")],
    );
    assert_eq!(capacity_of(&from_flag).await, 5);
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let e = refuses(&["--max-active", "lots"], &[]);
    assert!(e.contains("max_active") && e.contains("lots"), "{e}");
    let e = refuses(&[], &[("ANTEROOM_IDLE_TIMEOUT", "soon")]);
    assert!(e.contains("idle_timeout") && e.contains("soon"), "{e}");
    let e = refuses(&["--listen", "not-an-address"], &[]);
    assert!(e.contains("listen") && e.contains("not-an-address"), "{e}");
    let file = temp_config("max_waiting = -1\n");
    let e = refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(e.contains("max_waiting") && e.contains("-1"), "{e}");
    let file = temp_config("colour = \"blue\"\n");
    let e = refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(e.contains("colour"), "{e}");
    let file = temp_config("slow_consumer = \"sometimes\"\n");
    let e = refuses(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        e.contains("slow_consumer") && e.contains("sometimes"),
        "{e}"
    );
    let e = refuses(&["--config", "/nonexistent/anteroom.toml"], &[]);
    assert!(e.contains("/nonexistent/anteroom.toml"), "{e}");
    let e = refuses(&["--bogus-flag"], &[]);
    assert!(e.contains("--bogus-flag"), "{e}");
}

/// Runs the binary expecting it to refuse `args` before it listens; returns
/// its standard error. A server that starts anyway is killed after a while
/// and fails the test.
fn refuses_before_listening(args: &[&str]) -> String {
    let mut child = command(args, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run anteroom");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "{args:?}: exit status {status}");
    assert!(
        !stdout.contains("listening on"),
        "{args:?}: listened before failing\n{stdout}\n{stderr}"
    );
    stderr
}

#[test]
fn extreme_values_stop_start_up_before_listening() {
    let at = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--web-listen",
        "",
    ];
    for (flag, value, key) in [
        ("--rate-limit", "1e-30", "rate_limit"),
        ("--handshake-timeout", "1ns", "handshake_timeout"),
        ("--idle-timeout", "1000years", "idle_timeout"),
        ("--shutdown-grace", "300years", "shutdown_grace"),
        ("--max-active", "18446744073709551615", "max_active"),
        (
            "--max-connections",
            "18446744073709551615",
            "max_connections",
        ),
        ("--outbox-limit", "18446744073709551615", "outbox_limit"),
    ] {
        let mut args = at.to_vec();
        args.extend([flag, value]);
        let e = refuses_before_listening(&args);
        assert!(e.contains(&format!("`{key}`")) && e.contains(value), "{e}");
    }
    // Each valid alone; together the token bucket would take 30,000 years to
    // refill, beyond the rate limiter's arithmetic.
    let mut args = at.to_vec();
    args.extend(["--rate-limit", "0.001", "--rate-burst", "1000000000"]);
    let e = refuses_before_listening(&args);
    assert!(e.contains("rate_burst") && e.contains("rate_limit"), "{e}");
}

#[tokio::test]
async fn every_required_series_exists_from_start_up() {
    let running = spawn(&["--max-active", "7"], &[]);
    let (status, body) = http_get(running.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    for state in ["handshake", "active", "waiting"] {
        let v = metric(&body, &format!("anteroom_connections{{state=\"{state}\"}}"));
        assert_eq!(v, Some(0.0), "connections {state}\n{body}");
    }
    assert_eq!(metric(&body, "anteroom_room_capacity"), Some(7.0));
    for topic in ["room", "presence", "queue"] {
        let v = metric(
            &body,
            &format!("anteroom_bus_published_total{{topic=\"{topic}\"}}"),
        );
        assert_eq!(v, Some(0.0), "published {topic}");
    }
    for component in ["room_delivery", "roster", "waitlist"] {
        let v = metric(
            &body,
            &format!("anteroom_subscriber_lag{{component=\"{component}\"}}"),
        );
        assert_eq!(v, Some(0.0), "lag {component}");
    }
    let dropped = metric(
        &body,
        "anteroom_subscribers_dropped_total{component=\"room_delivery\",reason=\"slow_consumer\"}",
    );
    assert_eq!(dropped, Some(0.0));
    assert_eq!(
        metric(&body, "anteroom_messages_delivered_total"),
        Some(0.0)
    );
    assert_eq!(metric(&body, "anteroom_promotions_total"), Some(0.0));
    for reason in [
        "server_full",
        "name_taken",
        "name_invalid",
        "rate_limited",
        "protocol_error",
    ] {
        let v = metric(
            &body,
            &format!("anteroom_rejected_total{{reason=\"{reason}\"}}"),
        );
        assert_eq!(v, Some(0.0), "rejected {reason}");
    }
    for histogram in [
        "anteroom_delivery_latency_seconds",
        "anteroom_queue_wait_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram}\n{body}"
        );
        assert_eq!(
            metric(&body, &format!("{histogram}_count")),
            Some(0.0),
            "{histogram}"
        );
    }
    assert_eq!(http_get(running.metrics_addr, "/healthz").await.0, 200);
    assert_eq!(http_get(running.metrics_addr, "/readyz").await.0, 200);
    assert_eq!(http_get(running.metrics_addr, "/nope").await.0, 404);
}

#[tokio::test]
async fn metrics_follow_traffic() {
    let running = spawn(&["--max-active", "1", "--max-waiting", "1"], &[]);
    let mut ann = Client::connect(running.addr).await;
    ann.hello("ann").await;
    ann.recv_type("welcome").await;
    let mut bob = Client::connect(running.addr).await;
    bob.hello("bob").await;
    bob.recv_type("queued").await;
    let mut cid = Client::connect(running.addr).await;
    cid.hello("cid").await;
    cid.expect_bye("server_full").await;
    let mut dan = Client::connect(running.addr).await;
    dan.hello("ann").await;
    dan.expect_error("name_taken").await;
    ann.say("hello").await;
    ann.recv_type("message").await;
    let m = running.metrics_addr;
    let eq = |want: f64| move |v: f64| v == want;
    wait_metric(m, "anteroom_connections{state=\"active\"}", eq(1.0)).await;
    wait_metric(m, "anteroom_connections{state=\"waiting\"}", eq(1.0)).await;
    wait_metric(m, "anteroom_connections{state=\"handshake\"}", eq(1.0)).await;
    wait_metric(
        m,
        "anteroom_rejected_total{reason=\"server_full\"}",
        eq(1.0),
    )
    .await;
    wait_metric(m, "anteroom_rejected_total{reason=\"name_taken\"}", eq(1.0)).await;
    wait_metric(m, "anteroom_bus_published_total{topic=\"room\"}", |v| {
        v >= 2.0
    })
    .await;
    wait_metric(m, "anteroom_bus_published_total{topic=\"presence\"}", |v| {
        v >= 3.0
    })
    .await;
    wait_metric(m, "anteroom_bus_published_total{topic=\"queue\"}", eq(1.0)).await;
    wait_metric(m, "anteroom_messages_delivered_total", |v| v >= 1.0).await;
    wait_metric(m, "anteroom_delivery_latency_seconds_count", |v| v >= 1.0).await;
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    bob.recv_type("welcome").await;
    wait_metric(m, "anteroom_promotions_total", eq(1.0)).await;
    wait_metric(m, "anteroom_queue_wait_seconds_count", eq(1.0)).await;
    wait_metric(m, "anteroom_connections{state=\"waiting\"}", eq(0.0)).await;
}

#[tokio::test]
async fn sigterm_says_goodbye_to_everyone_and_exits_zero_within_grace() {
    goodbye_on(nix::sys::signal::Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigint_says_goodbye_to_everyone_and_exits_zero_within_grace() {
    goodbye_on(nix::sys::signal::Signal::SIGINT).await;
}

async fn goodbye_on(signal: nix::sys::signal::Signal) {
    let mut running = spawn(&["--max-active", "1"], &[("ANTEROOM_SHUTDOWN_GRACE", "3s")]);
    let mut member = Client::connect(running.addr).await;
    member.hello("ann").await;
    member.recv_type("welcome").await;
    let mut queued = Client::connect(running.addr).await;
    queued.hello("bob").await;
    queued.recv_type("queued").await;
    let mut fresh = Client::connect(running.addr).await;
    fresh.send_type("ping", &[]).await;
    fresh.recv_type("pong").await;

    let pid = nix::unistd::Pid::from_raw(running.child().id() as i32);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, signal).unwrap();
    for c in [&mut member, &mut queued, &mut fresh] {
        let v = c.recv_type("bye").await;
        assert_eq!(v["reason"].as_str(), Some("shutdown"), "{v}");
        c.expect_closed().await;
    }
    let status = loop {
        if let Some(status) = running.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(4),
            "did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut child = command(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--web-listen",
            "",
            "--log-format",
            "json",
        ],
        &[],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let entry: serde_json::Value = serde_json::from_str(&first).expect("a JSON object per line");
    assert_eq!(entry["level"], "INFO", "{first}");
    assert!(
        entry["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("listening on 127.0.0.1:"),
        "{first}"
    );
    assert!(entry["timestamp"].is_string(), "{first}");
}
