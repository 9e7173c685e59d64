//! `POST /upload` and `GET /files/{id}`: files in the room, over HTTP.
//!
//! An upload is judged from its head before a byte of its body is read
//! (token, `Content-Length`, size, rate: 401, 411, 413, 429, in that
//! order), then streamed to disk by [`Files::save`]. Downloads are served
//! as attachments that a browser never renders in the listener's origin.

use http_body_util::{BodyDataStream, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tracing::{debug, warn};

use super::assets;
use super::{Body, full};
use crate::files::{Files, Refusal, UploadError, clean_mime, clean_name, disposition_name};
use crate::telemetry::metrics;

/// Answers an upload.
pub async fn upload(req: Request<Incoming>, files: &Files) -> Response<Body> {
    let m = metrics();
    let headers = req.headers();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Err(refusal) = files.admit(token, length) {
        m.upload(refusal.label());
        return refused(refusal, files.max_bytes());
    }
    let length = length.unwrap_or(0);
    let name = clean_name(
        headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_name)
            .as_deref(),
    );
    let mime = clean_mime(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let body = BodyDataStream::new(req.into_body());
    match files.save(body, length, name, mime).await {
        Ok(file) => {
            m.upload("stored");
            let url = file.url();
            let json = serde_json::json!({
                "url": url,
                "name": file.name,
                "size": file.size,
                "mime": file.mime,
            });
            let mut response = Response::builder()
                .status(StatusCode::CREATED)
                .header(header::LOCATION, &url)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(full(Bytes::from(json.to_string())))
                .unwrap_or_default();
            assets::secure(response.headers_mut());
            response
        }
        Err(UploadError::TooLarge) => {
            m.upload("too_large");
            closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than its Content-Length or max_upload_bytes\n".into(),
            ))
        }
        Err(UploadError::Incomplete(why)) => {
            m.upload("bad_request");
            debug!(%why, "upload cut short");
            closing(text(
                StatusCode::BAD_REQUEST,
                format!("the upload did not complete: {why}\n"),
            ))
        }
        Err(UploadError::Storage(why)) => {
            m.upload("failed");
            warn!(%why, "an upload could not be stored");
            text(
                StatusCode::INSUFFICIENT_STORAGE,
                "the server could not store the file\n".into(),
            )
        }
    }
}

fn refused(refusal: Refusal, max: u64) -> Response<Body> {
    let (status, why) = match refusal {
        Refusal::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "an upload needs `Authorization: Bearer <upload_token>` from a connected client's welcome\n".to_string(),
        ),
        Refusal::LengthRequired => (
            StatusCode::LENGTH_REQUIRED,
            "an upload needs a Content-Length\n".to_string(),
        ),
        Refusal::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("uploads are limited to {max} bytes\n"),
        ),
        Refusal::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many uploads; wait a minute\n".to_string(),
        ),
    };
    let mut response = text(status, why);
    if refusal == Refusal::Unauthorized {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    // The body was not read: the connection cannot carry another request.
    closing(response)
}

/// Serves a file the room was sent: its bytes as uploaded, never
/// interpreted by the browser in this origin.
pub async fn download(id: &str, files: &Files, head: bool) -> Response<Body> {
    let Some(file) = files.get(id) else {
        return text(StatusCode::NOT_FOUND, "no such file\n".into());
    };
    let opened = match tokio::fs::File::open(files.path_of(&file)).await {
        Ok(opened) => opened,
        Err(error) => {
            debug!(%error, "a file the log knows is gone");
            return text(StatusCode::NOT_FOUND, "no such file\n".into());
        }
    };
    let disposition = anteroom_protocol::disposition::content_disposition(&file.name);
    let body: Body = if head {
        full(Bytes::new())
    } else {
        let stream = tokio_util::io::ReaderStream::new(opened);
        use futures_util::TryStreamExt;
        StreamBody::new(stream.map_ok(Frame::data)).boxed()
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, file.size)
        .header(header::CACHE_CONTROL, "private, max-age=86400, immutable")
        .body(body)
        .unwrap_or_default();
    let headers = response.headers_mut();
    assets::secure(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&file.mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    // Opened directly, the file is a sandboxed document with no script.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    response
}

fn text(status: StatusCode, why: String) -> Response<Body> {
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from(why)))
        .unwrap_or_default();
    assets::secure(response.headers_mut());
    response
}

fn closing(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A whole body in memory, as a [`Body`].
pub fn full_body(bytes: Full<Bytes>) -> Body {
    bytes.map_err(|never| match never {}).boxed()
}
