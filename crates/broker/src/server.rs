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

use crate::certs::{CertError, Certificates};
use crate::chat_log::Chat;
use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::config::StoreKind;
use crate::gateway::listener::Security;
use crate::gateway::{Gateway, limits, listener, quic, web};
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

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate for TLS or QUIC could not be loaded.
    #[error("{0}")]
    Certificates(#[from] CertError),
    /// A listener could not be bound.
    #[error("cannot bind {key}={addr}: {error}")]
    Bind {
        /// The key naming the address: `listen`, `tls_listen`,
        /// `quic_listen`, `web_listen` or `metrics_listen`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The chat log could not be opened.
    #[error("cannot open the chat log (store = {store}, data_dir = {data_dir}): {error}")]
    Store {
        /// The `store` key's value, without a URL's password.
        store: String,
        /// The `data_dir` key's value.
        data_dir: String,
        /// Why.
        error: crate::chat_log::StoreError,
    },
    /// The node could not join its cluster.
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The descriptor limit leaves no room for a single connection.
    #[error(
        "the descriptor limit ({limit}) leaves no room for connections: {open} descriptors are in use and {headroom} are kept free; raise it (ulimit -n)"
    )]
    Descriptors {
        /// The soft limit.
        limit: u64,
        /// Descriptors open at start-up.
        open: usize,
        /// Descriptors kept free for everything else.
        headroom: usize,
    },
}

/// The `store` key as logs and errors show it: a URL without its password.
pub(crate) fn store_shown(store: &StoreKind) -> String {
    match store {
        StoreKind::Sqlite => "\"sqlite\"".to_string(),
        StoreKind::Memory => "\"memory\"".to_string(),
        StoreKind::Postgres(url) => {
            // postgres://user:secret@host/db -> postgres://user:***@host/db
            let shown = match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let credentials = &url[scheme + 3..at];
                    match credentials.split_once(':') {
                        Some((user, _)) => {
                            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
                        }
                        None => url.clone(),
                    }
                }
                _ => url.clone(),
            };
            format!("{shown:?}")
        }
    }
}

/// Logs the connection cap once the listeners are reported, and what set it.
fn log_connection_cap(cap: usize, from: CapFrom) {
    match from {
        CapFrom::Config { descriptors: None } => info!("accepting at most {cap} connections"),
        CapFrom::Config {
            descriptors: Some(d),
        } => info!(
            descriptor_limit = d.soft,
            raised_from = d.raised_from,
            "accepting at most {cap} connections"
        ),
        CapFrom::Descriptors {
            descriptors: d,
            configured,
        } => warn!(
            descriptor_limit = d.soft,
            raised_from = d.raised_from,
            configured,
            "accepting at most {cap} connections: the descriptor limit allows no more; raise it (ulimit -n) to accept {configured}"
        ),
    }
}

/// A broker with its sockets bound, ready to run.
pub struct Server {
    config: Config,
    listener: TcpListener,
    tls: Option<(TcpListener, Arc<Certificates>)>,
    quic: Option<quinn::Endpoint>,
    web: Option<TcpListener>,
    /// The certificate of the TLS and QUIC listeners, reloaded on SIGHUP.
    certs: Option<Arc<Certificates>>,
    metrics_listener: TcpListener,
    /// What limits the connection cap, for the start-up log.
    cap_from: CapFrom,
    /// The chat log and files, opened.
    chat: Chat,
    /// The cluster this node joined, if any.
    cluster: Option<Arc<Cluster>>,
}

/// Where the connection cap comes from.
#[derive(Debug, Clone, Copy)]
enum CapFrom {
    /// `max_connections` (or its automatic value) fits the descriptor limit.
    Config {
        descriptors: Option<limits::DescriptorLimit>,
    },
    /// The descriptor limit allows fewer connections than configured.
    Descriptors {
        descriptors: limits::DescriptorLimit,
        configured: usize,
    },
}

impl Server {
    /// Binds the chat and metrics listeners named in `config` (port 0 picks a
    /// free port, which tests use), raises the process's soft descriptor
    /// limit to its hard limit and fits the connection cap under it: every
    /// connection is a descriptor, and a server that runs out of them cannot
    /// even say `server_full`.
    pub async fn bind(mut config: Config) -> Result<Self, StartError> {
        let descriptors = limits::raise_descriptor_limit();
        let listener = bind_chat(config.listen).map_err(|error| StartError::Bind {
            key: "listen",
            addr: config.listen,
            error,
        })?;
        let certs = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Certificates::load(cert, key)?),
            _ => None,
        };
        let bind_error = |key, addr| move |error| StartError::Bind { key, addr, error };
        let tls = match (config.tls_listen, &certs) {
            (Some(addr), Some(certs)) => {
                let listener = bind_chat(addr).map_err(bind_error("tls_listen", addr))?;
                Some((listener, certs.clone()))
            }
            _ => None,
        };
        let quic = match (config.quic_listen, &certs) {
            (Some(addr), Some(certs)) => {
                Some(quic::bind(addr, certs, &config).map_err(bind_error("quic_listen", addr))?)
            }
            _ => None,
        };
        let web = match config.web_listen {
            Some(addr) => Some(bind_chat(addr).map_err(bind_error("web_listen", addr))?),
            None => None,
        };
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .map_err(|error| StartError::Bind {
                key: "metrics_listen",
                addr: config.metrics_listen,
                error,
            })?;
        // Counted once the listeners are open, since they hold descriptors too.
        let configured = config.connection_cap();
        let mut cap_from = CapFrom::Config { descriptors };
        if let Some(descriptors) = descriptors {
            let limit = descriptors.soft;
            let open = limits::open_descriptors();
            let fit = limits::connections_within(limit, open);
            if fit == 0 {
                return Err(StartError::Descriptors {
                    limit,
                    open,
                    headroom: limits::DESCRIPTOR_HEADROOM,
                });
            }
            if fit < configured {
                // The gateway's cap comes from here.
                config.max_connections = fit;
                cap_from = CapFrom::Descriptors {
                    descriptors,
                    configured,
                };
            }
        }
        let chat = Chat::open(&config)
            .await
            .map_err(|error| StartError::Store {
                store: store_shown(&config.store_kind()),
                data_dir: config.data_dir.display().to_string(),
                error,
            })?;
        let cluster = match cluster::Settings::from_config(&config) {
            Some(settings) => Some(
                Cluster::join(cluster::Settings {
                    last_id: chat.last_id,
                    ..settings
                })
                .await?,
            ),
            None => None,
        };
        Ok(Self {
            config,
            listener,
            tls,
            quic,
            web,
            certs,
            metrics_listener,
            cap_from,
            chat,
            cluster,
        })
    }

    /// The most connections the server will hold at once: `max_connections`
    /// (or its automatic value), lowered to fit the descriptor limit.
    pub fn connection_cap(&self) -> usize {
        self.config.connection_cap()
    }

    /// The chat listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The TLS listener's address, when it listens.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The QUIC listener's address, when it listens.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().and_then(|e| e.local_addr().ok())
    }

    /// The web listener's address, when it listens.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|l| l.local_addr().ok())
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
            tls,
            quic,
            web,
            certs,
            metrics_listener,
            cap_from,
            chat,
            cluster,
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
        if let Some(addr) = tls.as_ref().and_then(|(l, _)| l.local_addr().ok()) {
            info!("TLS on {addr}");
        }
        if let Some(addr) = quic.as_ref().and_then(|e| e.local_addr().ok()) {
            info!("QUIC on {addr}");
        }
        if let Some(addr) = web.as_ref().and_then(|l| l.local_addr().ok()) {
            let scheme = if config.web_tls { "https" } else { "http" };
            info!("web client on {scheme}://{addr}/");
        }
        log_connection_cap(config.connection_cap(), cap_from);
        let reloader = tokio::spawn(reload_on_hangup(certs.clone()));

        // In a cluster, ready once the node has taken the room from Redis.
        let ready = Arc::new(AtomicBool::new(cluster.is_none()));
        if let Some(cluster) = &cluster {
            info!(node = %cluster.settings.node, epoch = %cluster.epoch(), "joined the cluster");
        }
        // A failing component shuts the server down as a signal would, but
        // must not cancel the caller's token.
        let shutdown = shutdown.child_token();
        let Room {
            bus,
            roster,
            shards,
            chat,
            held,
            mut components,
        } = Room::start_in(
            &config,
            &shutdown,
            chat,
            cluster.clone().map(|c| (c, ready.clone())),
        );

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
        let gateway = Arc::new(
            Gateway::new(
                config,
                bus.clone(),
                roster,
                shards,
                chat,
                held,
                shutdown.clone(),
            )
            .in_cluster(cluster),
        );
        let mut failure = None;
        let tls_loop = async {
            if let Some((listener, certs)) = tls {
                let acceptor = tokio_rustls::TlsAcceptor::from(certs.tls_config());
                listener::accept_loop(listener, gateway.clone(), Security::Tls(acceptor)).await;
            }
        };
        let quic_loop = async {
            if let Some(endpoint) = quic.clone() {
                quic::accept_loop(endpoint, gateway.clone()).await;
            }
        };
        let web_loop = async {
            if let Some(listener) = web {
                let tls = match (&certs, gateway.config.web_tls) {
                    (Some(certs), true) => {
                        Some(tokio_rustls::TlsAcceptor::from(certs.tls_config()))
                    }
                    _ => None,
                };
                web::accept_loop(listener, gateway.clone(), tls).await;
            }
        };
        let accept_loops = futures_util::future::join4(
            listener::accept_loop(listener, gateway.clone(), Security::Plain),
            tls_loop,
            quic_loop,
            web_loop,
        );
        tokio::select! {
            _ = accept_loops => {}
            (name, ended) = first_to_end(&mut components) => {
                failure = Some(component_failed(name, ended));
                shutdown.cancel();
            }
        }

        // Phase one: stop accepting (done) and let sessions say goodbye.
        ready.store(false, Ordering::SeqCst);
        info!("shutting down");
        let began = tokio::time::Instant::now();
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
        reloader.abort();
        if let Some(endpoint) = &quic {
            endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
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
        // The chat log commits what it still holds: it gets what is left
        // of the grace, at least the 200 ms every component gets.
        let drain = grace
            .saturating_sub(began.elapsed() + Duration::from_millis(100))
            .max(Duration::from_millis(200));
        let _ = tokio::time::timeout(drain, async {
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

/// Reloads the certificate on every SIGHUP; without one, says so. Handling
/// the signal at all keeps it from ending the server, its default action.
async fn reload_on_hangup(certs: Option<Arc<Certificates>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot handle SIGHUP; certificates will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        match &certs {
            None => info!("SIGHUP: no certificate to reload"),
            Some(certs) => match certs.reload() {
                Ok(()) => info!("SIGHUP: certificate reloaded; new connections use it"),
                Err(error) => {
                    warn!(%error, "SIGHUP: certificate not reloaded; keeping the current one")
                }
            },
        }
    }
}
