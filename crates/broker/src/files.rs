//! Files posted in the room: upload tokens, the files the server issued,
//! and their bytes in `data_dir/files`.
//!
//! A connection granted `files` gets an upload token in its `welcome`; the
//! token dies with the connection. An upload is judged before its body is
//! read (token, `Content-Length`, size, rate, in the contract's order),
//! then streamed to a temporary file with the size enforced as it comes, and
//! only a complete upload becomes a file with an unguessable id. A `say`
//! may attach only a file this server issued.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::chat_log::{FILES_PATH, LogStore, StoredFile, random_hex};
use crate::rate::Rate;

/// The directory in `data_dir` that holds uploaded files.
pub const FILES_DIR: &str = "files";

/// An upload whose client sends nothing for this long is abandoned.
pub const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why an upload is refused before its body is read, in the order the
/// contract checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one no live connection holds: 401.
    Unauthorized,
    /// No `Content-Length`: 411.
    LengthRequired,
    /// Over `max_upload_bytes`: 413.
    TooLarge,
    /// Over `upload_rate`: 429.
    RateLimited,
}

impl Refusal {
    /// The `result` label of `anteroom_uploads_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::LengthRequired => "bad_request",
            Refusal::TooLarge => "too_large",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// An upload that went wrong while its body was read.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// More bytes than `Content-Length` or `max_upload_bytes`.
    #[error("the body is larger than announced or allowed")]
    TooLarge,
    /// Fewer bytes than `Content-Length`, or the connection failed.
    #[error("the body ended early: {0}")]
    Incomplete(String),
    /// The file could not be written or recorded.
    #[error("the file could not be stored: {0}")]
    Storage(String),
}

struct Uploader {
    /// The `upload_rate` bucket.
    full_at: Instant,
}

/// The room's files.
pub struct Files {
    dir: PathBuf,
    temporary: bool,
    issued: DashMap<String, Arc<StoredFile>>,
    tokens: DashMap<String, Uploader>,
    store: Arc<dyn LogStore>,
    max_bytes: u64,
    rate: Option<Rate>,
}

impl Files {
    /// The files of a log opened with `known` files, kept in `dir`. Bytes
    /// there that the log does not know (an upload cut short by a crash, a
    /// file whose record retention deleted) are removed. With `temporary`,
    /// the whole directory goes when the room does.
    pub fn open(
        dir: &Path,
        temporary: bool,
        known: Vec<StoredFile>,
        store: Arc<dyn LogStore>,
        max_bytes: u64,
        per_minute: u32,
    ) -> std::io::Result<Self> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let issued: DashMap<String, Arc<StoredFile>> = known
            .into_iter()
            .map(|f| (f.id.clone(), Arc::new(f)))
            .collect();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !issued.contains_key(&*name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            temporary,
            issued,
            tokens: DashMap::new(),
            store,
            max_bytes,
            rate: Rate::new(f64::from(per_minute) / 60.0, per_minute),
        })
    }

    /// The largest upload accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// A new upload token, for one connection.
    pub fn issue_token(&self) -> String {
        let token = random_hex(24);
        self.tokens.insert(
            token.clone(),
            Uploader {
                full_at: Instant::now(),
            },
        );
        token
    }

    /// The connection holding `token` ended.
    pub fn revoke(&self, token: &str) {
        self.tokens.remove(token);
    }

    /// The file a `say.attachment` names, if this server issued it.
    pub fn resolve(&self, url: &str) -> Option<Arc<StoredFile>> {
        let id = url.strip_prefix(FILES_PATH)?;
        self.get(id)
    }

    /// The file with this id.
    pub fn get(&self, id: &str) -> Option<Arc<StoredFile>> {
        self.issued.get(id).map(|f| f.clone())
    }

    /// Where a file's bytes are.
    pub fn path_of(&self, file: &StoredFile) -> PathBuf {
        self.dir.join(&file.id)
    }

    /// Judges an upload from its head, as the contract orders the checks.
    pub fn admit(&self, token: Option<&str>, length: Option<u64>) -> Result<(), Refusal> {
        let mut uploader = token
            .and_then(|t| self.tokens.get_mut(t))
            .ok_or(Refusal::Unauthorized)?;
        let length = length.ok_or(Refusal::LengthRequired)?;
        if length > self.max_bytes {
            return Err(Refusal::TooLarge);
        }
        if let Some(rate) = self.rate
            && rate.take(&mut uploader.full_at, Instant::now()).is_err()
        {
            return Err(Refusal::RateLimited);
        }
        Ok(())
    }

    /// Streams an admitted upload of `length` bytes to disk and records it.
    /// `chunks` yields the body; the size is enforced as it comes.
    pub async fn save<S, E>(
        &self,
        mut chunks: S,
        length: u64,
        name: String,
        mime: String,
    ) -> Result<Arc<StoredFile>, UploadError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let id = random_hex(16);
        let part = self.dir.join(format!("{id}.part"));
        let result = async {
            let mut out = tokio::fs::File::create(&part)
                .await
                .map_err(|e| UploadError::Storage(e.to_string()))?;
            let mut size = 0u64;
            loop {
                let next = tokio::time::timeout(UPLOAD_IDLE, chunks.next())
                    .await
                    .map_err(|_| UploadError::Incomplete("the client stopped sending".into()))?;
                let Some(chunk) = next else { break };
                let chunk = chunk.map_err(|e| UploadError::Incomplete(e.to_string()))?;
                size += chunk.len() as u64;
                if size > length || size > self.max_bytes {
                    return Err(UploadError::TooLarge);
                }
                out.write_all(&chunk)
                    .await
                    .map_err(|e| UploadError::Storage(e.to_string()))?;
            }
            if size != length {
                return Err(UploadError::Incomplete(format!(
                    "{size} of {length} bytes arrived"
                )));
            }
            out.sync_all()
                .await
                .map_err(|e| UploadError::Storage(e.to_string()))?;
            Ok(size)
        }
        .await;
        let size = match result {
            Ok(size) => size,
            Err(error) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(error);
            }
        };
        let file = StoredFile {
            id: id.clone(),
            name,
            size,
            mime,
            ts: anteroom_protocol::unix_millis(),
        };
        let stored = async {
            tokio::fs::rename(&part, self.dir.join(&id))
                .await
                .map_err(|e| UploadError::Storage(e.to_string()))?;
            self.store
                .add_file(file.clone())
                .await
                .map_err(|e| UploadError::Storage(e.to_string()))
        }
        .await;
        if let Err(error) = stored {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = tokio::fs::remove_file(self.dir.join(&id)).await;
            return Err(error);
        }
        let file = Arc::new(file);
        self.issued.insert(id, file.clone());
        Ok(file)
    }

    /// Retention deleted these files' records: their bytes go too.
    pub async fn forget(&self, ids: &[String]) {
        for id in ids {
            self.issued.remove(id);
            let _ = tokio::fs::remove_file(self.dir.join(id)).await;
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The file name to keep from an upload's `Content-Disposition`: the last
/// path component, without control or invisible characters, at most 255
/// bytes; `file` when nothing usable is left.
pub fn clean_name(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or("");
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = last
        .chars()
        .filter(|c| !c.is_control() && !anteroom_protocol::text::is_forbidden_in_name(*c))
        .collect();
    let trimmed = name.trim().trim_start_matches('.').to_string();
    name = trimmed;
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() {
        "file".to_string()
    } else {
        name
    }
}

/// The media type to keep: `type/subtype` made of token characters,
/// lower-cased, without parameters; anything else is
/// `application/octet-stream`.
pub fn clean_mime(raw: Option<&str>) -> String {
    let essence = raw
        .and_then(|r| r.split(';').next())
        .map(|r| r.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => essence,
        _ => "application/octet-stream".to_string(),
    }
}

/// The file name in a `Content-Disposition` header: `filename*` (RFC 5987,
/// UTF-8) first, then `filename`.
pub fn disposition_name(header: &str) -> Option<String> {
    let mut plain = None;
    for part in header.split(';').map(str::trim) {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let value = value.trim();
                let (charset, rest) = value.split_once('\'')?;
                let (_, encoded) = rest.split_once('\'')?;
                if charset.eq_ignore_ascii_case("utf-8") {
                    let decoded = percent_encoding::percent_decode_str(encoded)
                        .decode_utf8()
                        .ok()?;
                    return Some(decoded.into_owned());
                }
            }
            "filename" => plain = Some(value.trim().trim_matches('"').to_string()),
            _ => {}
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_last_component_and_nothing_hostile() {
        assert_eq!(clean_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_name(Some("C:\\Users\\ann\\cat.png")), "cat.png");
        assert_eq!(clean_name(Some("a\u{202e}b\nc.txt")), "abc.txt");
        assert_eq!(clean_name(Some(".hidden")), "hidden");
        assert_eq!(clean_name(Some("")), "file");
        assert_eq!(clean_name(None), "file");
        assert!(clean_name(Some(&"é".repeat(300))).len() <= 255);
    }

    #[test]
    fn media_types_are_kept_only_when_well_formed() {
        assert_eq!(clean_mime(Some("image/PNG")), "image/png");
        assert_eq!(clean_mime(Some("text/plain; charset=utf-8")), "text/plain");
        assert_eq!(
            clean_mime(Some("text/html\r\nx: y")),
            "application/octet-stream"
        );
        assert_eq!(clean_mime(Some("nonsense")), "application/octet-stream");
        assert_eq!(clean_mime(None), "application/octet-stream");
    }

    #[test]
    fn disposition_names_prefer_the_utf8_form() {
        assert_eq!(
            disposition_name("attachment; filename=\"a.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt")
                .as_deref(),
            Some("été.txt")
        );
        assert_eq!(
            disposition_name("attachment; filename=\"plain.txt\"").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(disposition_name("attachment"), None);
    }
}
