//! A damaged `data_dir`: a truncated, overwritten or emptied database
//! either stops the server with a message naming the file, or (for damage
//! the server can live with) is served as a correct part of the log, never
//! as garbage. A second server on a `data_dir` in use refuses to start.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmpv::Value;

use crate::crash::{args_for, fill_and_stop};
use crate::kit::{TempDir, join_with, whole_log};
use crate::support::process::{command, spawn};

/// What a server did with a `data_dir`.
enum Outcome {
    /// It exited with this status before listening; everything it wrote.
    Refused(std::process::ExitStatus, String),
    /// It listens on this chat address.
    Serving(SocketAddr),
}

/// A server process whose every line of output is kept.
struct Started {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keep_lines(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut out = into.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}

/// Starts a server with `args` and waits until it either exits or listens.
async fn start_watched(args: &[String]) -> (Started, Outcome) {
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--web-listen",
        "",
    ];
    all.extend(args.iter().map(String::as_str));
    let mut child = command(&all, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run anteroom");
    let output = Arc::new(Mutex::new(String::new()));
    keep_lines(child.stdout.take().unwrap(), output.clone());
    keep_lines(child.stderr.take().unwrap(), output.clone());
    let mut started = Started { child, output };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = started.child.try_wait().unwrap() {
            // Let the readers take the last lines.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let out = started.output.lock().unwrap().clone();
            return (started, Outcome::Refused(status, out));
        }
        let listening = {
            let out = started.output.lock().unwrap();
            out.lines().find_map(|line| {
                let (_, rest) = line.split_once("listening on ")?;
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            })
        };
        if let Some(addr) = listening {
            return (started, Outcome::Serving(addr));
        }
        assert!(
            Instant::now() < deadline,
            "the server neither started nor exited: {}",
            started.output.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server either refuses the damaged log, naming the database file, or
/// serves a log in which every message is one that was written, unchanged.
async fn refuses_or_serves_a_true_part(dir: &TempDir, written: &BTreeMap<u64, String>) {
    let (started, outcome) = start_watched(&args_for(dir)).await;
    match outcome {
        Outcome::Refused(status, out) => {
            println!("refused: {out}");
            assert!(!status.success(), "refused with a failure status: {out}");
            let db = dir.db();
            assert!(
                out.contains(db.to_str().unwrap()),
                "the refusal names {}: {out}",
                db.display()
            );
        }
        Outcome::Serving(addr) => {
            let (mut c, _, _) = join_with(addr, "auditor", &["history"]).await;
            let (log, _) = whole_log(&mut c, 200).await;
            println!("served {} of {} messages", log.len(), written.len());
            for m in &log {
                let id = m["id"].as_u64().unwrap();
                assert_eq!(
                    written.get(&id).map(String::as_str),
                    m["text"].as_str(),
                    "a damaged log served a message that was never written: {m}; {}",
                    started.output.lock().unwrap()
                );
                assert_eq!(m["from"].as_str(), Some("ann"), "{m}");
            }
        }
    }
    drop(started);
}

/// Enough messages of 100-odd bytes for a database of dozens of pages.
const MESSAGES: usize = 1500;

async fn filled(what: &str) -> (TempDir, BTreeMap<u64, String>, u64) {
    let dir = TempDir::new(what);
    let written = fill_and_stop(&dir, MESSAGES).await;
    let len = std::fs::metadata(dir.db()).unwrap().len();
    assert!(
        len >= 16 * 4096,
        "the log spans many pages after a clean stop: {len} bytes"
    );
    (dir, written, len)
}

#[tokio::test]
async fn a_database_truncated_to_half_is_refused_or_served_truly() {
    let _heavy = crate::heavy().await;
    let (dir, written, len) = filled("half").await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.db())
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refuses_or_serves_a_true_part(&dir, &written).await;
}

#[tokio::test]
async fn a_database_with_garbage_in_the_middle_is_refused_or_served_truly() {
    let _heavy = crate::heavy().await;
    let (dir, written, len) = filled("garbage").await;
    let mut rng = fastrand::Rng::with_seed(7);
    let garbage: Vec<u8> = (0..8192).map(|_| rng.u8(..)).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.db())
        .unwrap();
    file.seek(SeekFrom::Start(len / 2 - 1000)).unwrap();
    file.write_all(&garbage).unwrap();
    file.sync_all().unwrap();
    drop(file);
    refuses_or_serves_a_true_part(&dir, &written).await;
}

#[tokio::test]
async fn an_empty_database_file_is_refused_by_name() {
    let dir = TempDir::new("empty");
    let written = fill_and_stop(&dir, 10).await;
    assert_eq!(written.len(), 10);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.db())
        .unwrap()
        .set_len(0)
        .unwrap();
    let (_started, outcome) = start_watched(&args_for(&dir)).await;
    match outcome {
        Outcome::Refused(status, out) => {
            assert!(!status.success(), "{out}");
            assert!(
                out.contains(dir.db().to_str().unwrap()),
                "the refusal names the file: {out}"
            );
        }
        Outcome::Serving(addr) => panic!("an emptied log was served on {addr}"),
    }
}

#[tokio::test]
async fn a_second_server_on_a_data_dir_in_use_refuses_naming_it() {
    let dir = TempDir::new("locked");
    let args = args_for(&dir);
    let first = spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let (_second, outcome) = start_watched(&args).await;
    match outcome {
        Outcome::Refused(status, out) => {
            assert!(!status.success(), "{out}");
            assert!(
                out.contains("data_dir") && out.contains(dir.as_str()),
                "the refusal names data_dir: {out}"
            );
        }
        Outcome::Serving(addr) => panic!("a second server shares the data_dir, on {addr}"),
    }
    // The first is undisturbed.
    let (mut ann, _, _) = join_with(first.addr, "ann", &["history"]).await;
    ann.say("still here").await;
    let m: Value = ann.next_message().await;
    assert_eq!(m["text"].as_str(), Some("still here"));
}
