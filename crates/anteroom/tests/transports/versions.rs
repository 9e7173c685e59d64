//! The TLS versions the listener speaks, as another implementation sees
//! them: `openssl s_client` gets TLS 1.2 and 1.3, and a fatal alert from the
//! server for anything older.

use std::process::Stdio;
use std::time::Duration;

use crate::kit::{self, Scratch, arg};

/// Runs `openssl s_client` against `addr` with `args`, standard input
/// closed; returns whether it succeeded and everything it printed.
async fn s_client(addr: &str, args: &[&str]) -> (bool, String) {
    let child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", addr])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("openssl s_client finishes by itself")
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_spoken_and_older_versions_refused() {
    if !kit::have_program("openssl", "openssl") {
        println!("skipped: TLS versions as openssl s_client sees them (openssl not installed)");
        return;
    }
    let dir = Scratch::new("versions");
    let s = kit::start(&dir, |_| {}).await;
    let addr = s.tls_addr.unwrap().to_string();
    let ca = dir.path.join("trust.pem");

    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (ok, out) = s_client(&addr, &[flag, "-CAfile", arg(&ca)]).await;
        assert!(ok, "{version} refused:\n{out}");
        assert!(
            out.contains(&format!("New, {version}, Cipher is")),
            "{version} not negotiated:\n{out}"
        );
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{version}: the certificate did not verify:\n{out}"
        );
    }

    // Security level 0, so that OpenSSL itself is willing to offer the old
    // versions: the refusal seen is the server's. rustls answers such a
    // hello with a handshake_failure alert (it lacks the
    // signature_algorithms extension, checked before the version), where
    // other servers send protocol_version: either is a refusal by alert.
    for (flag, version) in [("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")] {
        let (ok, out) = s_client(&addr, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        assert!(!ok, "{version} accepted:\n{out}");
        assert!(
            out.contains(&format!("Protocol  : {version}\n")),
            "openssl did not offer {version}:\n{out}"
        );
        assert!(
            !out.contains("no protocols available"),
            "{version}: refused by openssl itself, not by the server:\n{out}"
        );
        assert!(
            out.contains("alert handshake failure") || out.contains("alert protocol version"),
            "{version}: no fatal alert from the server:\n{out}"
        );
        assert!(
            out.contains("Cipher is (NONE)") && out.contains("no peer certificate available"),
            "{version}: the handshake went further than the hello:\n{out}"
        );
    }
    s.stop().await;
}
