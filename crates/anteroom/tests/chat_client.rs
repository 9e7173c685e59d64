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
    bob.expect("* ann left (bye)");
    bob.expect("* cid joined");
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
