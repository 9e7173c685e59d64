//! Files over the web listener: uploads judged in the contract's order,
//! bodies that do not match their `Content-Length`, tokens that die with
//! their connection, attachments in messages, and downloads.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::{
    CHAT, Response, TempDir, eventually, exchange, files_in, get, has_key, join_with,
    parse_response, read_to_close, token, upload, upload_head, upload_ok, web,
};
use crate::support::process::{Running, spawn};
use crate::support::{TestServer, scrape};

fn is_file_url(url: &str) -> bool {
    url.strip_prefix("/files/").is_some_and(|id| {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[tokio::test]
async fn an_upload_is_posted_delivered_and_downloaded_as_it_was() {
    let s = TestServer::start(web).await;
    let web_addr = s.web_addr.unwrap();
    let (mut ann, welcome, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(s.addr, "bob", CHAT).await;
    ann.recv_type("joined").await;

    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let r = upload(web_addr, &token(&welcome), "cat.png", "image/png", &bytes).await;
    assert_eq!(r.status, 201, "{r:?}");
    let json = r.json();
    let url = json["url"].as_str().expect("a url").to_string();
    assert!(is_file_url(&url), "{url}");
    assert_eq!(
        r.header("location"),
        Some(url.as_str()),
        "Location is the url"
    );
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "{json}");
    assert_eq!(json["name"], "cat.png");
    assert_eq!(json["size"], 3000);
    assert_eq!(json["mime"], "image/png");

    ann.send_type(
        "say",
        &[("text", "".into()), ("attachment", url.as_str().into())],
    )
    .await;
    for c in [&mut bob, &mut ann] {
        let m = c.next_message().await;
        assert_eq!(m["from"].as_str(), Some("ann"));
        assert_eq!(
            m["text"].as_str(),
            Some(""),
            "an empty text with an attachment"
        );
        let a = &m["attachment"];
        assert_eq!(a["url"].as_str(), Some(url.as_str()), "{m}");
        assert_eq!(a["name"].as_str(), Some("cat.png"));
        assert_eq!(a["size"].as_u64(), Some(3000));
        assert_eq!(a["mime"].as_str(), Some("image/png"));
        assert_eq!(a.as_map().unwrap().len(), 4, "{a}");
    }

    let got = get(web_addr, &url).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, bytes, "the bytes as uploaded");
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert!(
        got.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment")),
        "{got:?}"
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));

    // A file the server never issued.
    let missing = get(web_addr, "/files/0123456789abcdef0123456789abcdef").await;
    assert_eq!(missing.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn an_attachment_must_be_a_url_this_server_issued() {
    let s = TestServer::start(web).await;
    let web_addr = s.web_addr.unwrap();
    let (mut ann, welcome, _) = join_with(s.addr, "ann", CHAT).await;
    let (mut bob, _, _) = join_with(s.addr, "bob", CHAT).await;
    ann.recv_type("joined").await;
    let url = upload_ok(web_addr, &token(&welcome), "a.txt", b"abc").await["url"]
        .as_str()
        .unwrap()
        .to_string();
    for bogus in [
        "/files/00000000000000000000000000000000",
        "/upload",
        "/files/",
        "",
        "http://elsewhere.example/files/0123456789abcdef0123456789abcdef",
        &format!("http://{web_addr}{url}"),
        &format!("{url}x"),
    ] {
        bob.send_type(
            "say",
            &[("text", "look".into()), ("attachment", bogus.into())],
        )
        .await;
        bob.expect_error("bad_request").await;
    }
    bob.send_type("say", &[("text", "look".into()), ("attachment", 5.into())])
        .await;
    bob.expect_error("bad_request").await;
    // Issued to anyone: another member may post it; the connection stayed.
    bob.send_type(
        "say",
        &[
            ("text", "yours".into()),
            ("attachment", url.as_str().into()),
        ],
    )
    .await;
    let m = ann.next_message().await;
    assert_eq!(m["from"].as_str(), Some("bob"));
    assert_eq!(m["attachment"]["url"].as_str(), Some(url.as_str()));
    // Without text or attachment a say is still refused.
    ann.send_type("say", &[("text", "".into())]).await;
    ann.expect_error("bad_request").await;
    s.stop().await;
}

#[tokio::test]
async fn file_names_lose_paths_and_control_characters() {
    let s = TestServer::start(web).await;
    let web_addr = s.web_addr.unwrap();
    let (_ann, welcome, _) = join_with(s.addr, "ann", CHAT).await;
    let tok = token(&welcome);
    for (disposition, expect) in [
        ("attachment; filename=\"../../etc/passwd\"", "passwd"),
        (
            "attachment; filename=\"C:\\Users\\ann\\report.pdf\"",
            "report.pdf",
        ),
        (
            "attachment; filename*=UTF-8''..%2F..%2Fse%01cr%0Aet%7F.txt",
            "secret.txt",
        ),
        (
            "attachment; filename*=UTF-8''%2Fabs%2Fpath%09tab.txt",
            "pathtab.txt",
        ),
    ] {
        let mut request = upload_head(Some(&tok), Some(4), Some(disposition), "text/plain");
        request.extend_from_slice(b"data");
        let r = exchange(web_addr, &request).await;
        assert_eq!(r.status, 201, "{disposition}: {r:?}");
        let name = r.json()["name"].as_str().unwrap().to_string();
        assert!(
            !name.contains(['/', '\\']) && !name.chars().any(char::is_control),
            "{disposition}: {name:?}"
        );
        assert_eq!(name, expect, "{disposition}");
        let got = get(web_addr, r.json()["url"].as_str().unwrap()).await;
        let shown = got.header("content-disposition").unwrap_or_default();
        assert!(
            !shown.contains(['/', '\\']),
            "{disposition}: served as {shown:?}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn an_upload_token_dies_with_its_connection() {
    let s = TestServer::start(web).await;
    let web_addr = s.web_addr.unwrap();
    let (mut ann, welcome, _) = join_with(s.addr, "ann", CHAT).await;
    let ann_token = token(&welcome);
    upload_ok(web_addr, &ann_token, "a.txt", b"one").await;
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    let r = upload(web_addr, &ann_token, "a.txt", "text/plain", b"two").await;
    assert_eq!(r.status, 401, "after bye: {r:?}");

    // A connection that drops: its token goes as the server notices.
    let (bob, welcome, _) = join_with(s.addr, "bob", CHAT).await;
    let bob_token = token(&welcome);
    upload_ok(web_addr, &bob_token, "b.txt", b"one").await;
    bob.reset();
    let mut last = 0;
    for _ in 0..50 {
        last = upload(web_addr, &bob_token, "b.txt", "text/plain", b"x")
            .await
            .status;
        if last == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        last, 401,
        "a dropped connection's token is dead within a second"
    );
    s.stop().await;
}

/// The value of `anteroom_uploads_total{result="…"}`.
async fn uploads(metrics: SocketAddr, result: &str) -> f64 {
    let body = scrape(metrics).await;
    crate::support::metric(
        &body,
        &format!("anteroom_uploads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or_else(|| panic!("no uploads_total for {result}"))
}

/// Sends the head of an upload only and reads the answer, which must come
/// before any of the body.
async fn head_only(addr: SocketAddr, head: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head).await.unwrap();
    parse_response(&read_to_close(&mut s).await)
}

fn web_server(dir: &TempDir, extra: &[&str]) -> Running {
    let mut args = vec![
        "--web-listen",
        "127.0.0.1:0",
        "--store",
        "sqlite",
        "--data-dir",
        dir.as_str(),
    ];
    args.extend_from_slice(extra);
    spawn(&args, &[])
}

#[tokio::test]
async fn refusals_come_in_the_contract_order_and_are_counted() {
    let dir = TempDir::new("refusals");
    let running = web_server(&dir, &["--upload-rate", "2", "--max-upload-bytes", "1000"]);
    let web_addr = running.web_addr().await;
    let metrics = running.metrics_addr;
    let (_ann, welcome, _) = join_with(running.addr, "ann", CHAT).await;
    let tok = token(&welcome);
    let over = Some(5000);

    // 401 first, whatever else is wrong.
    let r = head_only(web_addr, &upload_head(None, None, None, "text/plain")).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = head_only(
        web_addr,
        &upload_head(Some("not-a-token"), over, None, "text/plain"),
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    // Then 411.
    let r = head_only(web_addr, &upload_head(Some(&tok), None, None, "text/plain")).await;
    assert_eq!(r.status, 411, "{r:?}");
    // Then 413, answered before the body is sent.
    let r = head_only(web_addr, &upload_head(Some(&tok), over, None, "text/plain")).await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = head_only(
        web_addr,
        &upload_head(Some(&tok), Some(1001), None, "text/plain"),
    )
    .await;
    assert_eq!(r.status, 413, "one byte over: {r:?}");
    // At the limit exactly: stored. Two uploads use up the rate.
    upload_ok(web_addr, &tok, "max.bin", &[7u8; 1000]).await;
    upload_ok(web_addr, &tok, "small.bin", b"x").await;
    let r = upload(web_addr, &tok, "third.bin", "text/plain", b"x").await;
    assert_eq!(r.status, 429, "over upload_rate: {r:?}");
    // The earlier checks still come first.
    let r = head_only(web_addr, &upload_head(Some(&tok), over, None, "text/plain")).await;
    assert_eq!(r.status, 413, "413 before 429: {r:?}");
    let r = head_only(web_addr, &upload_head(Some(&tok), None, None, "text/plain")).await;
    assert_eq!(r.status, 411, "411 before 429: {r:?}");
    let r = head_only(
        web_addr,
        &upload_head(Some("nope"), Some(1), None, "text/plain"),
    )
    .await;
    assert_eq!(r.status, 401, "401 before 429: {r:?}");
    // The rate is per connection.
    let (_bob, welcome, _) = join_with(running.addr, "bob", CHAT).await;
    upload_ok(web_addr, &token(&welcome), "bobs.txt", b"bob").await;

    assert_eq!(uploads(metrics, "stored").await, 3.0);
    assert_eq!(uploads(metrics, "unauthorized").await, 3.0);
    assert_eq!(uploads(metrics, "too_large").await, 3.0);
    assert_eq!(uploads(metrics, "rate_limited").await, 1.0);
    // 411 counts as a bad request.
    assert_eq!(uploads(metrics, "bad_request").await, 2.0);
    assert_eq!(
        files_in(&dir.path().join("files")).len(),
        3,
        "only the stored uploads are on disk"
    );
}

#[tokio::test]
async fn a_body_that_does_not_match_its_length_is_not_stored() {
    let dir = TempDir::new("lengths");
    let running = web_server(&dir, &[]);
    let web_addr = running.web_addr().await;
    let files = dir.path().join("files");
    let (_ann, welcome, _) = join_with(running.addr, "ann", CHAT).await;
    let tok = token(&welcome);

    // Shorter than announced, then the client closes its side.
    let mut s = TcpStream::connect(web_addr).await.unwrap();
    let mut request = upload_head(
        Some(&tok),
        Some(100),
        Some("attachment; filename=\"short.txt\""),
        "text/plain",
    );
    request.extend_from_slice(&[b's'; 40]);
    s.write_all(&request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.shutdown().await.unwrap();
    let raw = read_to_close(&mut s).await;
    if raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let r = parse_response(&raw);
        assert!(r.status >= 400, "a short body is refused: {r:?}");
    }
    assert!(
        eventually(Duration::from_secs(2), || files_in(&files).is_empty()).await,
        "a short upload left {:?}",
        files_in(&files)
    );
    crate::support::wait_metric(
        running.metrics_addr,
        "anteroom_uploads_total{result=\"bad_request\"}",
        |v| v == 1.0,
    )
    .await;
    assert_eq!(uploads(running.metrics_addr, "stored").await, 0.0);

    // Longer than announced: HTTP/1.1 reads exactly `Content-Length` bytes,
    // so the rest is no part of the upload. Nothing beyond the announced
    // length may be stored.
    let mut s = TcpStream::connect(web_addr).await.unwrap();
    let mut request = upload_head(
        Some(&tok),
        Some(10),
        Some("attachment; filename=\"long.txt\""),
        "text/plain",
    );
    request.extend_from_slice(b"0123456789EXTRABYTES");
    s.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in files_in(&files) {
        let stored = std::fs::read(files.join(&name)).unwrap_or_default();
        assert!(
            !stored.windows(5).any(|w| w == b"EXTRA"),
            "bytes past Content-Length were stored in {name}"
        );
        assert!(stored.len() <= 10, "{name}: {} bytes", stored.len());
    }
    if raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let r = parse_response(&raw);
        if r.status == 201 {
            let json = r.json();
            assert_eq!(json["size"], 10, "{json}");
            let got = get(web_addr, json["url"].as_str().unwrap()).await;
            assert_eq!(got.body, b"0123456789");
        }
    }
}

/// For a client not granted `files`, `attachment` is an unknown key.
#[tokio::test]
async fn without_files_an_attachment_key_is_ignored() {
    let s = TestServer::start(web).await;
    let (mut ann, _, _) = join_with(s.addr, "ann", &["history", "whisper"]).await;
    ann.send_type(
        "say",
        &[
            ("text", "hi".into()),
            ("attachment", "/files/nothing".into()),
        ],
    )
    .await;
    let m = ann.next_message().await;
    assert_eq!(m["text"].as_str(), Some("hi"));
    assert!(!has_key(&m, "attachment"), "{m}");
    s.stop().await;
}
