//! `anteroom cert`: a self-signed certificate and its key, for trying TLS,
//! QUIC and HTTPS locally. Production servers use a certificate from a CA
//! (docs/tls.md).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Names a certificate is for unless told otherwise.
const DEFAULT_NAMES: &[&str] = &["localhost", "127.0.0.1"];

#[derive(clap::Args)]
pub struct CertArgs {
    /// Directory to write cert.pem and key.pem into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A host name or IP address the certificate is valid for; repeatable.
    /// Default: localhost and 127.0.0.1.
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
}

/// Writes the pair and prints both paths and the certificate's SHA-256
/// fingerprint.
pub fn run(args: CertArgs) -> anyhow::Result<()> {
    let names = if args.names.is_empty() {
        DEFAULT_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        args.names
    };
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.clone())
            .context("cannot make a certificate for these names")?;
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cert_path = args.out.join("cert.pem");
    let key_path = args.out.join("key.pem");
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write(&key_path, signing_key.serialize_pem().as_bytes(), 0o600)?;
    println!("certificate: {}", cert_path.display());
    println!("key:         {}", key_path.display());
    println!("names:       {}", names.join(", "));
    println!("sha256:      {}", fingerprint(cert.der()));
    Ok(())
}

/// The SHA-256 of a certificate's DER bytes, as colon-separated hex (the
/// form browsers and `openssl x509 -fingerprint -sha256` show).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_sha256_in_colon_hex() {
        // SHA-256 of the empty input.
        assert_eq!(
            super::fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }
}
