//! The broker under test: started by the bench (so its CPU time and memory
//! can be read from /proc) or already running elsewhere.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use crate::cpu::Pinning;
use crate::transport::Transport;
use anyhow::{Context, bail};

/// Which broker is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Broker {
    Anteroom,
    /// Redis Pub/Sub on one channel (`redis-server` from the system).
    Redis,
    /// NATS core on one subject (`nats-server` from the system).
    Nats,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Broker::Anteroom => "anteroom",
            Broker::Redis => "redis",
            Broker::Nats => "nats",
        }
    }
}

/// Settings every `anteroom serve` the bench starts gets before the
/// workload's own (which win): its clients come from a handful of loopback
/// addresses, join and leave and send at rates no person would, and ask
/// `who` thousands of times in the soak. The limits against such abuse from
/// one host are therefore off; what is measured is the broker.
pub const LOAD_GENERATOR_SETTINGS: &[(&str, &str)] = &[
    ("ANTEROOM_MAX_CONNECTIONS_PER_IP", "0"),
    ("ANTEROOM_CONNECTION_RATE_PER_IP", "0"),
    ("ANTEROOM_JOIN_RATE", "0"),
    ("ANTEROOM_REQUEST_RATE", "0"),
    ("ANTEROOM_WHO_RATE", "0"),
];

/// A broker the bench talks to.
pub struct ServerUnderTest {
    /// The plain TCP listener.
    pub addr: SocketAddr,
    /// The TLS listener of an anteroom started with `ANTEROOM_TLS_LISTEN`.
    pub tls_addr: Option<SocketAddr>,
    /// The QUIC listener of an anteroom started with `ANTEROOM_QUIC_LISTEN`.
    pub quic_addr: Option<SocketAddr>,
    /// The web listener (WebSocket at `/ws`) of an anteroom started with
    /// `ANTEROOM_WEB_LISTEN`.
    pub web_addr: Option<SocketAddr>,
    pub broker: Broker,
    /// The metrics listener of an anteroom the bench started.
    pub metrics_addr: Option<SocketAddr>,
    /// What the server logged at ERROR level, and any panic it reported: a
    /// bug, whatever the load.
    pub log_errors: Arc<Mutex<LogErrors>>,
    /// Whether the server runs on a CPU of its own (`--pin`).
    pub pinned: bool,
    child: Option<Child>,
    /// In a cluster: the other nodes, then Redis. Their CPU and memory
    /// count with this node's.
    peers: Vec<ServerUnderTest>,
}

/// ERROR lines and panics in a server's output: how many, and the first few.
#[derive(Debug, Clone, Default)]
pub struct LogErrors {
    pub count: u64,
    pub first: Vec<String>,
}

/// CPU time and memory of the server process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl ServerUnderTest {
    /// Uses `addr` if given, otherwise starts `anteroom serve` with `settings`
    /// (`ANTEROOM_*` variables) on a free loopback port, on the server's CPU
    /// if `pinning` says so.
    pub fn start(
        addr: Option<SocketAddr>,
        settings: &[(&str, String)],
        pinning: Option<Pinning>,
    ) -> anyhow::Result<Self> {
        if let Some(addr) = addr {
            return Ok(Self {
                addr,
                tls_addr: None,
                quic_addr: None,
                web_addr: None,
                broker: Broker::Anteroom,
                metrics_addr: None,
                log_errors: Default::default(),
                pinned: false,
                child: None,
                peers: Vec::new(),
            });
        }
        let exe = std::env::current_exe().context("locating the anteroom executable")?;
        // The web listener is off unless asked for (WebSocket runs).
        let web_listen = settings
            .iter()
            .find(|(key, _)| *key == "ANTEROOM_WEB_LISTEN")
            .map_or("", |(_, value)| value.as_str());
        let mut command = Pinning::command(pinning, exe);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--web-listen",
                web_listen,
            ])
            .env("RUST_LOG", "warn,anteroom_broker::server=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only the settings given here: nothing inherited from the shell.
        for (key, _) in std::env::vars() {
            if key.starts_with("ANTEROOM_") {
                command.env_remove(key);
            }
        }
        // The chat log in memory unless a setting asks for a store.
        command.env("ANTEROOM_STORE", "memory");
        for (key, value) in LOAD_GENERATOR_SETTINGS {
            command.env(key, value);
        }
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut child = command.spawn().context(if pinning.is_some() {
            "starting taskset (util-linux) with anteroom serve"
        } else {
            "starting anteroom serve"
        })?;
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let log_errors: Arc<Mutex<LogErrors>> = Default::default();
        let note = {
            let errors = log_errors.clone();
            move |line: &str| {
                let mut errors = lock(&errors);
                errors.count += 1;
                if errors.first.len() < 5 {
                    errors.first.push(line.to_string());
                }
            }
        };
        let note_panic = note.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" ERROR ") {
                    note(&line);
                }
                let _ = tx.send(line);
            }
        });
        // Panics go to standard error; it is passed on as it comes.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("panicked at") {
                    note_panic(&line);
                }
                eprintln!("{line}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let asked = |key: &str| settings.iter().any(|(k, v)| *k == key && !v.is_empty());
        let (want_tls, want_quic) = (asked("ANTEROOM_TLS_LISTEN"), asked("ANTEROOM_QUIC_LISTEN"));
        let want_web = !web_listen.is_empty();
        let (mut addr, mut metrics_addr, mut tls_addr, mut quic_addr) = (None, None, None, None);
        let mut web_addr = None;
        // The lines come at start-up: chat, metrics, then TLS, QUIC and web.
        while addr.is_none()
            || metrics_addr.is_none()
            || (want_tls && tls_addr.is_none())
            || (want_quic && quic_addr.is_none())
            || (want_web && web_addr.is_none())
        {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("the server did not report its addresses")?;
            let after = |marker: &str| -> anyhow::Result<Option<SocketAddr>> {
                match line.split_once(marker) {
                    Some((_, rest)) => Ok(Some(
                        rest.split_whitespace().next().unwrap_or_default().parse()?,
                    )),
                    None => Ok(None),
                }
            };
            if let Some(a) = after("listening on ")? {
                addr = Some(a);
            } else if let Some(a) = after("metrics on ")? {
                metrics_addr = Some(a);
            } else if let Some(a) = after("TLS on ")? {
                tls_addr = Some(a);
            } else if let Some(a) = after("QUIC on ")? {
                quic_addr = Some(a);
            } else if let Some((_, rest)) = line.split_once("web client on http://") {
                // `web client on http://ADDR/`
                let a = rest.split(['/', ' ']).next().unwrap_or_default();
                web_addr = Some(a.parse().context("the web listener's address")?);
            }
        }
        Ok(Self {
            addr: addr.context("chat address")?,
            tls_addr,
            quic_addr,
            web_addr,
            broker: Broker::Anteroom,
            metrics_addr,
            log_errors,
            pinned: pinning.is_some(),
            child: Some(child),
            peers: Vec::new(),
        })
    }

    /// Starts Redis or NATS from the system's packages on a free loopback
    /// port, with settings that make it comparable (no persistence, enough
    /// clients), on the server's CPU if `pinning` says so, and waits until
    /// it accepts connections.
    pub fn start_external(broker: Broker, pinning: Option<Pinning>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let (program, args): (&str, Vec<String>) = match broker {
            Broker::Redis => (
                "redis-server",
                [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--maxclients",
                    "100000",
                    "--protected-mode",
                    "no",
                    "--loglevel",
                    "warning",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            Broker::Nats => (
                "nats-server",
                ["-a", "127.0.0.1", "-p", &port.to_string()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            Broker::Anteroom => bail!("start anteroom with ServerUnderTest::start"),
        };
        let child = Pinning::command(pinning, program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| match pinning {
                None => format!("starting {program} (install Debian's {program} package)"),
                Some(_) => format!("starting taskset (util-linux) with {program}"),
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("{program} did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            addr,
            tls_addr: None,
            quic_addr: None,
            web_addr: None,
            broker,
            metrics_addr: None,
            log_errors: Default::default(),
            pinned: pinning.is_some(),
            child: Some(child),
            peers: Vec::new(),
        })
    }

    /// A cluster of `nodes` (anteroom processes sharing `redis`), measured
    /// as one server: CPU and memory are the sum over every process.
    pub fn cluster(
        mut nodes: Vec<ServerUnderTest>,
        redis: ServerUnderTest,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!nodes.is_empty(), "a cluster needs a node");
        let mut first = nodes.remove(0);
        first.peers = nodes;
        first.peers.push(redis);
        Ok(first)
    }

    /// Starts `nodes` anteroom nodes with `settings` as one cluster over a
    /// `redis-server` of its own, unpinned (the nodes share the machine),
    /// measured as one server.
    pub fn start_cluster(nodes: usize, settings: &[(&str, String)]) -> anyhow::Result<Self> {
        let redis = ServerUnderTest::start_external(Broker::Redis, None)?;
        let url = format!("redis://{}", redis.addr);
        let mut started = Vec::new();
        for i in 0..nodes {
            let mut settings = settings.to_vec();
            settings.push(("ANTEROOM_CLUSTER_REDIS", url.clone()));
            settings.push(("ANTEROOM_NODE_ID", format!("node-{i}")));
            started.push(ServerUnderTest::start(None, &settings, None)?);
        }
        ServerUnderTest::cluster(started, redis)
    }

    /// The chat addresses of every node (one on a single node).
    pub fn nodes(&self) -> Vec<SocketAddr> {
        std::iter::once(self.addr)
            .chain(
                self.peers
                    .iter()
                    .filter(|p| p.broker == Broker::Anteroom)
                    .map(|p| p.addr),
            )
            .collect()
    }

    /// Redis's CPU time now, in a cluster.
    pub fn redis_cpu(&self) -> Option<CpuReading> {
        self.peers
            .iter()
            .find(|p| p.broker == Broker::Redis)
            .and_then(ServerUnderTest::cpu)
    }

    /// Where clients reach the server over `transport`.
    pub fn addr_of(&self, transport: Transport) -> anyhow::Result<SocketAddr> {
        match transport {
            Transport::Tcp => Ok(self.addr),
            Transport::Tls => self.tls_addr.context("the server has no TLS listener"),
            Transport::Quic => self.quic_addr.context("the server has no QUIC listener"),
            Transport::Ws => self.web_addr.context("the server has no web listener"),
        }
    }

    /// Whether the bench owns the process (and can measure it).
    pub fn measurable(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, when the bench started the server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's CPU time and memory now (zero when not measurable).
    pub fn usage(&self) -> Usage {
        let Some(child) = &self.child else {
            return Usage::default();
        };
        let mut usage = read_usage(child.id()).unwrap_or_default();
        for peer in &self.peers {
            let other = peer.usage();
            usage.cpu_seconds += other.cpu_seconds;
            usage.rss_bytes += other.rss_bytes;
            usage.peak_rss_bytes += other.peak_rss_bytes;
        }
        usage
    }

    /// The server's CPU time now, for [`CpuReading::since`]; `None` when the
    /// bench did not start it.
    pub fn cpu(&self) -> Option<CpuReading> {
        let mut reading = CpuReading::of(self.pid()?)?;
        for peer in &self.peers {
            let other = peer.cpu()?;
            reading.total_s += other.total_s;
            reading.threads_s = reading.threads_s.zip(other.threads_s).map(|(a, b)| a + b);
        }
        Some(reading)
    }

    /// Stops the server with SIGTERM, then waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        for peer in std::mem::take(&mut self.peers) {
            peer.stop()?;
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("the server did not stop within 10 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process's CPU time read two ways: the process total from
/// /proc/PID/stat (utime + stime, every thread that ever ran, in 10 ms
/// ticks), and the sum of its live threads' run time from
/// /proc/PID/task/*/schedstat (nanoseconds, but a thread that ends takes its
/// time out of the sum).
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    total_s: f64,
    threads_s: Option<f64>,
}

impl CpuReading {
    /// Reads `pid`'s CPU time now.
    pub fn of(pid: u32) -> Option<Self> {
        let total_s = read_usage(pid)?.cpu_seconds;
        Some(Self {
            total_s,
            threads_s: threads_cpu_seconds(pid),
        })
    }

    /// CPU seconds from `before` to this reading: the threads' sum, to the
    /// nanosecond, when it agrees with the process total within the latter's
    /// resolution; the total when they disagree (a thread ended between the
    /// readings) or the sum cannot be read. Short rounds of a fast broker use
    /// a few ticks of CPU, where ticks alone would be too coarse.
    pub fn since(&self, before: &CpuReading) -> f64 {
        let total = (self.total_s - before.total_s).max(0.0);
        // utime and stime are each cut to whole ticks, in both readings.
        let resolution = 3.0 / clock_ticks();
        match (self.threads_s, before.threads_s) {
            (Some(after), Some(before)) if ((after - before) - total).abs() <= resolution => {
                (after - before).max(0.0)
            }
            _ => total,
        }
    }
}

/// The sum of the run time of `pid`'s live threads, in seconds.
fn threads_cpu_seconds(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let mut path = task.ok()?.path();
        path.push("schedstat");
        // A thread that ended since the listing counts nothing.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// Clock ticks per second, the unit of /proc/PID/stat's times.
fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Reads utime + stime and VmRSS/VmHWM of a process from /proc.
pub fn read_usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Usage {
        cpu_seconds: (utime + stime) as f64 / ticks,
        rss_bytes: kb("VmRSS:") * 1024,
        peak_rss_bytes: kb("VmHWM:") * 1024,
    })
}
