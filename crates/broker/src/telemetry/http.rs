//! The metrics listener: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (accepting chat connections).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// HTTP connections served at once. Scrapers and health checks need one or
/// two; more are closed as they come, so the metrics listener stays within
/// the descriptors start-up keeps free for it.
pub const MAX_CONNECTIONS: usize = 16;

/// The longest one metrics connection is served; a scraper that keeps its
/// connection alive simply opens a new one.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves HTTP until `stop` is cancelled.
pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!("metrics connection refused: too many at once");
            continue;
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let ready = ready.clone();
                async move { Ok::<_, Infallible>(respond(&req, &ready)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // A connection that stays open, busy or idle, gives its place
            // back after a while: a few idle ones must not lock scrapers out.
            if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                debug!(%error, "metrics connection failed");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, crate::telemetry::render()),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Fetches `path` from an HTTP server and returns the status code; used by
/// `anteroom healthcheck` in containers that ship no HTTP client.
pub async fn probe(addr: std::net::SocketAddr, path: &str) -> Result<u16, ProbeError> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        Ok::<_, ProbeError>(response.status().as_u16())
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), work)
        .await
        .map_err(|_| ProbeError::Timeout)?
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("no answer within 3 s")]
    Timeout,
}
