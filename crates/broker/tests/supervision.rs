//! A component that panics stops the server with an error, instead of
//! leaving it to serve a room that no longer works.
//!
//! The fault is injected from outside the broker's code: the test's tracing
//! subscriber panics when admission logs its decision on a `hello`, so the
//! panic unwinds through the admission task exactly as a bug there would.
//! The runtime is single-threaded, so every task runs on the thread where the
//! subscriber is installed.

use std::borrow::Cow;
use std::time::Duration;

use anteroom_broker::config::Config;
use anteroom_broker::server::{Server, ServerError};
use anteroom_protocol::ClientMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Panics on any event logged from `target`; ignores everything else.
struct PanicOnEventFrom(&'static str);

impl Subscriber for PanicOnEventFrom {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() == self.0 {
            panic!("injected fault in {}", self.0);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn a_component_panic_ends_the_server_with_an_error() {
    let _fault =
        tracing::subscriber::set_default(PanicOnEventFrom("anteroom_broker::room::admission"));
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        web_listen: None,
        store: Some(anteroom_broker::config::StoreKind::Memory),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    };
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr();
    let run = tokio::spawn(server.run(CancellationToken::new()));

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = ClientMessage::Hello {
        name: Cow::Borrowed("ann"),
        features: None,
        last_id: None,
        resume: None,
    };
    client.write_all(&hello.to_frame()).await.unwrap();

    let ended = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the server kept running without admission")
        .expect("the server's own task does not panic");
    assert!(
        matches!(ended, Err(ServerError::ComponentPanicked("admission"))),
        "{ended:?}"
    );
    // The client was told the server is going away.
    let mut said = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut said)).await;
    let bye = String::from_utf8_lossy(&said);
    assert!(bye.contains("shutdown"), "{bye:?}");
    let counted = anteroom_broker::telemetry::render()
        .lines()
        .find_map(|l| l.strip_prefix("anteroom_panics_total{task=\"admission\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(1.0));
}
