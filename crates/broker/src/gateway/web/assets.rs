//! The browser client's files, embedded at build time (see `build.rs`), and
//! the headers they are served with.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// One embedded file of `web/dist/`.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    /// A quoted hash of the contents.
    pub etag: &'static str,
    pub body: &'static [u8],
}

/// Every file of `web/dist/`, by name.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The page may load only its own files and talk only to its own origin
/// (the WebSocket included): no inline code, no other site, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset served at `path` (`/` is `index.html`).
pub fn find(path: &str) -> Option<&'static Asset> {
    let name = match path {
        "/" => "index.html",
        _ => path.strip_prefix('/')?,
    };
    ASSETS.iter().find(|a| a.name == name)
}

/// The response for `asset`: the body, or `304` when the browser's copy
/// (`if_none_match`) is current. Browsers revalidate every time
/// (`no-cache`), which costs a round trip and no body: a new release is
/// picked up at the next load, with no stale mix of old and new files.
pub fn respond(
    asset: &Asset,
    if_none_match: Option<&HeaderValue>,
    head: bool,
) -> Response<Full<Bytes>> {
    let fresh = if_none_match.is_some_and(|tags| {
        tags.to_str().is_ok_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        })
    });
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if head {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.body))
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, asset.content_type)
        .header(header::ETAG, asset.etag)
        .header(header::CACHE_CONTROL, "no-cache");
    if !fresh {
        response = response.header(header::CONTENT_LENGTH, asset.body.len());
    }
    let mut response = response.body(Full::new(body)).unwrap_or_default();
    secure(response.headers_mut());
    response
}

/// Headers every response of the web listener carries.
pub fn secure(headers: &mut hyper::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
