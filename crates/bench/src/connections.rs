//! Connections: C idle connections held open, most of them queued when
//! `--max-active` is far below C. Reports the connect rate (connections
//! ready, i.e. answered `welcome` or `queued`, per second from the first
//! connect to the last answer), the time each connection took to be ready,
//! the CPU both processes spent per connection, and the server's memory per
//! connection (resident set growth divided by C).
//!
//! Over TLS and QUIC the connect rate is a handshake rate: with
//! `--concurrency` at C every connect starts at once, and each is a full
//! handshake (no session resumption), then `hello` and its answer. Over
//! WebSocket it is the rate of TCP connects, HTTP upgrades and joins, the
//! join done on raw frames (see [`crate::ws`]).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::cpu::{PinArgs, Pinning, own_cpu_seconds};
use super::server::{Broker, ServerUnderTest};
use super::transport::{
    Dialer, HANDSHAKE_TIMEOUT, Stream, TestCertificate, Transport, plan, udp_receive_buffer_errors,
};
use super::{ms, progress};
use anteroom_client::protocol::Features;
use anteroom_client::transport::{BoxRead, BoxWrite};
use anteroom_client::{Admission, AnyConnection, Connection};

/// Connections workload settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to hold (C).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Room capacity; the rest wait in the queue.
    #[arg(long, default_value_t = 1000)]
    pub max_active: usize,
    /// Every connection a member: the room's capacity above the connection
    /// count (overrides `--max-active`). The storm of joins is then one of
    /// rosters and `joined` frames.
    #[arg(long)]
    pub all_members: bool,
    /// Version 1.1 features the anteroom clients ask for (for example
    /// `presence_batch`); none by default.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// How long to hold them once all are connected before the server's
    /// memory is read.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Then how much longer to hold them idle before reading the memory
    /// again (0: no second reading): what the server gives back after a
    /// storm.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Use a running anteroom instead of starting one.
    #[arg(long)]
    pub server: Option<std::net::SocketAddr>,
    /// Which broker to measure (`all`: anteroom, Redis and NATS in turn).
    #[arg(long, default_value = "anteroom")]
    pub broker: super::fanout::BrokerChoice,
    /// How the clients reach anteroom: tcp, tls, quic or ws, or several
    /// separated by commas, run in turn (Redis and NATS: tcp only).
    #[arg(long, value_delimiter = ',', default_value = "tcp")]
    pub transport: Vec<Transport>,
    #[command(flatten)]
    pub cpu: PinArgs,
}

/// One connections run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub broker: &'static str,
    /// How the clients reached the broker: `tcp`, `tls`, `quic` or `ws`.
    pub transport: &'static str,
    pub connections: usize,
    /// Connects in flight at once.
    pub concurrency: usize,
    pub in_room: usize,
    pub queued: usize,
    /// Connections that failed (an error, or no answer within the
    /// handshake timeout); the other figures are of those held.
    pub failed: usize,
    /// Connections ready (anteroom: `welcome` or `queued` received) per
    /// second, from the first connect to the last answer.
    pub connect_per_s: f64,
    /// Time one connection took from its connect to ready, median and
    /// 99th percentile.
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    /// CPU per connection held, over the connect phase (failed attempts
    /// included): the bench's own (its handshakes) and the server's; the
    /// latter null when the bench did not start it.
    pub loadgen_cpu_us_per_connection: Option<f64>,
    pub server_cpu_us_per_connection: Option<f64>,
    /// UDP datagrams dropped for a full socket receive buffer during the
    /// connect phase, machine-wide (QUIC's lost packets).
    pub udp_receive_buffer_errors: Option<u64>,
    /// Seconds from the first connect to the last connection ready: with
    /// `--all-members`, the time for the whole room to be ready.
    pub ready_s: f64,
    /// The version 1.1 features the anteroom clients asked for.
    pub features: Vec<String>,
    pub server_rss_before_mb: f64,
    /// Read `--hold` after the last connection was ready.
    pub server_rss_after_mb: f64,
    pub bytes_per_connection: f64,
    /// Read again after `--idle` more (null without it).
    pub server_rss_idle_mb: Option<f64>,
    pub bytes_per_connection_idle: Option<f64>,
    /// Server and load generator on a CPU each (`--pin`).
    pub pinned: bool,
}

/// Runs the connections workload on each chosen broker and transport.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let runs = plan(args.broker, &args.transport, args.server.is_some())?;
    let pinning = args.cpu.apply()?;
    for (broker, transport) in runs {
        run_broker(&args, broker, transport, pinning).await?;
    }
    Ok(())
}

/// An established idle connection to any of the brokers.
enum Held {
    /// Anteroom over TLS or QUIC.
    Encrypted(#[allow(dead_code)] AnyConnection),
    Raw(#[allow(dead_code)] tokio::net::TcpStream),
    /// Anteroom over plain TCP, read by a task that discards what it is
    /// sent (the room's `joined` frames), as a real client reads them.
    Draining(#[allow(dead_code)] Drain),
}

/// The task reading a member's connection; ended with the connection.
struct Drain(tokio::task::AbortHandle);

impl Drop for Drain {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `type` of an anteroom frame's payload, read without decoding the
/// rest (a `welcome` may list thousands of names): anteroom encodes it as
/// the first key.
fn frame_type(payload: &[u8]) -> Option<&str> {
    let mut cursor = payload;
    rmp::decode::read_map_len(&mut cursor).ok()?;
    let (key, rest) = rmp::decode::read_str_from_slice(cursor).ok()?;
    if key != "type" {
        return None;
    }
    rmp::decode::read_str_from_slice(rest)
        .ok()
        .map(|(kind, _)| kind)
}

/// Payload bytes enough to read a frame's `type`.
const PEEK: usize = 64;

/// Reads the types of the frames in a byte stream, keeping no more of each
/// than its first bytes: a `welcome` of a large room is skipped, not
/// buffered.
#[derive(Default)]
struct Skimmer {
    /// The current frame's length prefix and first payload bytes.
    head: Vec<u8>,
    /// Bytes of the current frame still to come, already judged.
    skip: usize,
}

impl Skimmer {
    /// Takes the next bytes read; `Some` once a `welcome` (true) or
    /// `queued` (false) has been seen, an error for `bye` or `error`.
    fn feed(&mut self, mut data: &[u8]) -> anyhow::Result<Option<bool>> {
        use anteroom_client::protocol::ServerMessage;
        while !data.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(data.len());
                self.skip -= k;
                data = &data[k..];
                continue;
            }
            let take = (self.wanted() - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < self.wanted() {
                continue;
            }
            let payload = &self.head[4..];
            let answer = match frame_type(payload) {
                Some("welcome") => Some(true),
                Some("queued") => Some(false),
                Some("bye" | "error") => {
                    anyhow::bail!("refused: {:?}", ServerMessage::decode(payload))
                }
                _ => None,
            };
            self.skip = 4 + self.len() - self.head.len();
            self.head.clear();
            if answer.is_some() {
                return Ok(answer);
            }
        }
        Ok(None)
    }

    fn len(&self) -> usize {
        u32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]) as usize
    }

    /// How much of the current frame to hold before judging it: its first
    /// bytes, or all of a `bye` or `error` (to tell why).
    fn wanted(&self) -> usize {
        if self.head.len() < 4 {
            return 4;
        }
        let peek = 4 + self.len().min(PEEK);
        let refusal =
            self.head.len() >= peek && matches!(frame_type(&self.head[4..]), Some("bye" | "error"));
        if refusal { 4 + self.len() } else { peek }
    }
}

/// Joins anteroom over plain TCP on raw frames, so that the load generator
/// spends on a `welcome` what a read of its bytes costs and no more: sends
/// `hello` and reads frames until `welcome` (true) or `queued` (false).
/// What follows is read and discarded by a task of its own.
async fn raw_join(
    mut stream: tokio::net::TcpStream,
    name: &str,
    features: &[String],
) -> anyhow::Result<(Held, bool)> {
    use anteroom_client::protocol::ClientMessage;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hello = ClientMessage::Hello {
        name: name.into(),
        features: (!features.is_empty())
            .then(|| features.iter().map(|f| f.as_str().into()).collect()),
        last_id: None,
        resume: None,
    };
    stream.write_all(&hello.to_frame()).await?;
    let mut skimmer = Skimmer::default();
    let welcomed = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection before welcome");
            if let Some(answer) = skimmer.feed(&chunk[..n])? {
                return Ok(answer);
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer to hello within {HANDSHAKE_TIMEOUT:?}"))??;
    let task = tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
    });
    Ok((Held::Draining(Drain(task.abort_handle())), welcomed))
}

/// Opens one connection and completes the broker's handshake, so that the
/// server holds a real client: the transport's handshake and `hello` for
/// anteroom, `PING` for Redis, `CONNECT` and `PING` for NATS (answered by
/// `PONG`). Returns the connection, whether it entered the room, how long
/// it took, and when it was ready.
async fn open(
    broker: Broker,
    dialer: &Dialer,
    i: usize,
    features: &[String],
) -> anyhow::Result<(Held, bool, Duration, Instant)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let stream = dialer.connect(i).await?;
    match broker {
        Broker::Anteroom => {
            let name = format!("c{i:06}");
            let (held, admission) = match stream {
                Stream::Tcp(stream) => {
                    let (held, welcomed) = raw_join(stream, &name, features).await?;
                    return Ok((held, welcomed, started.elapsed(), Instant::now()));
                }
                Stream::Ws(mut stream, read) => {
                    let (welcomed, _) = crate::ws::join(&mut stream, read, &name).await?;
                    return Ok((
                        Held::Raw(stream),
                        welcomed,
                        started.elapsed(),
                        Instant::now(),
                    ));
                }
                Stream::Tls(tls) => {
                    let (read, write) = tokio::io::split(*tls);
                    encrypted(Box::new(read), Box::new(write), &name, features).await?
                }
                Stream::Quic(send, recv) => {
                    encrypted(Box::new(recv), Box::new(send), &name, features).await?
                }
            };
            let welcomed = matches!(admission, Admission::Welcome { .. });
            Ok((held, welcomed, started.elapsed(), Instant::now()))
        }
        Broker::Redis | Broker::Nats => {
            let Stream::Tcp(mut stream) = stream else {
                anyhow::bail!("Redis and NATS are reached over plain TCP only");
            };
            let probe: &[u8] = if broker == Broker::Redis {
                b"PING\r\n"
            } else {
                b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n"
            };
            stream.write_all(probe).await?;
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            while !seen.windows(4).any(|w| w == b"PONG") {
                let n = stream.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "{} closed connection {i}", broker.name());
                seen.extend_from_slice(&buf[..n]);
            }
            Ok((Held::Raw(stream), true, started.elapsed(), Instant::now()))
        }
    }
}

/// Joins anteroom over an encrypted stream's halves.
async fn encrypted(
    read: BoxRead,
    write: BoxWrite,
    name: &str,
    features: &[String],
) -> anyhow::Result<(Held, Admission)> {
    let mut connection = Connection::builder()
        .join_timeout(HANDSHAKE_TIMEOUT)
        .features(Features::from_names(features.iter().map(String::as_str)))
        .from_halves(read, write);
    let admission = connection.join(name).await?;
    Ok((Held::Encrypted(connection), admission))
}

async fn run_broker(
    args: &Args,
    broker: Broker,
    transport: Transport,
    pinning: Option<Pinning>,
) -> anyhow::Result<()> {
    let limit = super::raise_fd_limit() as usize;
    // A QUIC connection is no descriptor of its own: its endpoint's socket
    // carries it.
    anyhow::ensure!(
        transport == Transport::Quic || args.connections + 64 <= limit,
        "{} connections need more descriptors than this process may hold ({limit})",
        args.connections
    );
    // Declared before the server, so that it goes after it.
    let certificate = transport
        .encrypted()
        .then(TestCertificate::new)
        .transpose()?;
    let server = match broker {
        Broker::Anteroom => {
            let max_active = if args.all_members {
                args.connections + 1
            } else {
                args.max_active
            };
            let mut settings = vec![
                ("ANTEROOM_MAX_ACTIVE", max_active.to_string()),
                ("ANTEROOM_MAX_WAITING", args.connections.to_string()),
                ("ANTEROOM_HEARTBEAT_INTERVAL", "1h".into()),
                ("ANTEROOM_IDLE_TIMEOUT", "2h".into()),
                (
                    "ANTEROOM_HANDSHAKE_TIMEOUT",
                    format!("{}s", HANDSHAKE_TIMEOUT.as_secs()),
                ),
            ];
            if let Some(certificate) = &certificate {
                settings.extend(certificate.server_settings(transport));
            }
            settings.extend(transport.plain_settings());
            ServerUnderTest::start(args.server, &settings, pinning)?
        }
        other => ServerUnderTest::start_external(other, pinning)?,
    };
    let dialer = std::sync::Arc::new(Dialer::new(
        transport,
        server.addr_of(transport)?,
        certificate.as_ref(),
        args.connections,
    )?);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.usage();
    let cpu_before = server.cpu();
    let own_before = own_cpu_seconds();
    let udp_before = udp_receive_buffer_errors();
    let bar = progress(args.connections as u64, "connecting");
    let concurrency = args.concurrency as usize;
    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = semaphore.clone().acquire_owned().await?;
        let bar = bar.clone();
        let dialer = dialer.clone();
        let features = args.features.clone();
        tasks.push(tokio::spawn(async move {
            let held = open(broker, &dialer, i, &features).await;
            drop(permit);
            bar.inc(1);
            held
        }));
    }
    let mut held = Vec::with_capacity(args.connections);
    let mut in_room = 0;
    let mut took = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut failed, mut first_failure) = (0, None);
    let mut last_ready = Duration::ZERO;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await? {
            Ok((connection, welcomed, time, ready)) => {
                in_room += usize::from(welcomed);
                let _ = took.record((time.as_micros() as u64).max(1));
                last_ready = last_ready.max(ready.saturating_duration_since(started));
                held.push(connection);
            }
            // A burst may lose some: counted, and the first reason told.
            Err(error) => {
                failed += 1;
                first_failure.get_or_insert_with(|| format!("connection {i}: {error:#}"));
            }
        }
    }
    bar.finish_and_clear();
    if let Some(reason) = first_failure {
        eprintln!(
            "{} over {}: {failed} of {} connections failed; the first: {reason}",
            broker.name(),
            transport.name(),
            args.connections
        );
        anyhow::ensure!(
            !held.is_empty(),
            "no connection to {} over {} succeeded",
            broker.name(),
            transport.name()
        );
    }
    let connected = held.len();
    let own_cpu = own_cpu_seconds() - own_before;
    let server_cpu = match (cpu_before, server.cpu()) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let udp_drops = match (udp_before, udp_receive_buffer_errors()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    tokio::time::sleep(args.hold).await;
    let after = server.usage();
    let idle = if args.idle.is_zero() {
        None
    } else {
        tokio::time::sleep(args.idle).await;
        Some(server.usage())
    };
    let grown = |rss: u64| rss.saturating_sub(before.rss_bytes) as f64 / connected as f64;
    let per_connection =
        |cpu_s: f64| (connected > 0 && cpu_s > 0.0).then(|| cpu_s * 1e6 / connected as f64);
    let report = Report {
        workload: "connections",
        broker: broker.name(),
        transport: transport.name(),
        connections: args.connections,
        concurrency,
        in_room,
        queued: connected - in_room,
        failed,
        connect_per_s: connected as f64 / last_ready.as_secs_f64().max(1e-6),
        connect_p50_ms: took.value_at_quantile(0.5) as f64 / 1000.0,
        connect_p99_ms: took.value_at_quantile(0.99) as f64 / 1000.0,
        loadgen_cpu_us_per_connection: per_connection(own_cpu),
        server_cpu_us_per_connection: server_cpu.and_then(per_connection),
        udp_receive_buffer_errors: udp_drops,
        ready_s: last_ready.as_secs_f64(),
        features: if broker == Broker::Anteroom {
            args.features.clone()
        } else {
            Vec::new()
        },
        server_rss_before_mb: before.rss_bytes as f64 / 1e6,
        server_rss_after_mb: after.rss_bytes as f64 / 1e6,
        bytes_per_connection: grown(after.rss_bytes),
        server_rss_idle_mb: idle.as_ref().map(|u| u.rss_bytes as f64 / 1e6),
        bytes_per_connection_idle: idle.as_ref().map(|u| grown(u.rss_bytes)),
        pinned: server.pinned,
    };
    println!(
        "connections on {} over {}{}{} ({}): {} held ({} in the room, {} queued, {} failed), {:.0} ready/s with {} in flight, all ready in {:.2} s (each p50 {} ms, p99 {} ms; CPU per connection: server {} µs, load generator {} µs), server RSS {:.1} MB -> {:.1} MB, {:.0} bytes per connection{}{}",
        report.broker,
        report.transport,
        dialer
            .protection()
            .map_or_else(String::new, |p| format!(" ({p})")),
        if report.features.is_empty() {
            String::new()
        } else {
            format!(" with {}", report.features.join(","))
        },
        Pinning::describe(pinning),
        connected,
        report.in_room,
        report.queued,
        report.failed,
        report.connect_per_s,
        report.concurrency,
        report.ready_s,
        ms((report.connect_p50_ms * 1000.0) as u64),
        ms((report.connect_p99_ms * 1000.0) as u64),
        per_connection_text(report.server_cpu_us_per_connection),
        per_connection_text(report.loadgen_cpu_us_per_connection),
        report.server_rss_before_mb,
        report.server_rss_after_mb,
        report.bytes_per_connection,
        report
            .bytes_per_connection_idle
            .map_or_else(String::new, |b| format!(
                ", {b:.0} after {} idle",
                humantime::format_duration(args.idle)
            )),
        if server.measurable() {
            ""
        } else {
            " (external server: memory not measured)"
        }
    );
    println!("{}", serde_json::to_string(&report)?);
    drop(held);
    server.stop()
}

fn per_connection_text(us: Option<f64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("{us:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anteroom_client::protocol::ServerMessage;
    use std::borrow::Cow;

    fn welcome(users: usize) -> Vec<u8> {
        ServerMessage::Welcome {
            name: "me".into(),
            users: (0..users).map(|i| Cow::Owned(format!("u{i:05}"))).collect(),
            capacity: 10,
            text: "hi".into(),
            features: None,
            upload_token: None,
            max_upload_bytes: None,
            resume: None,
            resumed: None,
            resume_grace_s: None,
        }
        .to_frame()
        .to_vec()
    }

    #[test]
    fn skims_frames_split_anywhere() {
        let joined = ServerMessage::Joined {
            name: "x".into(),
            ts: 1,
        }
        .to_frame();
        let mut stream = joined.to_vec();
        stream.extend_from_slice(&welcome(5_000));
        stream.extend_from_slice(&joined);
        for cut in [1, 3, 7, 100, 4_096] {
            let mut skimmer = Skimmer::default();
            let answers: Vec<_> = stream
                .chunks(cut)
                .filter_map(|c| skimmer.feed(c).unwrap())
                .collect();
            assert_eq!(answers, [true], "chunks of {cut}");
            assert!(skimmer.head.capacity() < 4 + PEEK + 64, "chunks of {cut}");
        }
    }

    #[test]
    fn a_refusal_is_read_whole() {
        let bye = ServerMessage::Error {
            code: anteroom_client::protocol::ErrorCode::NameTaken,
            text: "taken ".repeat(30).into(),
        }
        .to_frame();
        let mut skimmer = Skimmer::default();
        let error = bye
            .chunks(5)
            .find_map(|c| skimmer.feed(c).err())
            .expect("refused");
        assert!(error.to_string().contains("taken taken"), "{error}");
    }
}
