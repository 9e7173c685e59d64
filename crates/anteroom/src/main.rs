//! The `anteroom` binary: command-line parsing and start-up only.

use std::path::PathBuf;
use std::process::ExitCode;

use anteroom_broker::config::{Config, KEYS, Raw, Source};
use anteroom_broker::server::Server;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod allocator;
mod cert;
#[cfg(test)]
mod docs_check;
mod logging;

use logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "anteroom",
    version,
    about = "A single-room chat broker speaking MessagePack over TCP, TLS and QUIC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Load generator: fan-out, connections and queue churn workloads.
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(anteroom_bench::Workload),
    /// Chat in the room: a full-screen interface on a terminal, one line per
    /// event when piped.
    Chat(ChatArgs),
    /// Write a self-signed certificate and key for local TLS and QUIC.
    Cert(cert::CertArgs),
    /// Probe a running broker's health endpoint; exits 0 when it answers 200.
    /// Meant for container health checks, where no HTTP client is installed.
    Healthcheck(HealthArgs),
}

#[derive(clap::Args)]
struct ChatArgs {
    /// Your name in the room (1 to 32 characters).
    #[arg(long)]
    name: String,
    /// The broker: `tcp://host:port` (or `host:port`), `tls://host:port`,
    /// `quic://host:port`, or the web listener's `ws://host:port/ws` or
    /// `wss://host:port/ws`.
    #[arg(
        long,
        value_name = "URL",
        default_value = "127.0.0.1:7878",
        env = "ANTEROOM_SERVER"
    )]
    server: String,
    /// For tls://, quic:// and wss://: trust the certificates in this PEM file (a
    /// private CA, or the server's own self-signed certificate) instead of
    /// the public certificate authorities.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// For tls://, quic:// and wss://: trust any certificate. Encrypted, but not
    /// private: anyone in the middle can read the chat. The screen says so.
    #[arg(long)]
    insecure: bool,
    /// The server's web listener, where `/send` uploads files and attachments
    /// link to: `http://host:port` or `https://host:port`. Default: the
    /// `ws://` or `wss://` server's own address, else the server's host on
    /// port 7880 (https for tls:// and quic://).
    #[arg(long, value_name = "URL", env = "ANTEROOM_WEB", value_parser = anteroom_client::upload::WebBase::parse)]
    web: Option<anteroom_client::upload::WebBase>,
}

impl ChatArgs {
    fn dial(&self) -> anteroom_client::chat::Dial {
        use anteroom_client::Trust;
        let trust = match (&self.ca, self.insecure) {
            (_, true) => Trust::Insecure,
            (Some(path), false) => Trust::CaFile(path.clone()),
            (None, false) => Trust::PublicRoots,
        };
        anteroom_client::chat::Dial {
            server: self.server.clone(),
            trust,
            web: self.web.clone(),
        }
    }
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The metrics listener to probe.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9878")]
    addr: std::net::SocketAddr,
    /// `/readyz` (accepting connections) or `/healthz` (process alive).
    #[arg(long, default_value = "/readyz")]
    path: String,
}

/// Flags override `ANTEROOM_*` environment variables, which override the file.
#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML). Also ANTEROOM_CONFIG.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format. Also ANTEROOM_LOG_FORMAT. Filter with RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "ANTEROOM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    keys: KeyFlags,
}

/// One flag per configuration key (`--max-active` for `max_active`),
/// generated from the key declaration so the two cannot drift apart.
struct KeyFlags(Vec<(&'static str, String)>);

impl clap::FromArgMatches for KeyFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = KeyFlags(Vec::new());
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for key in KEYS {
            if let Some(value) = matches.get_one::<String>(key.name) {
                self.0.push((key.name, value.clone()));
            }
        }
        Ok(())
    }
}

impl clap::Args for KeyFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for key in KEYS {
            cmd = cmd.arg(
                clap::Arg::new(key.name)
                    .long(key.flag())
                    .value_name("VALUE")
                    .help(format!(
                        "{} [config key {}, default {}]",
                        key.doc, key.name, key.default
                    ))
                    .help_heading("Configuration keys"),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = Config::default();
    let path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("ANTEROOM_CONFIG").map(PathBuf::from));
    if let Some(path) = path {
        let text = std::fs::read_to_string(&path).map_err(|error| {
            anteroom_broker::config::ConfigError::Read {
                path: path.clone(),
                error,
            }
        })?;
        config.apply_toml(&text, &path)?;
    }
    config.apply_env(|var| std::env::var(var).ok())?;
    for (key, value) in &args.keys.0 {
        let flag = format!("--{}", key.replace('_', "-"));
        config.set(key, Raw::Text(value), &Source::Flag(flag))?;
    }
    config.validate()?;
    Ok(config)
}

async fn healthcheck(args: HealthArgs) -> anyhow::Result<()> {
    let status = anteroom_broker::telemetry::http::probe(args.addr, &args.path).await?;
    anyhow::ensure!(status == 200, "{} answered {status}", args.path);
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    logging::init(args.log_format);
    if let Err(error) = allocator::return_freed_memory() {
        tracing::warn!(
            %error,
            "jemalloc's background thread did not start: freed memory goes back to the system only when memory is next allocated"
        );
    }
    // Install the handlers before binding, so a signal can never find the
    // default action (immediate death) in place.
    let signals = Signals::install()?;
    let server = Server::bind(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(signals, shutdown.clone()));
    // A failed component has already shut the server down; its error makes
    // the exit status non-zero.
    server.run(shutdown).await?;
    Ok(())
}

/// SIGINT and SIGTERM, installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(mut signals: Signals, token: CancellationToken) {
    tokio::select! {
        _ = signals.term.recv() => {}
        _ = signals.int.recv() => {}
    }
    token.cancel();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("anteroom: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Healthcheck(args) => runtime.block_on(healthcheck(args)),
        #[cfg(feature = "bench")]
        Command::Bench(workload) => runtime.block_on(anteroom_bench::run(workload)),
        Command::Cert(args) => cert::run(args),
        Command::Chat(args) => runtime
            .block_on(anteroom_client::chat::run(args.dial(), args.name.clone()))
            .map_err(anyhow::Error::msg),
    };
    // Do not wait for connections the grace period already gave up on.
    runtime.shutdown_background();
    // The last lines of a shutdown are still queued for standard output.
    logging::finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("anteroom: {error:#}");
            ExitCode::FAILURE
        }
    }
}
