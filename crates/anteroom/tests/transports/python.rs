//! The Python example's TLS mode, with the standard `ssl` module: it checks
//! the certificate against `--ca` and joins, and refuses a server it cannot
//! trust.

use std::path::Path;

use crate::kit::{Scratch, arg, start};

#[tokio::test]
async fn the_python_example_speaks_tls_and_checks_the_certificate() {
    let has_msgpack = std::process::Command::new("python3")
        .args(["-c", "import msgpack, ssl"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_msgpack
        && !crate::support::required(
            "python3 with msgpack",
            "python3 or its msgpack package is missing (pip install msgpack)",
        )
    {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/chat.py");
    let dir = Scratch::new("python-tls");
    let server = start(&dir, |_| {}).await;
    let tls = server.tls_addr.expect("TLS listens");
    let at = format!("localhost:{}", tls.port());
    let trusted = dir.path.join("trust.pem");
    let run = |extra: Vec<String>| {
        let mut command = tokio::process::Command::new("python3");
        command
            .arg(&script)
            .args(["--tls", "--server", &at, "--name", "py", "--timeout", "5"])
            .args(extra);
        command.output()
    };

    let joined = run(vec!["--ca".into(), arg(&trusted).to_string()])
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&joined.stdout);
    assert!(
        joined.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    assert!(
        out.lines().next().unwrap_or("").contains("\"welcome\""),
        "{out}"
    );
    assert!(out.contains("hello from Python"), "{out}");

    // Without --ca the system's authorities do not know the test's issuer.
    let refused = run(Vec::new()).await.unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "{err}");
    server.stop().await;
}
