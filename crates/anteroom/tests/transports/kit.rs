//! What the transport tests share: certificates made on the spot, a server
//! with every listener, and the raw test client over TLS and QUIC.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anteroom_broker::config::Config;
use anteroom_client::transport::{BoxRead, BoxWrite};
use anteroom_client::{AnyConnection, ClientError, Connection, Trust};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use tokio::io::Join;

use crate::support::{Client, TestServer};

/// The raw test client over any transport the client library dials.
pub type AnyClient = Client<Join<BoxRead, BoxWrite>>;

/// The address every test dials, and the name its certificates are for.
pub const HOST: &str = "127.0.0.1";

/// A directory of the test's own, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("anteroom-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch { path }
    }

    /// Writes `contents` to the file `name` in the directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        path
    }

    /// Replaces the file `name` in one step (written aside, then renamed
    /// over it), as an operator's deployment tool would.
    pub fn replace(&self, name: &str, contents: &str) -> PathBuf {
        let aside = self.write(&format!("{name}.new"), contents);
        let path = self.path.join(name);
        std::fs::rename(aside, &path).expect("rename a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A certificate chain and its private key, both PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pem {
    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn install(&self, dir: &Scratch) -> (PathBuf, PathBuf) {
        (
            dir.replace("cert.pem", &self.cert),
            dir.replace("key.pem", &self.key),
        )
    }
}

fn params(names: &[&str], common_name: &str) -> CertificateParams {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).expect("valid names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

/// A self-signed certificate for `names`, with a fresh key.
pub fn self_signed(names: &[&str], common_name: &str) -> Pem {
    let key = KeyPair::generate().expect("generate a key");
    let cert = params(names, common_name)
        .self_signed(&key)
        .expect("self-sign");
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A private certificate authority that signs server certificates.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(common_name: &str) -> Self {
        let mut ca = params(&[], common_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("generate a key");
        Authority {
            issuer: CertifiedIssuer::self_signed(ca, key).expect("self-sign the CA"),
        }
    }

    /// The authority's own certificate: what a client trusts.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`, valid from 1975 to 4096.
    pub fn leaf(&self, names: &[&str]) -> Pem {
        self.sign(params(names, "anteroom test server"))
    }

    /// A server certificate for `names` that expired in 2021.
    pub fn expired_leaf(&self, names: &[&str]) -> Pem {
        let mut leaf = params(names, "anteroom expired server");
        leaf.not_before = date_time_ymd(2020, 1, 1);
        leaf.not_after = date_time_ymd(2021, 1, 1);
        self.sign(leaf)
    }

    fn sign(&self, leaf: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("generate a key");
        let cert = leaf.signed_by(&key, &*self.issuer).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// An in-process server with TCP, TLS and QUIC listeners on free ports,
/// presenting `pem`, with `adjust` applied to the defaults.
pub async fn start_with(pem: &Pem, dir: &Scratch, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let (cert, key) = pem.install(dir);
    TestServer::start(|c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.quic_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        adjust(c);
    })
    .await
}

/// An in-process server with every listener and a self-signed certificate
/// for [`HOST`]; the client trusts it with `Trust::CaFile(dir/trust.pem)`.
pub async fn start(dir: &Scratch, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let pem = self_signed(&[HOST, "localhost"], "anteroom test server");
    dir.write("trust.pem", &pem.cert);
    start_with(&pem, dir, adjust).await
}

/// Trusting only the certificates in `dir/trust.pem`.
pub fn trust(dir: &Scratch) -> Trust {
    Trust::CaFile(dir.path.join("trust.pem"))
}

/// The URLs of a server's encrypted listeners.
pub struct Urls {
    pub tls: String,
    pub quic: String,
}

pub fn urls(s: &TestServer) -> Urls {
    Urls {
        tls: format!("tls://{}", s.tls_addr.expect("a TLS listener")),
        quic: format!("quic://{}", s.quic_addr.expect("a QUIC listener")),
    }
}

/// Dials `url` with the client library, the handshake included.
pub async fn try_dial(url: &str, trust: Trust) -> Result<AnyConnection, ClientError> {
    Connection::builder()
        .connect_timeout(Duration::from_secs(10))
        .trust(trust)
        .dial(url)
        .await
}

/// Dials `url` with the client library and hands the byte stream to the
/// raw test client, which encodes and checks frames on its own.
pub async fn dial(url: &str, trust: Trust) -> AnyClient {
    match try_dial(url, trust).await {
        Ok(connection) => raw(connection),
        Err(error) => panic!("dial {url}: {error}"),
    }
}

/// The byte stream under a connection nothing has been read from yet.
pub fn raw(connection: AnyConnection) -> AnyClient {
    let (frames, write) = connection.split_frames();
    assert!(frames.read_buffer().is_empty(), "nothing read yet");
    Client {
        stream: tokio::io::join(frames.into_inner(), write),
    }
}

/// Dials `url` and joins as `name`, expecting a direct `welcome`.
pub async fn join(url: &str, trust: Trust, name: &str) -> AnyClient {
    let mut c = dial(url, trust).await;
    c.enter(name).await;
    c
}

/// Dials `url` as `name`, expecting to be queued at `position`.
pub async fn queue(url: &str, trust: Trust, name: &str, position: u64) -> AnyClient {
    let mut c = dial(url, trust).await;
    c.hello(name).await;
    let q = c.recv_type("queued").await;
    assert_eq!(q["position"].as_u64(), Some(position), "{name}: {q}");
    c
}

/// The reason in a refusal the client library reports as a TLS failure;
/// panics on anything else.
pub fn tls_refusal(url: &str, outcome: Result<AnyConnection, ClientError>) -> String {
    match outcome {
        Ok(_) => panic!("{url}: connected despite the certificate"),
        Err(error @ ClientError::Tls { .. }) => error.to_string(),
        Err(other) => panic!("{url}: expected a TLS error, got: {other}"),
    }
}

/// Whether a program is on PATH. Under CI (`CI` set) a missing program is
/// a failure, not a skip: `.ci/run` installs it.
pub fn have_program(name: &str, package: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| dir.join(name).is_file());
    if !found && std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{name} is required under CI but not installed (apt-get install {package})");
    }
    found
}

/// A path as a string for a command line.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
