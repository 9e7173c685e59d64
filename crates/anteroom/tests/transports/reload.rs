//! SIGHUP reloads the certificate of the real binary under live
//! connections: established ones carry on, new ones get the new
//! certificate, and a pair that cannot be loaded leaves the current one.

use std::time::Duration;

use anteroom_client::Trust;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::kit::{self, AnyClient, HOST, Scratch, arg};
use crate::support::process::{Running, spawn};

fn hangup(server: &mut Running) {
    let pid = Pid::from_raw(server.child().id() as i32);
    kill(pid, Signal::SIGHUP).expect("send SIGHUP");
}

/// Sends SIGHUP and waits for the `count`th log line containing `outcome`.
async fn reload(server: &mut Running, outcome: &str, count: usize) -> String {
    hangup(server);
    server
        .wait_logged(outcome, count, Duration::from_secs(10))
        .await;
    assert_eq!(server.logged(outcome), count, "no {outcome:?} in the log");
    server.line_containing(outcome).unwrap()
}

/// New connections on both listeners: refused under `old`, admitted under
/// `new` (as `name-tls` and `name-quic`, seen by `watcher`).
async fn new_connections_use(
    urls: &[String; 2],
    old: &Trust,
    new: &Trust,
    name: &str,
    watcher: &mut AnyClient,
) {
    for url in urls {
        let why = kit::tls_refusal(url, kit::try_dial(url, old.clone()).await);
        assert!(why.contains("invalid peer certificate"), "{url}: {why}");
        let transport = &url[..url.find(':').unwrap()];
        let who = format!("{name}-{transport}");
        let mut c = kit::join(url, new.clone(), &who).await;
        let joined = watcher.recv_type("joined").await;
        assert_eq!(joined["name"].as_str(), Some(who.as_str()));
        c.send_type("bye", &[]).await;
        c.expect_bye("bye").await;
        let left = watcher.recv_type("left").await;
        assert_eq!(left["name"].as_str(), Some(who.as_str()));
    }
}

/// Both long-lived members still talk to each other.
async fn still_talking(a: &mut AnyClient, b: &mut AnyClient, text: &str) {
    a.say(text).await;
    for c in [a, b] {
        assert_eq!(c.next_message().await["text"].as_str(), Some(text));
    }
}

#[tokio::test]
async fn sighup_replaces_the_certificate_under_live_connections() {
    let dir = Scratch::new("reload");
    let a = kit::self_signed(&[HOST], "anteroom certificate A");
    let b = kit::self_signed(&[HOST], "anteroom certificate B");
    let trust_a = Trust::CaFile(dir.write("a.pem", &a.cert));
    let trust_b = Trust::CaFile(dir.write("b.pem", &b.cert));
    let (cert, key) = a.install(&dir);
    let mut server = spawn(
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
            "--tls-cert",
            arg(&cert),
            "--tls-key",
            arg(&key),
        ],
        &[],
    );
    let urls = [
        format!("tls://{}", server.logged_addr("TLS on ").await),
        format!("quic://{}", server.logged_addr("QUIC on ").await),
    ];
    let mut old_tls = kit::join(&urls[0], trust_a.clone(), "old-tls").await;
    let mut old_quic = kit::join(&urls[1], trust_a.clone(), "old-quic").await;
    assert_eq!(
        old_tls.recv_type("joined").await["name"].as_str(),
        Some("old-quic")
    );

    // Certificate B, with a key of its own.
    b.install(&dir);
    let line = reload(&mut server, "certificate reloaded", 1).await;
    assert!(line.contains("INFO"), "{line}");
    still_talking(&mut old_tls, &mut old_quic, "after the reload").await;
    new_connections_use(&urls, &trust_a, &trust_b, "b", &mut old_tls).await;

    // A half-written certificate file: a warning naming the file, and B
    // stays.
    let half: String = b.cert.lines().take(4).map(|l| format!("{l}\n")).collect();
    dir.replace("cert.pem", &half);
    let warning = reload(&mut server, "certificate not reloaded", 1).await;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("tls_cert") && warning.contains(arg(&cert)),
        "the warning does not name the file: {warning}"
    );
    new_connections_use(&urls, &trust_a, &trust_b, "half", &mut old_tls).await;

    // A certificate with a key that is not its own: the same.
    dir.replace("cert.pem", &b.cert);
    dir.replace("key.pem", &a.key);
    reload(&mut server, "certificate not reloaded", 2).await;
    assert_eq!(server.logged("does not fit"), 1, "no mismatch reported");
    new_connections_use(&urls, &trust_a, &trust_b, "mismatch", &mut old_tls).await;

    still_talking(&mut old_quic, &mut old_tls, "through it all").await;
    assert_eq!(server.logged("certificate reloaded"), 1);
}
