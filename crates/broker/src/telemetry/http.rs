//! The metrics listener: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (accepting chat connections).
//!
//! It shares the process's descriptors and runtime with the chat, so it is
//! bounded like the chat listener: a cap on connections (one over it is
//! closed at once), a deadline for each request's headers (which also closes
//! an idle keep-alive connection), a longest life per connection, a bound on
//! the size of a request's head, and no request body at all. A client that
//! connects and says nothing, or sends half a request line, holds a
//! descriptor for seconds, not forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body, Bytes};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Open metrics connections at most. A scraper or a health check needs one
/// or two; one over the cap is closed at once, before it costs anything, so
/// the metrics listener stays within the descriptors start-up keeps free.
pub const MAX_CONNECTIONS: usize = 16;

/// Longest wait for a request's complete head, from the connection's start
/// or from the end of the previous response: a slow or silent client, and
/// an idle keep-alive connection, are closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest life of one connection, whatever it does: bounds a client that
/// never reads its response, which the header deadline does not see.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Largest request head (request line and headers); beyond it the answer
/// is 431 and the connection is closed.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Read buffer of a connection at most (hyper's smallest allowed).
const MAX_BUFFER_BYTES: usize = 8 * 1024;

/// Serves HTTP until `stop` is cancelled.
pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics connection cap reached; closed");
            drop(stream);
            continue;
        };
        let ready = ready.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = serve_connection(stream, ready) => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    debug!(%peer, "metrics connection open too long; closed");
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Serves one connection, whatever carries it, with the bounds on request
/// heads and the header deadline (the lifetime and the cap are the
/// listener's). Public so that the fuzz target drives exactly this.
pub async fn serve_connection<S>(stream: S, ready: Arc<AtomicBool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ready = ready.clone();
        async move { Ok::<_, Infallible>(respond(&req, &ready)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES);
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(%error, "metrics connection failed");
    }
}

fn respond<B: Body>(req: &Request<B>, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if !req.body().is_end_stream() {
        // Nothing here takes a body; it is never read, and the connection
        // is closed rather than left to drain it.
        let mut refused = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requests carry no body\n".into(),
        );
        refused.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return refused;
    }
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
