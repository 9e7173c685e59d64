//! The server's certificate: loaded from `tls_cert` and `tls_key`, shared
//! by every encrypted listener (TLS, QUIC), and replaced on SIGHUP.
//!
//! Listeners resolve the certificate per handshake from [`Certificates`],
//! so a reload reaches new connections at once while established ones keep
//! the session keys they negotiated. A pair that fails to load, or whose key
//! does not match the certificate, leaves the current one in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocol of anteroom over QUIC.
pub const QUIC_ALPN: &[u8] = b"anteroom/1";

/// Why a certificate pair cannot be used. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The chain file cannot be read or holds no PEM certificate.
    #[error("cannot read a certificate chain from tls_cert {path}: {why}")]
    Chain { path: PathBuf, why: String },
    /// The key file cannot be read or holds no PEM private key.
    #[error("cannot read a private key from tls_key {path}: {why}")]
    Key { path: PathBuf, why: String },
    /// The key is not the certificate's, or of a kind the provider cannot use.
    #[error("tls_key {key} does not fit tls_cert {cert}: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The certificate every encrypted listener presents, reloadable.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, CertError> {
        let loaded = load_pair(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Loads the files again. New handshakes use the new pair; on error
    /// the current pair stays.
    pub fn reload(&self) -> Result<(), CertError> {
        let loaded = Arc::new(load_pair(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(())
    }

    /// The certificate chain presented now, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().cert.clone()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rustls configuration of the TLS listener: TLS 1.2 and 1.3.
    pub fn tls_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        Arc::new(self.server_config(&[&version::TLS13, &version::TLS12], &[]))
    }

    /// The rustls configuration of the QUIC listener: TLS 1.3 (all QUIC
    /// allows) and the ALPN `anteroom/1`.
    pub fn quic_config(self: &Arc<Self>) -> ServerConfig {
        self.server_config(&[&version::TLS13], &[QUIC_ALPN])
    }

    fn server_config(
        self: &Arc<Self>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The one cryptography provider of the server and the client: ring, which
/// builds anywhere without a C toolchain beyond the system's. rustls marks it
/// deprecated because it lacks post-quantum key exchange (X25519MLKEM768);
/// the classical groups it offers are what TLS 1.2/1.3 clients expect.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = KX_GROUPS.to_vec();
    prefer_aes_128(&mut provider);
    Arc::new(provider)
}

/// Puts the AES-128-GCM suites first, as browsers order them: with AES
/// instructions they cost about a quarter less than AES-256-GCM per byte,
/// on every delivery to every member, for a margin no attack needs. The
/// client's order decides (rustls's own lists AES-256 first; anteroom's
/// client library orders them like this).
pub fn prefer_aes_128(provider: &mut CryptoProvider) {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    };
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
}

/// Key exchange groups, preferred first. X25519 is the fastest (a P-384
/// exchange costs several times its CPU) and what browsers offer first;
/// as this ring provider lists P-384 first, the order is set here.
pub const KX_GROUPS: &[&dyn rustls::crypto::SupportedKxGroup] = &[
    rustls::crypto::ring::kx_group::X25519,
    rustls::crypto::ring::kx_group::SECP256R1,
    rustls::crypto::ring::kx_group::SECP384R1,
];

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| CertError::Chain {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Chain {
            path: cert.to_path_buf(),
            why: "no CERTIFICATE block in the file".to_string(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| CertError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        why: e.to_string(),
    })
}
