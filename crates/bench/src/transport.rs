//! The transports anteroom is measured over: plain TCP, TLS over TCP,
//! QUIC and WebSocket (the web listener's `/ws`), with the clients' side of
//! each kept as lean as the TCP one.
//!
//! For TLS and QUIC the bench makes a self-signed certificate for
//! `localhost` and `127.0.0.1` in a directory of its own
//! ([`TestCertificate`]), starts `anteroom serve` with `tls_listen` or
//! `quic_listen` and that pair, and trusts the certificate as its only root.
//! What the clients then read is the same byte stream as over TCP, so the
//! fan-out's readers ([`crate::fanout`]) and the connections workload take
//! the decrypted stream as they take a socket.
//!
//! Each connection does a full handshake, as many distinct clients would:
//! session resumption is off on the client side (one shared rustls
//! configuration would otherwise resume most of them). TLS negotiates 1.3
//! (the server offers 1.2 and 1.3; rustls prefers 1.3), QUIC always is.
//!
//! QUIC connections share UDP sockets: up to [`QUIC_ENDPOINTS`] client
//! endpoints, one on each loopback source address the TCP clients spread
//! over (127.0.0.1 to 127.0.0.16), connection *i* on endpoint *i* mod 16. An
//! endpoint demultiplexes its connections by connection ID, so thousands of
//! members need 16 sockets rather than thousands, and each socket's reads
//! carry the packets of many connections.
//!
//! WebSocket connections are TCP connections upgraded by a request written
//! by hand (see [`crate::ws`]); the server the bench starts gets
//! `web_listen` on a free loopback port for them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, version};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::fanout::BrokerChoice;
use crate::server::Broker;
use crate::{connect_spread, spread_source};

/// ALPN protocol of anteroom over QUIC (the server's `QUIC_ALPN`).
const QUIC_ALPN: &[u8] = b"anteroom/1";

/// The name the clients check the certificate against.
const SERVER_NAME: &str = "localhost";

/// Longest a connection and its transport's handshake may take, and then
/// its `hello` and the answer: a burst of a thousand handshakes at once is
/// to be measured, not cut off, and QUIC, having no idle timeout of the
/// client's own, would otherwise retry a lost handshake for ever. The
/// servers the bench starts get it as `handshake_timeout` too.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most UDP sockets the QUIC clients share: one per loopback source
/// address.
pub const QUIC_ENDPOINTS: usize = crate::SOURCE_ADDRESSES as usize;

/// Receive (and send) buffer asked for each QUIC client socket; the kernel
/// caps it at `net.core.rmem_max` (`wmem_max`). Each socket carries the
/// packets of many members, which arrive in bursts of a whole fan-out.
const QUIC_SOCKET_BUFFER: usize = 4 << 20;

/// How the bytes travel between the bench's clients and anteroom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP (`listen`).
    Tcp,
    /// TLS over TCP (`tls_listen`).
    Tls,
    /// QUIC over UDP, one bidirectional stream (`quic_listen`).
    Quic,
    /// WebSocket at the web listener's `/ws` (`web_listen`), unencrypted.
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
            Transport::Ws => "ws",
        }
    }

    /// Whether the server needs a certificate for it.
    pub fn encrypted(self) -> bool {
        matches!(self, Transport::Tls | Transport::Quic)
    }

    /// The server settings that turn on its unencrypted listener, other
    /// than the chat one, on a free loopback port: the web listener for
    /// WebSocket.
    pub fn plain_settings(self) -> Vec<(&'static str, String)> {
        match self {
            Transport::Ws => vec![("ANTEROOM_WEB_LISTEN", "127.0.0.1:0".into())],
            Transport::Tcp | Transport::Tls | Transport::Quic => Vec::new(),
        }
    }
}

/// The runs a `--broker` and `--transport` choice makes, in order: every
/// chosen transport on anteroom, then Redis and NATS over TCP. Redis and
/// NATS are measured over plain TCP only: naming one of them with another
/// transport is an error, while `--broker all` runs them only where the
/// transports include TCP (and says so on standard error otherwise). A
/// server the bench did not start is reached over TCP only: the bench
/// cannot give it a certificate or learn its web listener.
pub fn plan(
    broker: BrokerChoice,
    transports: &[Transport],
    external_server: bool,
) -> anyhow::Result<Vec<(Broker, Transport)>> {
    let mut transports = transports.to_vec();
    if transports.is_empty() {
        transports.push(Transport::Tcp);
    }
    // Each transport once, in the order given.
    let mut seen = Vec::new();
    transports.retain(|t| {
        let new = !seen.contains(t);
        seen.push(*t);
        new
    });
    let not_tcp: Vec<&str> = transports
        .iter()
        .filter(|&&t| t != Transport::Tcp)
        .map(|t| t.name())
        .collect();
    if external_server && !not_tcp.is_empty() {
        bail!(
            "--transport {} needs a server the bench starts (it makes the certificate, or learns the web listener's port); with --server use --transport tcp",
            not_tcp.join(",")
        );
    }
    let mut runs = Vec::new();
    for b in broker.brokers() {
        for &t in &transports {
            match (b, t) {
                (Broker::Anteroom, _) | (_, Transport::Tcp) => runs.push((b, t)),
                (other, t) if broker != BrokerChoice::All => bail!(
                    "{} is measured over plain TCP only; --transport {} needs --broker anteroom (or --broker all, which runs Redis and NATS over TCP only)",
                    other.name(),
                    t.name()
                ),
                _ => {}
            }
        }
    }
    if broker == BrokerChoice::All && !transports.contains(&Transport::Tcp) {
        eprintln!(
            "--transport {}: Redis and NATS are measured over plain TCP only, so only anteroom runs",
            not_tcp.join(",")
        );
    }
    Ok(runs)
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made for one
/// run, and its key, written as PEM files into a fresh directory of their
/// own that goes when this does.
pub struct TestCertificate {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl TestCertificate {
    pub fn new() -> anyhow::Result<Self> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.into(), "127.0.0.1".into()])
                .context("making a self-signed certificate")?;
        let dir = std::env::temp_dir().join(format!(
            "anteroom-bench-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let this = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            der: cert.der().clone(),
        };
        write_private(&this.cert, cert.pem().as_bytes())?;
        write_private(&this.key, signing_key.serialize_pem().as_bytes())?;
        Ok(this)
    }

    /// The server settings that turn on `transport`'s listener with this
    /// pair, on a free loopback port.
    pub fn server_settings(&self, transport: Transport) -> Vec<(&'static str, String)> {
        let listen = match transport {
            Transport::Tcp | Transport::Ws => return Vec::new(),
            Transport::Tls => "ANTEROOM_TLS_LISTEN",
            Transport::Quic => "ANTEROOM_QUIC_LISTEN",
        };
        vec![
            (listen, "127.0.0.1:0".into()),
            ("ANTEROOM_TLS_CERT", self.cert.display().to_string()),
            ("ANTEROOM_TLS_KEY", self.key.display().to_string()),
        ]
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}

/// One connection's byte stream, as the transport gives it.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The one bidirectional stream: what is sent, what is received.
    Quic(quinn::SendStream, quinn::RecvStream),
    /// A TCP connection upgraded to WebSocket, and the bytes read past the
    /// upgrade's response.
    Ws(TcpStream, Vec<u8>),
}

/// Opens connections to one server over one transport, sharing what can
/// be shared between them: the TLS configuration, the QUIC endpoints.
pub struct Dialer {
    transport: Transport,
    server: SocketAddr,
    /// Over TCP, the nodes of a cluster: connection `i` goes to node
    /// `i % len` (empty: all to `server`).
    nodes: Vec<SocketAddr>,
    kind: DialerKind,
    /// What the first TLS handshake settled on: version and cipher suite.
    negotiated: std::sync::OnceLock<String>,
}

enum DialerKind {
    Tcp,
    Tls(TlsConnector, ServerName<'static>),
    Quic(Vec<quinn::Endpoint>),
    Ws,
}

impl Dialer {
    /// A dialer for `connections` connections to `server` over `transport`,
    /// trusting `certificate` alone (needed for TLS and QUIC).
    pub fn new(
        transport: Transport,
        server: SocketAddr,
        certificate: Option<&TestCertificate>,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let kind = match transport {
            Transport::Tcp => DialerKind::Tcp,
            Transport::Ws => DialerKind::Ws,
            Transport::Tls => {
                let certificate = certificate.context("TLS needs the run's certificate")?;
                let config = client_config(certificate, &[&version::TLS13, &version::TLS12], None)?;
                DialerKind::Tls(
                    TlsConnector::from(Arc::new(config)),
                    ServerName::try_from(SERVER_NAME)?.to_owned(),
                )
            }
            Transport::Quic => {
                let certificate = certificate.context("QUIC needs the run's certificate")?;
                let config = client_config(certificate, &[&version::TLS13], Some(QUIC_ALPN))?;
                let crypto = QuicClientConfig::try_from(config)
                    .context("a QUIC client configuration from the TLS one")?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                let mut transport = quinn::TransportConfig::default();
                // No idle timeout of the client's own: the server's
                // (idle_timeout plus a margin, hours in the bench) applies,
                // and members silent for the whole connect phase stay.
                transport.max_idle_timeout(None);
                client.transport_config(Arc::new(transport));
                let count = connections.clamp(1, QUIC_ENDPOINTS);
                let mut endpoints = Vec::with_capacity(count);
                for i in 0..count {
                    let mut endpoint = quic_endpoint(spread_source(i).into())
                        .with_context(|| format!("a QUIC endpoint on {}", spread_source(i)))?;
                    endpoint.set_default_client_config(client.clone());
                    endpoints.push(endpoint);
                }
                DialerKind::Quic(endpoints)
            }
        };
        Ok(Self {
            transport,
            server,
            nodes: Vec::new(),
            kind,
            negotiated: std::sync::OnceLock::new(),
        })
    }

    /// Spreads TCP connections over the nodes of a cluster, in turn.
    pub fn spread_over(mut self, nodes: Vec<SocketAddr>) -> Self {
        self.nodes = nodes;
        self
    }

    /// The transport it dials.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// How the connections are protected, once one is open: the TLS
    /// version and cipher suite (the same for every connection, from one
    /// client configuration and one server), or QUIC's TLS 1.3; `None` over
    /// TCP and WebSocket.
    pub fn protection(&self) -> Option<String> {
        match &self.kind {
            DialerKind::Tcp | DialerKind::Ws => None,
            DialerKind::Tls(..) => self.negotiated.get().cloned(),
            DialerKind::Quic(endpoints) => Some(format!(
                "TLS 1.3 inside, {} UDP socket{}",
                endpoints.len(),
                if endpoints.len() == 1 { "" } else { "s" }
            )),
        }
    }

    /// Opens connection `index` and completes the transport's handshake
    /// (for QUIC, opens the stream too; it reaches the server with the
    /// first bytes written; for WebSocket, the HTTP upgrade), within
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(&self, index: usize) -> anyhow::Result<Stream> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connect_now(index))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "not connected within {HANDSHAKE_TIMEOUT:?} (transport handshake included)"
                )
            })?
    }

    async fn connect_now(&self, index: usize) -> anyhow::Result<Stream> {
        match &self.kind {
            DialerKind::Tcp => {
                let server = match self.nodes.len() {
                    0 => self.server,
                    n => self.nodes[index % n],
                };
                Ok(Stream::Tcp(tcp(server, index).await?))
            }
            DialerKind::Ws => {
                let mut stream = tcp(self.server, index).await?;
                let read = crate::ws::upgrade(&mut stream, self.server)
                    .await
                    .context("WebSocket upgrade")?;
                Ok(Stream::Ws(stream, read))
            }
            DialerKind::Tls(connector, name) => {
                let stream = tcp(self.server, index).await?;
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .context("TLS handshake")?;
                if self.negotiated.get().is_none() {
                    let session = tls.get_ref().1;
                    let _ = self.negotiated.set(format!(
                        "{:?}, {:?}, {:?}",
                        session
                            .protocol_version()
                            .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
                        session
                            .negotiated_cipher_suite()
                            .map(|s| s.suite())
                            .unwrap_or(rustls::CipherSuite::Unknown(0)),
                        session
                            .negotiated_key_exchange_group()
                            .map(|g| g.name())
                            .unwrap_or(rustls::NamedGroup::Unknown(0)),
                    ));
                }
                Ok(Stream::Tls(Box::new(tls)))
            }
            DialerKind::Quic(endpoints) => {
                let endpoint = &endpoints[index % endpoints.len()];
                let connection = endpoint
                    .connect(self.server, SERVER_NAME)?
                    .await
                    .context("QUIC handshake")?;
                let (send, recv) = connection.open_bi().await.context("opening the stream")?;
                Ok(Stream::Quic(send, recv))
            }
        }
    }
}

/// A TCP connection from the spread of source addresses, Nagle's algorithm
/// off as every client library has it.
async fn tcp(server: SocketAddr, index: usize) -> std::io::Result<TcpStream> {
    let stream = connect_spread(server, index).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client endpoint on `ip`, any port, its socket buffers as large as the
/// kernel allows up to [`QUIC_SOCKET_BUFFER`].
fn quic_endpoint(ip: std::net::IpAddr) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only means drops sooner.
    let _ = socket.set_recv_buffer_size(QUIC_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(QUIC_SOCKET_BUFFER);
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
}

/// The cryptography of the bench's clients and of its test server: the
/// client library's, so that they negotiate what anteroom's clients do.
fn provider() -> Arc<CryptoProvider> {
    anteroom_client::transport::provider()
}

/// A client configuration trusting `certificate` alone, without session
/// resumption: every connection does a full handshake.
fn client_config(
    certificate: &TestCertificate,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Option<&[u8]>,
) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(certificate.der.clone())
        .context("trusting the run's certificate")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(config)
}

/// UDP datagrams the kernel dropped for want of room in a socket's receive
/// buffer, machine-wide since boot (`RcvbufErrors` in /proc/net/snmp);
/// `None` where it cannot be read.
pub fn udp_receive_buffer_errors() -> Option<u64> {
    rcvbuf_errors(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// `RcvbufErrors` of the `Udp:` lines of /proc/net/snmp: a header line of
/// names, then one of values.
fn rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?;
    let values = udp.next()?;
    let column = names
        .split_whitespace()
        .position(|name| name == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anteroom_runs_over_every_transport_and_the_others_over_tcp_only() {
        use Transport::*;
        let all = [Tcp, Tls, Quic, Ws];
        assert_eq!(
            plan(BrokerChoice::Anteroom, &all, false).unwrap(),
            vec![
                (Broker::Anteroom, Tcp),
                (Broker::Anteroom, Tls),
                (Broker::Anteroom, Quic),
                (Broker::Anteroom, Ws)
            ]
        );
        assert_eq!(
            plan(BrokerChoice::All, &[Ws], false).unwrap(),
            vec![(Broker::Anteroom, Ws)]
        );
        let error = plan(BrokerChoice::Redis, &[Ws], false).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("redis is measured over plain TCP only")
        );
        assert_eq!(
            plan(BrokerChoice::All, &[Tls, Tcp], false).unwrap(),
            vec![
                (Broker::Anteroom, Tls),
                (Broker::Anteroom, Tcp),
                (Broker::Redis, Tcp),
                (Broker::Nats, Tcp)
            ]
        );
        assert_eq!(
            plan(BrokerChoice::All, &[Quic], false).unwrap(),
            vec![(Broker::Anteroom, Quic)]
        );
        assert_eq!(
            plan(BrokerChoice::Redis, &[], false).unwrap(),
            vec![(Broker::Redis, Tcp)]
        );
        let error = plan(BrokerChoice::Nats, &[Tcp, Tls], false).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("nats is measured over plain TCP only")
        );
    }

    #[test]
    fn a_transport_named_twice_runs_once() {
        use Transport::*;
        assert_eq!(
            plan(BrokerChoice::Anteroom, &[Tls, Tls, Tcp], false).unwrap(),
            vec![(Broker::Anteroom, Tls), (Broker::Anteroom, Tcp)]
        );
    }

    #[test]
    fn a_running_server_is_reached_over_tcp_only() {
        assert!(plan(BrokerChoice::Anteroom, &[Transport::Tcp], true).is_ok());
        for transport in [Transport::Quic, Transport::Ws] {
            let error = plan(BrokerChoice::Anteroom, &[transport], true).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("needs a server the bench starts")
            );
        }
    }

    #[test]
    fn the_certificate_lives_as_long_as_its_holder() {
        let certificate = TestCertificate::new().unwrap();
        let settings = certificate.server_settings(Transport::Quic);
        assert_eq!(settings[0], ("ANTEROOM_QUIC_LISTEN", "127.0.0.1:0".into()));
        let cert = std::fs::read_to_string(&certificate.cert).unwrap();
        let key = std::fs::read_to_string(&certificate.key).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY-----"));
        assert!(certificate.server_settings(Transport::Tcp).is_empty());
        assert!(certificate.server_settings(Transport::Ws).is_empty());
        let dir = certificate.dir.clone();
        drop(certificate);
        assert!(!dir.exists());
    }

    #[test]
    fn udp_receive_buffer_errors_are_read_by_column_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            Udp: 100 2 7 90 5 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            UdpLite: 0 0 0 0 9 0\n";
        assert_eq!(rcvbuf_errors(snmp), Some(5));
        assert_eq!(rcvbuf_errors("Udp: InDatagrams\nUdp: 1\n"), None);
        assert_eq!(rcvbuf_errors(""), None);
    }

    /// A server configuration presenting the run's certificate.
    fn server_config(certificate: &TestCertificate, alpn: &[u8]) -> rustls::ServerConfig {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_file(&certificate.key).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        config
    }

    /// Writes `hello` on `stream` and expects it echoed.
    async fn echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn tls_dials_a_server_presenting_the_certificate() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let certificate = TestCertificate::new().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&certificate, b"")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(stream).await.unwrap();
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.flush().await.unwrap();
        });
        let dialer = Dialer::new(Transport::Tls, addr, Some(&certificate), 1).unwrap();
        let Stream::Tls(tls) = dialer.connect(0).await.unwrap() else {
            panic!("not a TLS stream");
        };
        echoes(tls).await;
    }

    #[tokio::test]
    async fn quic_dials_a_server_presenting_the_certificate_with_anterooms_alpn() {
        let certificate = TestCertificate::new().unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_config(
            &certificate,
            QUIC_ALPN,
        ))
        .unwrap();
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(crypto)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let connection = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = connection.accept_bi().await.unwrap();
            let mut buf = [0u8; 5];
            recv.read_exact(&mut buf).await.unwrap();
            send.write_all(&buf).await.unwrap();
            connection.closed().await;
        });
        let dialer = Dialer::new(Transport::Quic, addr, Some(&certificate), 2).unwrap();
        let Stream::Quic(send, recv) = dialer.connect(0).await.unwrap() else {
            panic!("not a QUIC stream");
        };
        echoes(tokio::io::join(recv, send)).await;
    }
}
