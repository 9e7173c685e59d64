use super::*;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A file of `bytes` in a directory of its own, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "anteroom-upload-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        TempFile { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn local(port: u16) -> WebBase {
    WebBase::parse(&format!("http://127.0.0.1:{port}")).unwrap()
}

#[test]
fn the_request_carries_every_header_the_server_needs() {
    let base = WebBase::parse("http://chat.example:7880").unwrap();
    let ticket = Ticket::new("t0k3n", 100);
    let request = request(&base, &ticket, "Photo.JPG", 42, ()).unwrap();
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri(), "/upload");
    let header = |name| request.headers()[name].to_str().unwrap();
    assert_eq!(header(HOST), "chat.example:7880");
    assert_eq!(header(AUTHORIZATION), "Bearer t0k3n");
    assert_eq!(header(CONTENT_TYPE), "image/jpeg");
    assert_eq!(header(CONTENT_LENGTH), "42");
    assert_eq!(
        header(CONTENT_DISPOSITION),
        "attachment; filename=\"Photo.JPG\"; filename*=UTF-8''Photo.JPG"
    );
    let v6 = WebBase::parse("https://[::1]:8443/").unwrap();
    let v6_request = super::request(&v6, &ticket, "x", 0, ()).unwrap();
    assert_eq!(v6_request.headers()[HOST], "[::1]:8443");
}

#[test]
fn names_are_percent_encoded_utf8_that_cannot_break_the_header() {
    assert_eq!(
        content_disposition("résumé 2024.pdf"),
        "attachment; filename=\"r_sum_ 2024.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf"
    );
    assert_eq!(
        content_disposition("a\";b\r\nX-Evil: 1.txt"),
        "attachment; filename=\"a_;b__X-Evil: 1.txt\"; filename*=UTF-8''a%22%3Bb%0D%0AX-Evil%3A%201.txt"
    );
    assert_eq!(
        content_disposition("李🦀~_-.!#$&+^`|.bin"),
        "attachment; filename=\"__~_-.!#$&+^`|.bin\"; filename*=UTF-8''%E6%9D%8E%F0%9F%A6%80~_-.!#$&+^`|.bin"
    );
}

#[test]
fn the_media_type_comes_from_a_short_table() {
    for (name, mime) in [
        ("notes.txt", "text/plain"),
        ("README.md", "text/markdown"),
        ("a.PNG", "image/png"),
        ("b.jpeg", "image/jpeg"),
        ("c.tar.gz", "application/gzip"),
        ("d.pdf", "application/pdf"),
        ("e.json", "application/json"),
        ("f.svg", "image/svg+xml"),
        ("g.webm", "video/webm"),
        ("Makefile", "application/octet-stream"),
        ("x.unknown", "application/octet-stream"),
        (".txt.exe", "application/octet-stream"),
    ] {
        assert_eq!(guess_mime(name), mime, "{name}");
    }
}

#[test]
fn web_listener_urls_parse_and_derive_from_the_chat_server() {
    let b = WebBase::parse("http://127.0.0.1:7880/").unwrap();
    assert_eq!((b.tls, b.host.as_str(), b.port), (false, "127.0.0.1", 7880));
    assert_eq!(WebBase::parse("https://chat.example").unwrap().port, 443);
    assert_eq!(WebBase::parse("http://chat.example").unwrap().port, 80);
    for bad in [
        "ws://x:1",
        "http://",
        "http://x:port",
        "http://x:1/upload",
        "x:1",
    ] {
        assert!(WebBase::parse(bad).is_err(), "{bad}");
    }
    let derived = |server: &str| WebBase::for_server(&server.parse().unwrap()).to_string();
    assert_eq!(derived("ws://127.0.0.1:9000/ws"), "http://127.0.0.1:9000");
    assert_eq!(derived("wss://chat.example/ws"), "https://chat.example:443");
    assert_eq!(derived("127.0.0.1:7878"), "http://127.0.0.1:7880");
    assert_eq!(derived("tcp://chat.example:1"), "http://chat.example:7880");
    assert_eq!(
        derived("tls://chat.example:7879"),
        "https://chat.example:7880"
    );
    assert_eq!(derived("quic://[::1]:7879"), "https://[::1]:7880");
    assert_eq!(
        b.url("/files/00ff"),
        "http://127.0.0.1:7880/files/00ff",
        "a path from the server"
    );
    assert_eq!(b.url("https://cdn.example/f"), "https://cdn.example/f");
}

#[test]
fn sizes_read_like_sizes() {
    assert_eq!(human_size(0), "0 B");
    assert_eq!(human_size(1023), "1023 B");
    assert_eq!(human_size(1536), "1.5 KiB");
    assert_eq!(human_size(8 * 1024 * 1024), "8.0 MiB");
    assert_eq!(human_size(3 << 30), "3.0 GiB");
    assert_eq!(human_size(u64::MAX), "16777216.0 TiB");
}

#[test]
fn answers_map_to_what_went_wrong() {
    let stored = answer(
        StatusCode::CREATED,
        br#"{"url":"/files/ab","name":"a.txt","size":3,"mime":"text/plain","extra":1}"#,
    )
    .unwrap();
    assert_eq!(
        stored,
        Uploaded {
            url: "/files/ab".into(),
            name: "a.txt".into(),
            size: 3,
            mime: "text/plain".into()
        }
    );
    let status = |code| StatusCode::from_u16(code).unwrap();
    assert!(matches!(
        answer(status(401), b""),
        Err(UploadError::Unauthorized)
    ));
    assert!(matches!(
        answer(status(411), b""),
        Err(UploadError::LengthRequired)
    ));
    assert!(matches!(
        answer(status(413), b""),
        Err(UploadError::RefusedTooLarge)
    ));
    assert!(matches!(
        answer(status(429), b""),
        Err(UploadError::RateLimited)
    ));
    assert!(matches!(
        answer(StatusCode::CREATED, b"<html>"),
        Err(UploadError::BadAnswer(_))
    ));
    let other = answer(status(500), b"  disk full \n")
        .unwrap_err()
        .to_string();
    assert_eq!(other, "the server answered HTTP 500: disk full");
    let other = answer(status(502), b"").unwrap_err().to_string();
    assert_eq!(other, "the server answered HTTP 502: Bad Gateway");
}

#[test]
fn the_token_stays_out_of_debug_output() {
    let shown = format!("{:?}", Ticket::new("s3cret", 9));
    assert!(
        !shown.contains("s3cret") && shown.contains("max_bytes: 9"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_file_over_the_limit_is_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = local(listener.local_addr().unwrap().port());
    let file = TempFile::new("big.bin", &[7; 10]);
    let outcome = upload(
        &base,
        &Trust::default(),
        &Ticket::new("t", 9),
        &file.path,
        |_| {},
    )
    .await;
    match outcome {
        Err(UploadError::TooLarge { name, size, max }) => {
            assert_eq!((name.as_str(), size, max), ("big.bin", 10, 9))
        }
        other => panic!("{other:?}"),
    }
    // Nobody knocked.
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err());
    // At the limit, the client goes ahead.
    let (trust, ticket) = (Trust::default(), Ticket::new("t", 10));
    let outcome = upload(&base, &trust, &ticket, &file.path, |_| {});
    let (_, accepted) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(500), outcome),
        tokio::time::timeout(Duration::from_secs(5), listener.accept())
    );
    assert!(matches!(accepted, Ok(Ok(_))));
}

#[tokio::test]
async fn unreadable_paths_are_reported() {
    let base = local(9);
    let ticket = Ticket::new("t", 100);
    let missing = std::env::temp_dir().join("anteroom-no-such-file-here");
    assert!(matches!(
        upload(&base, &Trust::default(), &ticket, &missing, |_| {}).await,
        Err(UploadError::Read { .. })
    ));
    assert!(matches!(
        upload(
            &base,
            &Trust::default(),
            &ticket,
            &std::env::temp_dir(),
            |_| {}
        )
        .await,
        Err(UploadError::NotAFile { .. })
    ));
}

/// Reads one HTTP request: its head and its body of `Content-Length`.
async fn read_request(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request ended early");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the body ended early");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

#[tokio::test]
async fn a_file_is_streamed_with_its_headers_and_progress() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = local(listener.local_addr().unwrap().port());
    // Several chunks, not a whole number of them.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = TempFile::new("données.bin", &bytes);
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let (head, body) = read_request(&mut stream).await;
        let json = r#"{"url":"/files/0123456789abcdef0123456789abcdef","name":"données.bin","size":300000,"mime":"application/octet-stream"}"#;
        let answer = format!(
            "HTTP/1.1 201 Created\r\nLocation: /files/0123456789abcdef0123456789abcdef\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        (head, body)
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        move |p: Progress| seen.lock().unwrap().push(p)
    };
    let stored = upload(
        &base,
        &Trust::default(),
        &Ticket::new("tok", 1 << 20),
        &file.path,
        progress,
    )
    .await
    .unwrap();
    assert_eq!(stored.url, "/files/0123456789abcdef0123456789abcdef");
    assert_eq!(stored.size, 300_000);
    let (head, body) = server.await.unwrap();
    assert!(body == bytes, "the body differs from the file");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /upload http/1.1\r\n"), "{head}");
    for line in [
        "authorization: bearer tok",
        "content-type: application/octet-stream",
        "content-length: 300000",
        "content-disposition: attachment; filename=\"donn_es.bin\"; filename*=utf-8''donn%c3%a9es.bin",
    ] {
        assert!(head.contains(line), "{line} not in {head}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.first().map(|p| p.sent), Some(0));
    assert_eq!(
        seen.last().copied(),
        Some(Progress {
            sent: 300_000,
            total: 300_000
        })
    );
    assert!(seen.windows(2).all(|w| w[0].sent <= w[1].sent));
    assert_eq!(seen.last().unwrap().percent(), 100);
}

#[tokio::test]
async fn refusals_and_a_missing_listener_say_what_happened() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let file = TempFile::new("a.txt", b"abc");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = read_request(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
            .await;
    });
    let ticket = Ticket::new("t", 100);
    let outcome = upload(&local(port), &Trust::default(), &ticket, &file.path, |_| {}).await;
    assert!(
        matches!(outcome, Err(UploadError::RateLimited)),
        "{outcome:?}"
    );
    // A port nothing listens on.
    let port = {
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        gone.local_addr().unwrap().port()
    };
    let outcome = upload(&local(port), &Trust::default(), &ticket, &file.path, |_| {}).await;
    let why = outcome.unwrap_err().to_string();
    assert!(
        why.starts_with(&format!(
            "cannot reach the web listener at http://127.0.0.1:{port}"
        )),
        "{why}"
    );
}

#[test]
fn progress_is_in_whole_percent() {
    assert_eq!(Progress { sent: 0, total: 0 }.percent(), 100);
    assert_eq!(Progress { sent: 1, total: 3 }.percent(), 33);
    assert_eq!(
        Progress {
            sent: u64::MAX,
            total: u64::MAX
        }
        .percent(),
        100
    );
}
