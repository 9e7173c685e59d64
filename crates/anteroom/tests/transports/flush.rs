//! TLS buffers what a full socket will not take. A frame the client library
//! has sent must still leave once the server reads again, though nothing is
//! written after it: every send is flushed.

use std::borrow::Cow;
use std::time::Duration;

use anteroom_broker::certs::Certificates;
use anteroom_broker::gateway::tls::TlsAcceptor;
use anteroom_client::protocol::ClientMessage;
use tokio::net::{TcpListener, TcpSocket};

use crate::kit::{self, HOST, Scratch};
use crate::support::read_frame;

/// A TCP listener whose connections have a small receive buffer, so that
/// a peer's socket fills after a few kilobytes.
fn small_listener() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(1).unwrap()
}

#[tokio::test]
async fn the_client_library_flushes_each_frame_it_sends_over_tls() {
    let dir = Scratch::new("flush-client");
    let pem = kit::self_signed(&[HOST], "anteroom test server");
    dir.write("trust.pem", &pem.cert);
    let (cert, key) = pem.install(&dir);
    let certs = Certificates::load(&cert, &key).expect("load the pair");
    let acceptor = TlsAcceptor::from(certs.tls_config());
    // A TLS server that completes the handshake, then reads nothing for now.
    let listener = small_listener();
    let url = format!("tls://{}", listener.local_addr().unwrap());
    let (dialled, accepted) = tokio::join!(kit::try_dial(&url, kit::trust(&dir)), async {
        let (stream, _) = listener.accept().await.unwrap();
        acceptor.accept(stream).await.expect("TLS handshake")
    });
    let Ok(connection) = dialled else {
        panic!("dial {url} failed");
    };
    let (_reader, mut writer) = connection.split();
    let mut server_side = accepted;

    // Send until a send has waited a while: the socket is full, and the TLS
    // layer holds what it could not take.
    let text = "x".repeat(1000);
    let say = ClientMessage::Say {
        text: Cow::Borrowed(&text),
        attachment: None,
    };
    let mut sent = 0usize;
    while let Ok(done) = tokio::time::timeout(Duration::from_millis(300), writer.send(&say)).await {
        done.expect("send");
        sent += 1;
        assert!(sent < 100_000, "the socket never filled");
    }

    // The server reads again; the client writes nothing more. Every frame
    // whose send returned must arrive.
    let mut received = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while received < sent && read_frame(&mut server_side).await.is_some() {
            received += 1;
        }
    })
    .await;
    assert!(
        received >= sent,
        "{sent} sends returned but only {received} frames arrived: the rest sat in the TLS buffer"
    );
}
