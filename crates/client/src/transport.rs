//! How a client reaches the server: the address forms, whom to trust, and
//! dialling TCP, TLS, QUIC or a WebSocket into one byte stream carrying the
//! frames.

mod websocket;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::ClientError;

/// ALPN protocol of anteroom over QUIC.
pub const QUIC_ALPN: &[u8] = b"anteroom/1";

/// The reading half of any transport.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of any transport.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP (`tcp://`, or no scheme at all).
    Tcp,
    /// TLS over TCP (`tls://`).
    Tls,
    /// QUIC over UDP (`quic://`).
    Quic,
    /// A WebSocket on the web listener (`ws://`).
    Ws,
    /// A WebSocket over TLS (`wss://`).
    Wss,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Quic => "quic",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// A server to dial: `tcp://host:port` (the default scheme), `tls://`,
/// `quic://`, or `ws://host:port/path` and `wss://` (the path `/ws` when
/// none is given; the port 80 or 443). The host is also the name the
/// certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The request path of a WebSocket (`/ws` unless given); empty for the
    /// other schemes.
    pub path: String,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let (scheme, rest) = match url.split_once("://") {
            None => (Scheme::Tcp, url),
            Some(("tcp", rest)) => (Scheme::Tcp, rest),
            Some(("tls", rest)) => (Scheme::Tls, rest),
            Some(("quic", rest)) => (Scheme::Quic, rest),
            Some(("ws", rest)) => (Scheme::Ws, rest),
            Some(("wss", rest)) => (Scheme::Wss, rest),
            Some((other, _)) => {
                return Err(format!(
                    "unknown scheme `{other}://` in {url:?}; use tcp://, tls://, quic://, ws:// or wss://"
                ));
            }
        };
        let (rest, path) = if scheme.is_websocket() {
            // The web listener's root is the browser page: a WebSocket
            // there can only mean `/ws`.
            match rest.find('/') {
                Some(at) if rest.len() > at + 1 => (&rest[..at], rest[at..].to_string()),
                Some(at) => (&rest[..at], "/ws".to_string()),
                None => (rest, "/ws".to_string()),
            }
        } else {
            (rest.trim_end_matches('/'), String::new())
        };
        let default_port = match scheme {
            Scheme::Ws => Some(80),
            Scheme::Wss => Some(443),
            _ => None,
        };
        let (host, port) = match (rest.rsplit_once(':'), default_port) {
            // A colon inside brackets belongs to an IPv6 address.
            (Some((host, port)), _) if !port.ends_with(']') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("{url:?}: `{port}` is not a port number"))?;
                (host, port)
            }
            (_, Some(default)) => (rest, default),
            _ => return Err(format!("{url:?} has no port; write host:port")),
        };
        // An IPv6 literal is written in brackets, as in URLs.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Self {
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_str();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Whom an encrypted connection (`tls://`, `quic://`, `wss://`) trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The public web's certificate authorities (Mozilla's list, built in).
    #[default]
    PublicRoots,
    /// The certificates in this PEM file, and nothing else: a private CA or
    /// a self-signed server certificate.
    CaFile(PathBuf),
    /// Any certificate: encrypted, but anyone in the middle can read it.
    Insecure,
}

/// Dials `target` and returns the two halves of its byte stream.
pub(crate) async fn dial(
    target: &Target,
    trust: &Trust,
) -> Result<(BoxRead, BoxWrite), ClientError> {
    let addr = format!("{}:{}", target.host, target.port);
    let failed = |error: std::io::Error| ClientError::Connect {
        addr: target.to_string(),
        error,
    };
    match target.scheme {
        Scheme::Tcp => {
            let stream = TcpStream::connect(&addr).await.map_err(failed)?;
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        Scheme::Tls => {
            let tls = dial_tls(target, &addr, trust).await?;
            let (read, write) = tokio::io::split(tls);
            Ok((Box::new(read), Box::new(write)))
        }
        Scheme::Ws => {
            let stream = TcpStream::connect(&addr).await.map_err(failed)?;
            let _ = stream.set_nodelay(true);
            websocket::dial(stream, target).await
        }
        Scheme::Wss => {
            let tls = dial_tls(target, &addr, trust).await?;
            websocket::dial(tls, target).await
        }
        Scheme::Quic => {
            let remote = tokio::net::lookup_host(&addr)
                .await
                .map_err(failed)?
                .next()
                .ok_or_else(|| failed(std::io::Error::other("the host has no address")))?;
            let (send, recv) = dial_quic(target, remote, trust).await?;
            Ok((Box::new(recv), Box::new(send)))
        }
    }
}

/// A TLS connection to `addr`, its certificate checked against `trust`.
async fn dial_tls(
    target: &Target,
    addr: &str,
    trust: &Trust,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let failed = |error: std::io::Error| ClientError::Connect {
        addr: target.to_string(),
        error,
    };
    let config = tls_config(trust, &[&version::TLS13, &version::TLS12], None)?;
    let name = server_name(&target.host)?;
    let stream = TcpStream::connect(addr).await.map_err(failed)?;
    let _ = stream.set_nodelay(true);
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|error| {
            // rustls reports what it refused as invalid data; the rest is
            // the network's doing and worth a retry.
            if error.kind() == std::io::ErrorKind::InvalidData {
                ClientError::Tls {
                    addr: target.to_string(),
                    why: error.to_string(),
                }
            } else {
                failed(error)
            }
        })
}

async fn dial_quic(
    target: &Target,
    remote: SocketAddr,
    trust: &Trust,
) -> Result<(quinn::SendStream, QuicRead), ClientError> {
    let config = tls_config(trust, &[&version::TLS13], Some(QUIC_ALPN))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(|e| {
        ClientError::Tls {
            addr: target.to_string(),
            why: e.to_string(),
        }
    })?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // The server pings at its heartbeat; this keeps NAT bindings open too.
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    client.transport_config(Arc::new(transport));
    let local: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let failed = |error: std::io::Error| ClientError::Connect {
        addr: target.to_string(),
        error,
    };
    let mut endpoint = quinn::Endpoint::client(local).map_err(failed)?;
    endpoint.set_default_client_config(client);
    let handshake_failed = |why: String| ClientError::Tls {
        addr: target.to_string(),
        why,
    };
    let connection = endpoint
        .connect(remote, &target.host)
        .map_err(|e| handshake_failed(e.to_string()))?
        .await
        .map_err(|e| match e {
            quinn::ConnectionError::TransportError(t) => handshake_failed(t.to_string()),
            other => failed(std::io::Error::other(other)),
        })?;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| failed(std::io::Error::other(e)))?;
    Ok((
        send,
        QuicRead {
            recv,
            _endpoint: endpoint,
        },
    ))
}

/// The receiving stream of a QUIC connection, holding the endpoint (its UDP
/// socket) open for as long as the connection is read.
struct QuicRead {
    recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl AsyncRead for QuicRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_string()).map_err(|e| ClientError::Tls {
        addr: host.to_string(),
        why: format!("`{host}` cannot be checked against a certificate: {e}"),
    })
}

/// The cryptography of anteroom's clients: ring, as the server's, with X25519
/// first (this ring provider would offer P-384 first, several times the
/// handshake's CPU on both sides). Public so that other clients of anteroom
/// (the load generator) negotiate what this library does.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    // AES-128-GCM first, as browsers order it: a quarter cheaper per byte
    // than AES-256-GCM for the server, which encrypts every delivery.
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

pub(crate) fn tls_config(
    trust: &Trust,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Option<&[u8]>,
) -> Result<ClientConfig, ClientError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let mut config = match trust {
        Trust::PublicRoots => {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let unreadable = |why: String| ClientError::Trust {
                path: path.clone(),
                why,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| unreadable(e.to_string()))?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(unreadable("no usable certificate in the file".to_string()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnything(provider)))
            .with_no_client_auth(),
    };
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(config)
}

/// `--insecure`: accepts any certificate, but still checks that the server
/// holds the key of the one it shows.
#[derive(Debug)]
struct TrustAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_a_scheme() {
        let t: Target = "127.0.0.1:7878".parse().unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Tcp, "127.0.0.1", 7878)
        );
        let t: Target = "tls://localhost:7879".parse().unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Tls, "localhost", 7879)
        );
        let t: Target = "quic://[::1]:7879/".parse().unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Quic, "::1", 7879)
        );
        assert_eq!(t.to_string(), "quic://[::1]:7879");
        assert!(
            "http://x:1"
                .parse::<Target>()
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!("tls://x".parse::<Target>().unwrap_err().contains("no port"));
        assert!(
            "tls://:80"
                .parse::<Target>()
                .unwrap_err()
                .contains("no host")
        );
        assert!(
            "x:port"
                .parse::<Target>()
                .unwrap_err()
                .contains("not a port")
        );
    }

    fn parts(url: &str) -> (Scheme, String, u16, String) {
        let t: Target = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
        (t.scheme, t.host, t.port, t.path)
    }

    #[test]
    fn websocket_urls_carry_a_path_that_defaults_to_ws() {
        let ws = |host: &str, port, path: &str| (Scheme::Ws, host.to_string(), port, path.into());
        assert_eq!(
            parts("ws://127.0.0.1:7880/ws"),
            ws("127.0.0.1", 7880, "/ws")
        );
        assert_eq!(parts("ws://127.0.0.1:7880"), ws("127.0.0.1", 7880, "/ws"));
        assert_eq!(parts("ws://127.0.0.1:7880/"), ws("127.0.0.1", 7880, "/ws"));
        assert_eq!(
            parts("ws://chat.example:8080/chat/ws?room=1"),
            ws("chat.example", 8080, "/chat/ws?room=1")
        );
        assert_eq!(parts("ws://chat.example/ws"), ws("chat.example", 80, "/ws"));
        assert_eq!(parts("ws://[::1]:7880/ws"), ws("::1", 7880, "/ws"));
        assert_eq!(parts("ws://[::1]"), ws("::1", 80, "/ws"));
        assert_eq!(
            parts("wss://chat.example/ws"),
            (Scheme::Wss, "chat.example".into(), 443, "/ws".into())
        );
        assert_eq!(
            parts("wss://localhost:7880"),
            (Scheme::Wss, "localhost".into(), 7880, "/ws".into())
        );
        // The other schemes have no path and keep needing a port.
        assert_eq!(parts("tls://x:1/").3, "");
        assert!(
            "tls://[::1]"
                .parse::<Target>()
                .unwrap_err()
                .contains("no port")
        );
    }

    #[test]
    fn websocket_urls_print_as_they_are_dialled() {
        for url in [
            "ws://127.0.0.1:7880/ws",
            "wss://chat.example:443/ws",
            "ws://[::1]:7880/a/b",
        ] {
            assert_eq!(url.parse::<Target>().unwrap().to_string(), url);
        }
        assert_eq!(
            "ws://h:1".parse::<Target>().unwrap().to_string(),
            "ws://h:1/ws"
        );
        assert_eq!(
            "quic://[::1]:7879/".parse::<Target>().unwrap().to_string(),
            "quic://[::1]:7879"
        );
    }

    #[test]
    fn bad_websocket_urls_are_refused() {
        assert!(
            "ws://:80/ws"
                .parse::<Target>()
                .unwrap_err()
                .contains("no host")
        );
        assert!(
            "ws://h:port/ws"
                .parse::<Target>()
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            "ws://h:99999/ws"
                .parse::<Target>()
                .unwrap_err()
                .contains("not a port")
        );
        let unknown = "http://h:1/ws".parse::<Target>().unwrap_err();
        assert!(
            unknown.contains("ws://") && unknown.contains("wss://"),
            "{unknown}"
        );
    }
}
