//! Wiring: binds the listeners, starts the components on the bus and the
//! gateway, and runs the two-phase shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::gateway::{Gateway, listener};
use crate::room::Room;
use crate::telemetry::http;
use crate::telemetry::metrics;

/// Pending connections the kernel may hold for the chat listener. Bursts of
/// thousands of clients (a reconnect storm) otherwise overflow the default
/// queue, and each dropped handshake costs its client a one-second retry.
const LISTEN_BACKLOG: u32 = 4096;

fn bind_chat(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A broker with its sockets bound, ready to run.
pub struct Server {
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
}

impl Server {
    /// Binds the chat and metrics listeners named in `config` (port 0 picks a
    /// free port, which tests use).
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = bind_chat(config.listen)?;
        let metrics_listener = TcpListener::bind(config.metrics_listen).await?;
        Ok(Self {
            config,
            listener,
            metrics_listener,
        })
    }

    /// The chat listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .unwrap_or(self.config.metrics_listen)
    }

    /// Runs until `shutdown` is cancelled, then says goodbye to every
    /// connection and returns within `shutdown_grace`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            config,
            listener,
            metrics_listener,
        } = self;
        let m = metrics();
        m.room_capacity.set(config.max_active as f64);
        info!(
            "listening on {}",
            listener.local_addr().map_or(config.listen, |a| a)
        );
        info!(
            "metrics on {}",
            metrics_listener
                .local_addr()
                .map_or(config.metrics_listen, |a| a)
        );

        let Room {
            bus,
            roster,
            components,
        } = Room::start(&config, &shutdown);

        let ready = Arc::new(AtomicBool::new(true));
        let http_stop = CancellationToken::new();
        let http_task = tokio::spawn(http::serve(
            metrics_listener,
            ready.clone(),
            http_stop.clone(),
        ));
        let upkeep = tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                crate::telemetry::upkeep();
            }
        });

        let grace = config.shutdown_grace;
        let gateway = Arc::new(Gateway::new(config, bus.clone(), roster, shutdown.clone()));
        listener::accept_loop(listener, gateway.clone()).await;

        // Phase one: stop accepting (done) and let sessions say goodbye.
        ready.store(false, Ordering::SeqCst);
        info!("shutting down");
        gateway.tracker.close();
        // Leave a margin inside the grace period for the rest of the exit.
        let wait = grace.saturating_sub(Duration::from_millis(400).min(grace / 5));
        if tokio::time::timeout(wait, gateway.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = gateway.tracker.len(),
                "grace period over; dropping remaining connections"
            );
        }
        // Phase two: stop the components and the metrics endpoint.
        bus.close();
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            for component in components {
                let _ = component.await;
            }
            let _ = http_task.await;
        })
        .await;
        upkeep.abort();
    }
}
