//! Sessions run in memory against a whole room: `run_session` over
//! in-memory transports, on paused time, so that minutes of client behaviour
//! take milliseconds and no assertion depends on the machine's speed.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anteroom_broker::config::{Config, SlowConsumerPolicy};
use anteroom_broker::gateway::Gateway;
use anteroom_broker::gateway::session::run_session;
use anteroom_broker::gateway::transport::{ByteStream, Transport};
use anteroom_broker::room::Room;
use anteroom_protocol::{ClientMessage, LeftReason, ServerMessage, frame_codec};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// A room and a gateway, without any listener.
struct Broker {
    gateway: Arc<Gateway>,
}

impl Broker {
    fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let shutdown = CancellationToken::new();
        let room = Room::start(&config, &shutdown);
        let gateway = Arc::new(Gateway::new(
            config,
            room.bus,
            room.roster,
            room.shards,
            room.chat,
            room.held,
            shutdown,
        ));
        Self { gateway }
    }

    /// Runs a session over `transport`.
    fn spawn(&self, transport: impl Transport) -> JoinHandle<()> {
        tokio::spawn(run_session(self.gateway.clone(), transport))
    }

    /// A client on an in-memory connection whose server side buffers at most
    /// `pipe` bytes each way.
    fn connect(&self, pipe: usize) -> Client {
        let (client, server) = tokio::io::duplex(pipe);
        let (read, write) = tokio::io::split(server);
        tokio::spawn(run_session(
            self.gateway.clone(),
            ByteStream::new(read, write),
        ));
        let (read, write) = tokio::io::split(client);
        Client {
            frames: FramedRead::new(read, frame_codec(1 << 24)),
            write,
        }
    }

    /// Connects and joins as `name`, expecting a direct `welcome`.
    async fn join(&self, name: &str) -> Client {
        let mut client = self.connect(64 * 1024);
        client.hello(name).await;
        match client.recv().await {
            Some(ServerMessage::Welcome { .. }) => client,
            other => panic!("{name} expected welcome, got {other:?}"),
        }
    }
}

struct Client {
    frames: FramedRead<ReadHalf<DuplexStream>, LengthDelimitedCodec>,
    write: WriteHalf<DuplexStream>,
}

impl Client {
    async fn send(&mut self, message: ClientMessage<'_>) {
        // A closed connection shows in what the client reads next.
        let _ = self.write.write_all(&message.to_frame()).await;
    }

    async fn hello(&mut self, name: &str) {
        self.send(ClientMessage::Hello {
            name: Cow::Borrowed(name),
            features: None,
            last_id: None,
            resume: None,
        })
        .await;
    }

    /// The next frame, or `None` once the server has closed the connection.
    async fn recv(&mut self) -> Option<ServerMessage<'static>> {
        let payload = self.frames.next().await?.ok()?;
        Some(ServerMessage::decode(&payload).expect("the server sends valid frames"))
    }

    /// Reads, answering pings, until `name` leaves; returns the reason.
    async fn left_reason(&mut self, name: &str) -> LeftReason {
        loop {
            match self.recv().await {
                Some(ServerMessage::Left {
                    name: who, reason, ..
                }) if who == name => return reason,
                Some(ServerMessage::Ping { id: Some(id) }) => {
                    self.send(ClientMessage::Pong { id }).await
                }
                Some(_) => {}
                None => panic!("the watcher was disconnected"),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn under_skip_a_member_that_reads_nothing_is_cut_off() {
    let broker = Broker::start(|c| {
        c.slow_consumer = SlowConsumerPolicy::Skip;
        c.write_timeout = Duration::from_secs(10);
        c.heartbeat_interval = Duration::from_secs(15);
        c.idle_timeout = Duration::from_secs(45);
    });
    let mut watcher = broker.join("watcher").await;
    // A member that keeps talking, so it is never idle, but reads nothing:
    // its pipe holds 64 bytes, less than its welcome.
    let mut deaf = broker.connect(64);
    deaf.hello("deaf").await;
    let started = tokio::time::Instant::now();
    let pinger = tokio::spawn(async move {
        loop {
            deaf.send(ClientMessage::Ping { id: None }).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let reason = tokio::time::timeout(Duration::from_secs(600), watcher.left_reason("deaf"))
        .await
        .expect("a member that accepted nothing for ten minutes is still in the room");
    assert_eq!(reason, LeftReason::SlowConsumer);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(45), "cut off early: {took:?}");
    pinger.abort();
}

/// A connection whose reads hand out `script`, then panic.
struct PanickingReader {
    script: Option<Bytes>,
}

impl AsyncRead for PanickingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let Some(script) = self.script.take() else {
            panic!("injected fault: the transport's read panicked");
        };
        buf.put_slice(&script);
        Poll::Ready(Ok(()))
    }
}

/// A connection whose first write panics.
struct PanickingWriter;

impl AsyncWrite for PanickingWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        panic!("injected fault: the transport's write panicked");
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        panic!("injected fault: the transport's write panicked");
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn hello(name: &str) -> Bytes {
    ClientMessage::Hello {
        name: Cow::Borrowed(name),
        features: None,
        last_id: None,
        resume: None,
    }
    .to_frame()
}

/// The value of `anteroom_panics_total{task}` in a render of every metric.
fn panics(task: &str) -> f64 {
    let series = format!("anteroom_panics_total{{task=\"{task}\"}} ");
    anteroom_broker::telemetry::render()
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("{series} is not rendered"))
}

#[tokio::test(start_paused = true)]
async fn a_session_that_panics_gives_its_seat_back() {
    let broker = Broker::start(|c| c.max_active = 2);
    let mut watcher = broker.join("watcher").await;
    // A member whose next read, after its hello, panics.
    let fragile = ByteStream::new(
        PanickingReader {
            script: Some(hello("fragile")),
        },
        tokio::io::sink(),
    );
    let session = broker.spawn(fragile);
    let reason = tokio::time::timeout(Duration::from_secs(60), watcher.left_reason("fragile"))
        .await
        .expect("a member whose session panicked is still in the room");
    assert_eq!(reason, LeftReason::Disconnected);
    session
        .await
        .expect("the panic is contained in the session");
    // Its seat is free and its name released.
    broker.join("fragile").await;
    assert!(panics("session") >= 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_panics_gives_the_seat_back() {
    let broker = Broker::start(|c| c.max_active = 2);
    let mut watcher = broker.join("watcher").await;
    // A member whose first write (its welcome) panics.
    let (mut client, server) = tokio::io::duplex(1024);
    let session = broker.spawn(ByteStream::new(server, PanickingWriter));
    client.write_all(&hello("brittle")).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(60), watcher.left_reason("brittle"))
        .await
        .expect("a member whose writer panicked is still in the room");
    assert_eq!(reason, LeftReason::Disconnected);
    tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the session ends")
        .expect("the session does not panic");
    broker.join("brittle").await;
    assert!(panics("writer") >= 1.0);
}

#[tokio::test]
async fn a_session_task_stays_small() {
    // Every connection holds its session future for its whole life, queued
    // clients included: rare paths live on the heap, not in it.
    let broker = Broker::start(|_| {});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (read, write) = stream.into_split();
    let session = run_session(broker.gateway.clone(), ByteStream::new(read, write));
    let size = std::mem::size_of_val(&session);
    assert!(size < 1100, "the session's future is {size} bytes");
}
