//! `anteroom bench`: the load generator.
//!
//! Five workloads, each printing a human table and one JSON line per run:
//! * [`fanout`]: S members, P of them publishing at an offered rate, paced
//!   open loop; delivery ratio, deliveries/s, latency percentiles;
//! * [`connections`]: C idle connections, most of them queued if asked;
//!   connect rate and the server's memory per connection;
//! * [`churn`]: a full room with a long queue and members leaving at a
//!   steady rate; position correctness, promotion latency, server CPU;
//! * [`soak`]: hundreds of clients joining, chatting, queueing, leaving and
//!   misbehaving at random for a long time; protocol violations seen by the
//!   clients, the server's memory and descriptors over time;
//! * [`storm`]: thousands of `resume` members dropping at once and taking
//!   their seats back; what the others saw, time until all are back.
//!
//! Unless `--server` names a running broker, the bench starts its own
//! (`anteroom serve` from this executable) so it can report the server's
//! CPU time and peak memory.
//!
//! `fanout` and `connections` reach anteroom over plain TCP, TLS or QUIC
//! (`--transport`, see [`transport`]); Redis and NATS over TCP.

pub mod churn;
pub mod connections;
pub mod cpu;
pub mod fanout;
pub mod plot;
pub mod server;
pub mod soak;
pub mod storm;
pub mod transport;
pub mod ws;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Subcommand;
use tokio::net::{TcpSocket, TcpStream};

/// The workloads.
#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Fan-out: every message said is written to every member.
    Fanout(fanout::Args),
    /// Many idle connections, most of them queued.
    Connections(connections::Args),
    /// A full room, a long queue, members leaving at a steady rate.
    Churn(churn::Args),
    /// Clients doing everything at random for a long time, checking the
    /// protocol and the server's memory and descriptors.
    Soak(soak::Args),
    /// Thousands of members dropping at once and taking their seats back.
    Storm(storm::Args),
    /// Draws deliveries/s and p99 against the offered rate from fan-out
    /// sweep results (SVG).
    Plot(plot::Args),
}

/// Runs one workload.
pub async fn run(workload: Workload) -> anyhow::Result<()> {
    raise_fd_limit();
    match workload {
        Workload::Fanout(args) => fanout::run(args).await,
        Workload::Connections(args) => connections::run(args).await,
        Workload::Churn(args) => churn::run(args).await,
        Workload::Soak(args) => soak::run(args).await,
        Workload::Storm(args) => storm::run(args).await,
        Workload::Plot(args) => plot::run(args),
    }
}

/// Lifts the soft descriptor limit to the hard one; big loads need it.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Loopback source addresses used in turn, so that tens of thousands of
/// connections do not run out of ephemeral ports on one address.
pub(crate) const SOURCE_ADDRESSES: u8 = 16;

/// The loopback source address 127.0.0.x, x chosen by `index`.
pub(crate) fn spread_source(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (index % SOURCE_ADDRESSES as usize) as u8)
}

/// Connects from 127.0.0.x, x chosen by `index`, when the server is on
/// loopback; from anywhere otherwise.
pub async fn connect_spread(server: SocketAddr, index: usize) -> std::io::Result<TcpStream> {
    if server.ip().is_loopback() {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((spread_source(index), 0)))?;
        socket.connect(server).await
    } else {
        TcpStream::connect(server).await
    }
}

/// Locks a mutex of the bench's shared state: a client task that panicked
/// while holding it leaves nothing half-updated that the report relies on.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Formats a duration in microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// A progress bar on standard error (hidden when it is not a terminal).
pub fn progress(len: u64, message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
