//! The terminal client and the Python example against a real server:
//! line mode from its output, the full-screen interface in a real terminal
//! (tmux), and a client written with another language's MessagePack library.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::process::{BIN, Chat};
use support::{TestServer, required};

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chat_clients_talk_and_a_third_waits_its_turn() {
    let server = TestServer::start(|c| c.max_active = 2).await;
    let mut ann = Chat::start(server.addr, "ann");
    ann.expect("* Welcome to anteroom! You are now connected to the chat.");
    ann.expect("* in the room: ann");
    let mut bob = Chat::start(server.addr, "bob");
    bob.expect("* in the room: ann, bob");
    ann.expect("* bob joined");
    let mut cid = Chat::start(server.addr, "cid");
    cid.expect("* We are dealing with a large amount of users and you are at 1 in queue");

    bob.type_line("hello everyone");
    ann.expect("<bob> hello everyone");
    bob.expect("<bob> hello everyone");
    bob.type_line("/users");
    bob.expect("* in the room: ann, bob");

    ann.type_line("/quit");
    ann.expect("* bye (bye): Goodbye!");
    ann.finish();
    cid.expect("* A spot has opened up! You are now connected to the chat.");
    cid.expect("* in the room: bob, cid");
    // The client asks for presence batches: one leave and one join, close
    // together, come as one line.
    bob.expect("* ann left (bye); cid joined");
    cid.type_line("made it");
    bob.expect("<cid> made it");
    cid.finish();
    bob.expect("* cid left (bye)");
    bob.finish();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_mode_shows_what_others_send_as_escapes_on_one_line() {
    let server = TestServer::start(|_| {}).await;
    let mut ann = Chat::start(server.addr, "ann");
    ann.expect("* in the room: ann");
    let mut mallory = server.join("mallory").await;
    ann.expect("* mallory joined");
    // A forged second line, a window title and a screen wipe.
    mallory
        .say("hi\n[12:00:00] <admin> your password, please\u{1b}]0;owned\u{7}\u{1b}[2J")
        .await;
    ann.expect(r"<mallory> hi\n[12:00:00] <admin> your password, please\x1b]0;owned\x07\x1b[2J");
    ann.finish();
    server.stop().await;
}

#[tokio::test]
async fn piped_input_is_said_then_the_client_leaves() {
    let server = TestServer::start(|_| {}).await;
    let mut watcher = server.join("watcher").await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "chat",
            "--name",
            "bot",
            "--server",
            &server.addr.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = out.stdin.take().unwrap();
        stdin.write_all(b"hi\nthere\n").await.unwrap();
    }
    let output = tokio::time::timeout(Duration::from_secs(10), out.wait_with_output())
        .await
        .expect("bot exits once its input is said")
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("<bot> hi") && text.contains("<bot> there"),
        "{text}"
    );
    assert_eq!(
        watcher.recv_type("joined").await["name"].as_str(),
        Some("bot")
    );
    assert_eq!(
        watcher.recv_type("message").await["text"].as_str(),
        Some("hi")
    );
    assert_eq!(
        watcher.recv_type("message").await["text"].as_str(),
        Some("there")
    );
    assert_eq!(
        watcher.recv_type("left").await["reason"].as_str(),
        Some("bye")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refused_name_is_reported_with_a_failure_status() {
    let server = TestServer::start(|_| {}).await;
    let _ann = server.join("ann").await;
    let output = tokio::process::Command::new(BIN)
        .args([
            "chat",
            "--name",
            "ANN",
            "--server",
            &server.addr.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("name_taken"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn the_python_example_talks_to_the_server() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/chat.py");
    let has_msgpack = Command::new("python3")
        .args(["-c", "import msgpack"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_msgpack
        && !required(
            "python3 with msgpack",
            "python3 or its msgpack package is missing (pip install msgpack)",
        )
    {
        return;
    }
    let server = TestServer::start(|_| {}).await;
    let mut member = server.join("member").await;
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "--server",
            &server.addr.to_string(),
            "--name",
            "py",
            "--say",
            "hello from Python 🐍",
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frames: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[0]["users"], serde_json::json!(["member", "py"]));
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "message" && f["text"] == "hello from Python 🐍")
    );
    assert_eq!(frames.last().unwrap()["type"], "bye");
    assert_eq!(
        member.recv_type("joined").await["name"].as_str(),
        Some("py")
    );
    let m = member.recv_type("message").await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("py"), Some("hello from Python 🐍"))
    );
    server.stop().await;
}

fn tmux(socket: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_screen_interface_in_a_real_terminal() {
    if !have("tmux") && !required("tmux", "tmux is not installed (apt-get install tmux)") {
        return;
    }
    let server = TestServer::start(|_| {}).await;
    let mut bob = server.join("bob").await;
    let socket = format!("anteroom-test-{}", std::process::id());
    let command = format!(
        "TERM=xterm-256color {BIN} chat --name ann --server {}",
        server.addr
    );
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "100",
            "-y",
            "30",
            &command,
        ],
    );
    let capture = |socket: &str| tmux(socket, &["capture-pane", "-p", "-t", "chat"]);
    let wait_for = |socket: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = capture(socket);
            if screen.contains(want) {
                return screen;
            }
            if Instant::now() > deadline {
                tmux(socket, &["kill-server"]);
                panic!("the screen never showed {want:?}:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&socket, "connected as ann");
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("ann"));
    tmux(
        &socket,
        &[
            "send-keys",
            "-t",
            "chat",
            "hello from the terminal ✨",
            "Enter",
        ],
    );
    let m = bob.recv_type("message").await;
    assert_eq!(m["text"].as_str(), Some("hello from the terminal ✨"));
    bob.say("hi ann").await;
    bob.recv_type("message").await;
    let screen = wait_for(&socket, "bob: hi ann");
    assert!(screen.contains("users (2)"), "{screen}");
    assert!(
        screen.contains("│bob") && screen.contains("│ann"),
        "{screen}"
    );
    assert!(
        screen.contains("ann: hello from the terminal ✨"),
        "{screen}"
    );
    assert!(screen.contains("anteroom"), "{screen}");
    // Ctrl-C leaves cleanly: bye to the server, terminal restored, exit.
    tmux(&socket, &["send-keys", "-t", "chat", "C-c"]);
    let left = bob.recv_type("left").await;
    assert_eq!(
        (left["name"].as_str(), left["reason"].as_str()),
        (Some("ann"), Some("bye"))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux(&socket, &["list-sessions"]).contains("chat:") {
        assert!(
            Instant::now() < deadline,
            "the client did not exit on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&socket, &["kill-server"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_under_the_same_name_when_the_server_returns() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let mut ann = Chat::start(server.addr, "ann");
    ann.expect("* in the room: ann");
    server.stop().await;
    ann.expect("* bye (shutdown): The server is shutting down.");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = ann
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a reconnecting notice");
        if line.starts_with("* disconnected (") && line.contains("reconnecting in") {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnecting notice");
    }
    // The server comes back on the same address.
    let again = TestServer::start(|c| c.listen = addr).await;
    ann.expect("* in the room: ann");
    let mut watcher = again.join("watcher").await;
    ann.expect("* watcher joined");
    ann.type_line("back again");
    assert_eq!(
        watcher.recv_type("message").await["text"].as_str(),
        Some("back again")
    );
    ann.finish();
    again.stop().await;
}

#[tokio::test]
async fn the_client_library_joins_waits_and_chats() {
    use anteroom_client::protocol::ClientMessage;
    use anteroom_client::{Admission, Connection, Event};
    let server = TestServer::start(|c| c.max_active = 1).await;
    let addr = server.addr.to_string();
    let mut ann = Connection::connect(&addr).await.unwrap();
    assert!(
        matches!(ann.join("ann").await.unwrap(), Admission::Welcome { ref users, .. } if users == &["ann"])
    );
    let mut bob = Connection::connect(&addr).await.unwrap();
    match bob.join("bob").await.unwrap() {
        Admission::Queued { position, text, .. } => {
            assert_eq!(position, 1);
            assert!(text.ends_with("you are at 1 in queue"));
        }
        other => panic!("expected to wait, got {other:?}"),
    }
    // A refused name is an error and the connection stays usable.
    let mut again = Connection::connect(&addr).await.unwrap();
    let refused = again.join("ANN").await.unwrap_err().to_string();
    assert!(refused.contains("name_taken"), "{refused}");
    ann.send(&ClientMessage::Bye).await.unwrap();
    loop {
        match bob.next_event().await.unwrap() {
            Event::Welcome { users, .. } => {
                assert_eq!(users, ["bob"]);
                break;
            }
            Event::Queued { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    bob.send(&ClientMessage::Say {
        text: "hello".into(),
        attachment: None,
    })
    .await
    .unwrap();
    assert!(
        matches!(bob.next_event().await.unwrap(), Event::Message { ref text, .. } if text == "hello")
    );
    bob.send(&ClientMessage::Who).await.unwrap();
    assert_eq!(
        bob.next_event().await.unwrap(),
        Event::Users {
            names: vec!["bob".into()]
        }
    );
    server.stop().await;
}

/// A test server (its chat log in memory) with the web listener on a free
/// port, for uploads, and `adjust` applied.
async fn v11_server(adjust: impl FnOnce(&mut anteroom_broker::config::Config)) -> TestServer {
    TestServer::start(|c| {
        c.web_listen = Some("127.0.0.1:0".parse().unwrap());
        adjust(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_messages_are_shown_on_join_and_paged_back_with_history() {
    let server = v11_server(|c| c.history_on_join = 3).await;
    // A version-1 member talks before anyone with history arrives.
    let mut bob = server.join("bob").await;
    for i in 1..=6 {
        bob.say(&format!("m{i}")).await;
        bob.next_message().await;
    }
    let mut ann = Chat::start(server.addr, "ann");
    ann.expect("* in the room: bob, ann");
    ann.expect("* 3 earlier messages:");
    ann.expect("<bob> m4");
    ann.expect("<bob> m5");
    ann.expect("<bob> m6");
    bob.say("live").await;
    ann.expect("<bob> live");
    ann.type_line("/history 2");
    ann.expect("* 2 earlier messages:");
    ann.expect("<bob> m2");
    ann.expect("<bob> m3");
    ann.type_line("/history");
    ann.expect("* 1 earlier message:");
    ann.expect("<bob> m1");
    ann.expect("* no older messages");
    ann.type_line("/history");
    ann.expect("! no older messages");
    ann.finish();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_whispers_between_two_chat_clients() {
    let server = v11_server(|_| {}).await;
    let mut ann = Chat::start(server.addr, "ann");
    ann.expect("* in the room: ann");
    let mut bob = Chat::start(server.addr, "bob");
    bob.expect("* in the room: ann, bob");
    ann.expect("* bob joined");
    let mut old = server.join("old").await;
    ann.expect("* old joined");

    ann.type_line("/msg BOB just between us");
    bob.expect("ann → bob (private): just between us");
    ann.expect("ann → bob (private): just between us");
    bob.type_line("/msg ann and back");
    ann.expect("bob → ann (private): and back");
    // Nobody else hears a whisper: the version-1 member's next frame is a
    // message said after them.
    bob.type_line("out loud");
    let m = old.next_message().await;
    assert_eq!(m["text"].as_str(), Some("out loud"), "{m}");

    ann.type_line("/msg zed hello?");
    ann.expect_containing("! no_such_user: ");
    ann.type_line("/msg old hello?");
    ann.expect_containing("! whisper_unsupported: ");
    ann.type_line("/msg bob");
    ann.expect("! usage: /msg NAME TEXT (a name with spaces in double quotes)");
    ann.finish();
    bob.finish();
    server.stop().await;
}

/// A file in a directory of its own, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("anteroom-chat-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_posts_a_file_that_another_client_fetches_by_its_url() {
    let server = v11_server(|c| c.max_upload_bytes = 1000).await;
    let web = server.web_addr.expect("the web listener is on");
    let scratch = Scratch::new("send");
    let content = "minutes of the meeting: ✓ ship it\n".repeat(3);
    let notes = scratch.file("notes de réunion.txt", content.as_bytes());
    // Over the WebSocket the web listener is the server's own address;
    // over TCP it is given.
    let mut ann = Chat::start_url(&format!("ws://{web}/ws"), "ann");
    ann.expect("* in the room: ann");
    let mut bob = Chat::start_with(
        &server.addr.to_string(),
        "bob",
        &["--web", &format!("http://{web}")],
    );
    bob.expect("* in the room: ann, bob");

    ann.type_line(&format!("/send \"{notes}\" the minutes"));
    let size = content.len();
    ann.expect(&format!("* sent notes de réunion.txt ({size} B)"));
    let line = bob.expect_containing(&format!(
        "<ann> the minutes 📎 notes de réunion.txt ({size} B) http://{web}/files/"
    ));
    ann.expect_containing(&format!(
        "📎 notes de réunion.txt ({size} B) http://{web}/files/"
    ));
    let url = line.rsplit(' ').next().unwrap();
    let path = url.strip_prefix(&format!("http://{web}")).unwrap();
    assert_eq!(path.len(), "/files/".len() + 32, "{url}");
    let (status, body) = support::http_get(web, path).await;
    assert_eq!(status, 200);
    assert_eq!(body, content, "the bytes fetched are the bytes sent");

    // Over the limit: refused before anything is sent.
    let big = scratch.file("big.bin", &[0u8; 2048]);
    bob.type_line(&format!("/send {big}"));
    bob.expect("! cannot send big.bin: big.bin is 2.0 KiB but the server accepts at most 1000 B");
    bob.type_line("/send /no/such/file.txt");
    bob.expect_containing("! cannot send file.txt: cannot read /no/such/file.txt: ");
    ann.finish();
    bob.finish();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_web_listener_send_says_so_and_the_rest_works() {
    // The tests' default: the web listener is off, so `files` is not granted.
    let server = TestServer::start(|_| {}).await;
    let scratch = Scratch::new("noweb");
    let file = scratch.file("a.txt", b"a");
    let mut ann = Chat::start(server.addr, "ann");
    ann.expect("* in the room: ann");
    ann.type_line(&format!("/send {file}"));
    ann.expect_containing("! cannot send a.txt: this server does not take files");
    ann.type_line("/msg ann note to self");
    ann.expect("ann → ann (private): note to self");
    ann.finish();
    server.stop().await;
}

/// Waits until the tmux pane shows `want`, and returns the screen.
fn wait_for_screen(socket: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let screen = tmux(socket, &["capture-pane", "-p", "-t", "chat"]);
        if screen.contains(want) {
            return screen;
        }
        if Instant::now() > deadline {
            tmux(socket, &["kill-server"]);
            panic!("the screen never showed {want:?}:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_screen_interface_shows_earlier_messages_whispers_and_files() {
    if !have("tmux") && !required("tmux", "tmux is not installed (apt-get install tmux)") {
        return;
    }
    let server = v11_server(|c| c.history_on_join = 2).await;
    let web = server.web_addr.expect("the web listener is on");
    let mut bob = server.join("bob").await;
    for i in 1..=4 {
        bob.say(&format!("early {i}")).await;
        bob.next_message().await;
    }
    let scratch = Scratch::new("tui");
    let file = scratch.file("plan.txt", b"step one\n");
    let socket = format!("anteroom-test-v11-{}", std::process::id());
    let command = format!("TERM=xterm-256color {BIN} chat --name ann --server ws://{web}/ws");
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ],
    );
    let screen = wait_for_screen(&socket, "bob: early 4");
    assert!(screen.contains("— 2 earlier messages —"), "{screen}");
    assert!(!screen.contains("early 2"), "{screen}");
    let send = |keys: &str| tmux(&socket, &["send-keys", "-t", "chat", keys, "Enter"]);
    send("/history");
    // The page lands at the top, above the first join's page.
    let screen = wait_for_screen(&socket, "2 earlier messages added at the top (PageUp)");
    let at = |text: &str| {
        screen
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} not on {screen}"))
    };
    assert!(at("no older messages") < at("bob: early 1"), "{screen}");
    assert!(at("bob: early 2") < at("Welcome to anteroom!"), "{screen}");
    assert!(at("Welcome to anteroom!") < at("bob: early 3"), "{screen}");
    send("/msg ann a note to myself");
    wait_for_screen(&socket, "ann → ann (private): a note to myself");
    send(&format!("/send {file} the plan"));
    wait_for_screen(&socket, "sent plan.txt (9 B)");
    // The link may wrap onto a line of its own.
    let screen = wait_for_screen(&socket, "ann: the plan 📎 plan.txt (9 B)");
    assert!(screen.contains(&format!("http://{web}/files/")), "{screen}");
    let m = bob.next_message().await;
    assert_eq!(m["attachment"]["name"].as_str(), Some("plan.txt"), "{m}");
    tmux(&socket, &["send-keys", "-t", "chat", "C-c"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux(&socket, &["list-sessions"]).contains("chat:") {
        assert!(
            Instant::now() < deadline,
            "the client did not exit on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&socket, &["kill-server"]);
    server.stop().await;
}

#[tokio::test]
async fn the_client_library_uploads_and_the_server_refusals_are_named() {
    use anteroom_client::protocol::{Feature, Features};
    use anteroom_client::upload::{Ticket, UploadError, WebBase, upload};
    use anteroom_client::{Admission, Connection, Trust};
    let server = v11_server(|c| {
        c.max_upload_bytes = 100;
        c.upload_rate = 1;
    })
    .await;
    let web = WebBase::parse(&format!("http://{}", server.web_addr.unwrap())).unwrap();
    let scratch = Scratch::new("lib");
    let small = std::path::PathBuf::from(scratch.file("s.txt", b"small"));
    let big = std::path::PathBuf::from(scratch.file("b.txt", &[b'x'; 200]));
    // A version-1 client gets no ticket.
    let mut plain = Connection::connect(&server.addr.to_string()).await.unwrap();
    let Admission::Welcome {
        upload: None,
        features,
        ..
    } = plain.join("plain").await.unwrap()
    else {
        panic!("a version-1 client has no upload ticket");
    };
    assert!(features.is_empty());
    let mut conn = Connection::builder()
        .features(Features::NONE.with(Feature::Files))
        .connect(&server.addr.to_string())
        .await
        .unwrap();
    let Admission::Welcome {
        upload: Some(ticket),
        features,
        ..
    } = conn.join("ann").await.unwrap()
    else {
        panic!("no upload ticket");
    };
    assert_eq!(features.names(), ["files"]);
    assert_eq!(ticket.max_bytes(), 100);
    let trust = Trust::default();
    let forged = Ticket::new("not-a-token", 100);
    let outcome = upload(&web, &trust, &forged, &small, |_| {}).await;
    assert!(
        matches!(outcome, Err(UploadError::Unauthorized)),
        "{outcome:?}"
    );
    // A client that believes the limit is higher is refused by the server.
    let generous = Ticket::new(token_of(&ticket), 1000);
    let outcome = upload(&web, &trust, &generous, &big, |_| {}).await;
    assert!(
        matches!(outcome, Err(UploadError::RefusedTooLarge)),
        "{outcome:?}"
    );
    let stored = upload(&web, &trust, &ticket, &small, |_| {}).await.unwrap();
    assert_eq!((stored.name.as_str(), stored.size), ("s.txt", 5));
    assert_eq!(stored.mime, "text/plain");
    let outcome = upload(&web, &trust, &ticket, &small, |_| {}).await;
    assert!(
        matches!(outcome, Err(UploadError::RateLimited)),
        "{outcome:?}"
    );
    server.stop().await;
}

/// The token inside a ticket, which the library keeps private: read from
/// the request it builds.
fn token_of(ticket: &anteroom_client::upload::Ticket) -> String {
    let base = anteroom_client::upload::WebBase::parse("http://x:1").unwrap();
    let request = anteroom_client::upload::request(&base, ticket, "n", 0, ()).unwrap();
    let header = request.headers()["authorization"].to_str().unwrap();
    header.strip_prefix("Bearer ").unwrap().to_string()
}

/// A TCP relay in front of the server whose connections can be cut at
/// once, as a network drop cuts them: both ends see the connection end,
/// and new connections go through again.
struct Relay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(server: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    /// Drops every connection through the relay.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_network_drop_the_client_takes_its_seat_back_silently() {
    let server = TestServer::start(|c| c.resume_grace = Duration::from_secs(20)).await;
    let relay = Relay::start(server.addr).await;
    let mut bob = server.join("bob").await;
    let mut ann = Chat::start(relay.addr, "ann");
    ann.expect("* in the room: bob, ann");
    assert_eq!(bob.recv_type("joined").await["name"].as_str(), Some("ann"));
    bob.say("before").await;
    ann.expect("<bob> before");
    bob.next_message().await;

    relay.cut();
    let lost = ann.expect_containing("* connection lost");
    assert!(lost.contains("your place is held for"), "{lost}");
    bob.say("while you were away").await;
    bob.next_message().await;
    ann.expect("* reconnected; your place was kept");
    // The missed message, once, from the history of what was missed.
    ann.expect_containing("<bob> while you were away");
    bob.say("and now").await;
    ann.expect("<bob> and now");
    // bob never saw ann leave or come back.
    assert_eq!(bob.next_message().await["text"].as_str(), Some("and now"));
    bob.expect_silence(Duration::from_millis(300)).await;
    ann.finish();
    server.stop().await;
}
