//! Wiring: binds the listeners, starts the components on the bus and the
//! gateway, supervises the components, and runs the two-phase shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::FusedFuture;
use tokio::net::TcpListener;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::gateway::{Gateway, listener};
use crate::room::Room;
use crate::supervisor::{Component, first_to_end, panic_message};
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

/// Why a server stopped on its own: a component the room depends on failed.
/// The server has shut down (every client told `bye{reason:"shutdown"}`)
/// rather than serve a broken room.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The component panicked.
    #[error("the {0} component panicked; the server stopped")]
    ComponentPanicked(&'static str),
    /// The component ended although nothing asked it to.
    #[error("the {0} component stopped unexpectedly; the server stopped")]
    ComponentStopped(&'static str),
}

/// Logs and counts a component's end while the room is running, when any
/// end is a failure.
fn component_failed(name: &'static str, ended: Result<(), JoinError>) -> ServerError {
    match ended {
        Err(failure) if failure.is_panic() => {
            let payload = failure.into_panic();
            metrics().panicked(name);
            error!(
                component = name,
                panic = panic_message(&*payload),
                "component panicked; shutting down"
            );
            ServerError::ComponentPanicked(name)
        }
        _ => {
            error!(
                component = name,
                "component stopped unexpectedly; shutting down"
            );
            ServerError::ComponentStopped(name)
        }
    }
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
    /// connection and returns within `shutdown_grace`. If a component fails
    /// first, the server shuts down the same way and returns the failure.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
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

        // A failing component shuts the server down as a signal would, but
        // must not cancel the caller's token.
        let shutdown = shutdown.child_token();
        let Room {
            bus,
            roster,
            mut components,
        } = Room::start(&config, &shutdown);

        let ready = Arc::new(AtomicBool::new(true));
        let http_stop = CancellationToken::new();
        components.push(Component::spawn(
            "http",
            http::serve(metrics_listener, ready.clone(), http_stop.clone()),
        ));
        let upkeep = Component::spawn("upkeep", async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                crate::telemetry::upkeep();
            }
        });
        components.push(upkeep);

        let grace = config.shutdown_grace;
        let gateway = Arc::new(Gateway::new(config, bus.clone(), roster, shutdown.clone()));
        let mut failure = None;
        tokio::select! {
            () = listener::accept_loop(listener, gateway.clone()) => {}
            (name, ended) = first_to_end(&mut components) => {
                failure = Some(component_failed(name, ended));
                shutdown.cancel();
            }
        }

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
        // Phase two: stop the components and the metrics endpoint. Each
        // now ends by itself (upkeep is stopped); a panic while they drain
        // is still a failure.
        bus.close();
        http_stop.cancel();
        for component in &components {
            if component.name() == "upkeep" {
                component.abort();
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            for component in &mut components {
                if component.is_terminated() {
                    continue;
                }
                let name = component.name();
                if let Err(ended) = component.await
                    && ended.is_panic()
                    && failure.is_none()
                {
                    failure = Some(component_failed(name, Err(ended)));
                }
            }
        })
        .await;
        failure.map_or(Ok(()), Err)
    }
}
