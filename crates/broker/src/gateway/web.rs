//! The web listener (`web_listen`): the browser client at `/`, WebSocket
//! sessions at `/ws`, file uploads at `/upload` and downloads at
//! `/files/{id}`, over HTTP/1.1 or, with `web_tls`, HTTPS.
//!
//! Every TCP connection takes a place under the connection caps, as on the
//! chat port, and keeps it while it serves HTTP and then, once upgraded, its
//! WebSocket session. A WebSocket upgrade that carries an `Origin` is
//! refused (403) unless the origin is the listener's own or one of
//! `web_allowed_origins`: a page elsewhere must not open sessions in its
//! visitors' names. Without an `Origin` (not a browser) it is allowed.

mod assets;
pub mod socket;
mod upload;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body as _, Bytes};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{Instrument, debug, info_span};

use super::Gateway;
use super::limits::Admitted;
use super::session::run_session_since;
use super::tls::TlsAcceptor;
use super::transport::MessageDuplex;
use crate::telemetry::{Transport, metrics};

/// The WebSocket subprotocol of anteroom, selected when a client offers it.
pub const SUBPROTOCOL: &str = "anteroom.v1";

/// Time a connection has to send a request's headers; also how long an
/// idle keep-alive connection stays open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head accepted (the browser's headers and cookies).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long open HTTP connections get to finish at shutdown.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// Every response's body: most are whole in memory, a download streams.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A body held in memory.
pub fn full(bytes: Bytes) -> Body {
    upload::full_body(Full::new(bytes))
}

/// Turns a response built whole into one with a [`Body`].
fn boxed(response: Response<Full<Bytes>>) -> Response<Body> {
    response.map(upload::full_body)
}

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Accepts until the gateway's shutdown token is cancelled. With `tls`,
/// every connection is HTTPS.
pub async fn accept_loop(listener: TcpListener, gateway: Arc<Gateway>, tls: Option<TlsAcceptor>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = gateway.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "web accept failed");
                // Out of descriptors, most likely: let some close.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        let place = match gateway.limits.admit(peer.ip()) {
            Ok(place) => Arc::new(place),
            Err(why) => {
                metrics().rejected(why.reason());
                debug!(%peer, reason = why.reason(), "web connection refused by the caps");
                if tls.is_none() {
                    let _ = stream.try_write(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
                continue;
            }
        };
        let gw = gateway.clone();
        let tls = tls.clone();
        gateway.tracker.spawn(async move {
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    let deadline = accepted + gw.config.handshake_timeout;
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        _ => return,
                    }
                }
            };
            serve_connection(io, gw, place, peer).await;
        });
    }
}

async fn serve_connection(
    io: Box<dyn Io>,
    gateway: Arc<Gateway>,
    place: Arc<Admitted>,
    peer: SocketAddr,
) {
    let gw = gateway.clone();
    let service = hyper::service::service_fn(move |req| {
        let gw = gw.clone();
        let place = place.clone();
        async move { Ok::<_, Infallible>(route(req, &gw, &place, peer).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = gateway.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_LIMIT, connection.as_mut()).await {
                Ok(served) => served,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = served {
        debug!(%error, "web connection failed");
    }
}

async fn route(
    mut req: Request<hyper::body::Incoming>,
    gateway: &Arc<Gateway>,
    place: &Arc<Admitted>,
    peer: SocketAddr,
) -> Response<Body> {
    let files = gateway.chat.files.as_deref();
    if req.uri().path() == UPLOAD_PATH
        && let Some(files) = files
    {
        if req.method() != Method::POST {
            let mut refused = plain(StatusCode::METHOD_NOT_ALLOWED, "uploads are POSTed\n");
            refused
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return boxed(refused);
        }
        return upload::upload(req, files).await;
    }
    if !req.body().is_end_stream() && req.uri().path() != "/ws" {
        let mut refused = plain(StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body\n");
        refused
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return boxed(refused);
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut refused = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return boxed(refused);
    }
    if let (Some(id), Some(files)) = (
        req.uri().path().strip_prefix(crate::chat_log::FILES_PATH),
        files,
    ) {
        return upload::download(id, files, head).await;
    }
    if req.uri().path() == "/ws" {
        return match Upgrade::check(req.headers(), &gateway.config.web_allowed_origins) {
            Ok(upgrade) => {
                let on_upgrade = hyper::upgrade::on(&mut req);
                let gw = gateway.clone();
                let place = place.clone();
                let span = info_span!("conn", %peer, conn_id = tracing::field::Empty, user = tracing::field::Empty);
                gateway.tracker.spawn(
                    async move {
                        let Ok(upgraded) = on_upgrade.await else {
                            return;
                        };
                        let limit = gw.config.max_frame_bytes;
                        let socket = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            Some(socket::config(limit)),
                        )
                        .await;
                        metrics().accepted(Transport::WebSocket);
                        let (inbound, outbound) = socket::split(socket, limit);
                        let transport = MessageDuplex::new(inbound, outbound);
                        run_session_since(gw, transport, Instant::now()).await;
                        drop(place);
                    }
                    .instrument(span),
                );
                boxed(upgrade.response())
            }
            Err(refused) => boxed(refused.response()),
        };
    }
    boxed(match assets::find(req.uri().path()) {
        Some(asset) => assets::respond(asset, req.headers().get(header::IF_NONE_MATCH), head),
        None => plain(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// Where files are uploaded.
pub const UPLOAD_PATH: &str = "/upload";

/// A WebSocket upgrade that passed the checks.
struct Upgrade {
    accept: String,
    subprotocol: bool,
}

impl Upgrade {
    /// Checks an upgrade request (RFC 6455, section 4.2.1) and its origin.
    fn check(headers: &HeaderMap, allowed: &[String]) -> Result<Self, Refused> {
        let has_token = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                "a WebSocket upgrade is expected here\n",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(Refused(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket version 13 only\n",
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key is missing\n",
            ));
        };
        if let Some(origin) = headers.get(header::ORIGIN)
            && !origin_allowed(origin, headers.get(header::HOST), allowed)
        {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                "this origin may not open a session here\n",
            ));
        }
        Ok(Self {
            accept: derive_accept_key(key.as_bytes()),
            subprotocol: has_token(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL),
        })
    }

    fn response(self) -> Response<Full<Bytes>> {
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if self.subprotocol {
            response = response.header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
        }
        response.body(Full::new(Bytes::new())).unwrap_or_default()
    }
}

/// Why an upgrade request is refused: a status and a line of text.
struct Refused(StatusCode, &'static str);

impl Refused {
    fn response(self) -> Response<Full<Bytes>> {
        let mut response = plain(self.0, self.1);
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Whether a browser page at `origin` may open a session: the listener's
/// own origin (`http://` or `https://` and the request's `Host`), or one
/// the operator allowed.
fn origin_allowed(origin: &HeaderValue, host: Option<&HeaderValue>, allowed: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let own = host.and_then(|h| h.to_str().ok()).is_some_and(|host| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    });
    own || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap_or_default();
    assets::secure(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(origin: &str, host: &str, list: &[&str]) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        origin_allowed(
            &HeaderValue::from_str(origin).unwrap(),
            Some(&HeaderValue::from_str(host).unwrap()),
            &list,
        )
    }

    #[test]
    fn the_listeners_own_origin_and_listed_ones_are_allowed() {
        assert!(allowed("http://127.0.0.1:7880", "127.0.0.1:7880", &[]));
        assert!(allowed("https://chat.example", "chat.example", &[]));
        assert!(!allowed("http://evil.example", "127.0.0.1:7880", &[]));
        assert!(!allowed("http://127.0.0.1:7881", "127.0.0.1:7880", &[]));
        assert!(!allowed("null", "127.0.0.1:7880", &[]));
        assert!(allowed(
            "https://app.example",
            "127.0.0.1:7880",
            &["https://app.example"]
        ));
        assert!(!allowed(
            "http://app.example",
            "127.0.0.1:7880",
            &["https://app.example"]
        ));
    }
}
