//! `web_tls`: the web listener speaks HTTPS and WSS only.

use anteroom_client::{ClientError, Trust};

use crate::certs::{self, HOST, Scratch};
use crate::kit;
use crate::support::TestServer;

/// A server whose web listener uses TLS with a self-signed certificate for
/// [`HOST`], trusted with `Trust::CaFile(dir/trust.pem)`.
async fn start_tls(dir: &Scratch) -> TestServer {
    let pem = certs::self_signed(&[HOST, "localhost"], "anteroom test server");
    dir.write("trust.pem", &pem.cert);
    let (cert, key) = pem.install(dir);
    kit::start(|c| {
        c.web_tls = true;
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await
}

#[tokio::test]
async fn wss_works_and_plain_ws_to_the_same_port_does_not() {
    let dir = Scratch::new("wss");
    let server = start_tls(&dir).await;
    let web = kit::web(&server);
    let wss = format!("wss://{web}/ws");

    let mut ann = certs::join(&wss, certs::trust(&dir), "ann").await;
    let mut bob = server.join("bob").await;
    ann.recv_type("joined").await;
    ann.say("over wss").await;
    let m = bob.next_message().await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("ann"), Some("over wss"))
    );
    assert_eq!(ann.next_message().await["text"].as_str(), Some("over wss"));
    bob.say("over tcp").await;
    assert_eq!(ann.next_message().await["text"].as_str(), Some("over tcp"));

    // The certificate is checked as for tls://.
    let untrusted = certs::try_dial(&wss, Trust::PublicRoots).await;
    let why = certs::tls_refusal(&wss, untrusted);
    assert!(why.contains("UnknownIssuer"), "{why}");

    // Plain HTTP to the TLS port: no upgrade, no session.
    let plain = format!("ws://{web}/ws");
    match certs::try_dial(&plain, Trust::PublicRoots).await {
        Ok(_) => panic!("{plain}: a plain WebSocket on the TLS port"),
        Err(error) => assert!(matches!(error, ClientError::Connect { .. }), "{error}"),
    }
    match kit::Ws::try_open(web, true).await {
        Ok(_) => panic!("a plain WebSocket upgrade on the TLS port"),
        Err(error) => println!("plain ws:// refused: {error}"),
    }

    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    server.stop().await;
}
