//! The client refuses a certificate it cannot trust, over TLS and QUIC
//! alike, with an error that names the reason; `Trust::Insecure` takes any;
//! `anteroom chat` says why and exits non-zero.

use std::process::Stdio;
use std::time::Duration;

use anteroom_client::Trust;
use tokio::io::AsyncWriteExt;

use crate::kit::{self, Authority, HOST, Scratch, arg};
use crate::support::TestServer;
use crate::support::process::BIN;

/// The TLS and QUIC URLs of a server.
fn encrypted(s: &TestServer) -> [String; 2] {
    let url = kit::urls(s);
    [url.tls, url.quic]
}

/// Expects every encrypted URL of `s` to be refused under `trust` with a
/// TLS error containing each of `reasons`.
async fn refused(s: &TestServer, trust: &Trust, reasons: &[&str]) {
    for url in encrypted(s) {
        let why = kit::tls_refusal(&url, kit::try_dial(&url, trust.clone()).await);
        for reason in reasons {
            assert!(why.contains(reason), "{url}: {why:?} lacks {reason:?}");
        }
    }
}

/// Expects every encrypted URL of `s` to admit a member under `trust`.
async fn admitted(s: &TestServer, trust: &Trust, name: &str) {
    for (i, url) in encrypted(s).iter().enumerate() {
        let mut c = kit::join(url, trust.clone(), &format!("{name}{i}")).await;
        c.send_type("bye", &[]).await;
        c.expect_bye("bye").await;
    }
}

#[tokio::test]
async fn certificates_the_client_cannot_trust_are_refused_with_the_reason() {
    let ca = Authority::new("anteroom test CA");
    let ca_dir = Scratch::new("trust-ca");
    let by_ca = Trust::CaFile(ca_dir.write("ca.pem", &ca.pem()));

    // A certificate from the trusted CA, for the right name: the control.
    let dir = Scratch::new("trust-good");
    let good = kit::start_with(&ca.leaf(&[HOST]), &dir, |_| {}).await;
    admitted(&good, &by_ca, "good").await;

    // Expired.
    let dir = Scratch::new("trust-expired");
    let expired = kit::start_with(&ca.expired_leaf(&[HOST]), &dir, |_| {}).await;
    refused(&expired, &by_ca, &["certificate expired"]).await;

    // Valid, but for another name.
    let dir = Scratch::new("trust-name");
    let elsewhere = kit::start_with(&ca.leaf(&["chat.example.org"]), &dir, |_| {}).await;
    refused(
        &elsewhere,
        &by_ca,
        &["not valid for name", HOST, "chat.example.org"],
    )
    .await;

    // Self-signed: unknown to the public roots and to another CA; accepted
    // when it is the trusted file itself, or when nothing is checked.
    let dir = Scratch::new("trust-self");
    let own = kit::start(&dir, |_| {}).await;
    refused(&own, &Trust::PublicRoots, &["UnknownIssuer"]).await;
    refused(&own, &by_ca, &["invalid peer certificate"]).await;
    admitted(&own, &kit::trust(&dir), "trusting").await;
    admitted(&own, &Trust::Insecure, "insecure").await;

    for s in [good, expired, elsewhere, own] {
        s.stop().await;
    }
}

/// Runs `anteroom chat` in line mode (standard input and output are pipes)
/// with `args`, typing `input` and closing standard input; returns the exit
/// status, standard output and standard error.
async fn chat(args: &[&str], input: &str) -> (std::process::ExitStatus, String, String) {
    let mut child = tokio::process::Command::new(BIN)
        .arg("chat")
        .args(args)
        .env_remove("ANTEROOM_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run anteroom chat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("anteroom chat exits by itself")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn chat_says_why_it_cannot_trust_the_server_and_exits_non_zero() {
    let dir = Scratch::new("trust-chat");
    let s = kit::start(&dir, |_| {}).await;
    for url in encrypted(&s) {
        let (status, stdout, stderr) = chat(&["--name", "ann", "--server", &url], "hi\n").await;
        assert!(!status.success(), "{url}: exit status {status}");
        assert!(
            stderr.contains("UnknownIssuer") && stderr.contains("--ca"),
            "{url}: standard error does not say why or what to do:\n{stderr}"
        );
        assert!(!stdout.contains("hi"), "{url}: chatted anyway:\n{stdout}");

        // The same server, trusted with --ca: the line is sent and echoed.
        let ca = kit::trust(&dir);
        let Trust::CaFile(ca) = &ca else {
            unreachable!()
        };
        let (status, stdout, stderr) = chat(
            &["--name", "bob", "--server", &url, "--ca", arg(ca)],
            "over an encrypted link\n",
        )
        .await;
        assert!(status.success(), "{url}: exit status {status}\n{stderr}");
        assert!(
            stdout.contains("<bob> over an encrypted link"),
            "{url}: {stdout}"
        );
    }
    s.stop().await;
}
