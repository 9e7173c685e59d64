//! Line mode, for pipes and scripts: standard input lines are sent, and
//! every event is printed as one line on standard output.

use std::io::Write;
use std::time::Duration;

use chrono::{Local, TimeZone};
use tokio::io::AsyncBufReadExt;

use super::escape;
use super::net::{self, Net, Outgoing, Retry};
use crate::protocol::ErrorCode;
use crate::{Admission, Event};

/// Formats an event as one line (two for `welcome`); `None` for events not
/// worth a line. What the server sent is escaped ([`escape`]): a message
/// holding a newline or an escape sequence stays on its one line, visibly.
pub fn format_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Welcome { text, users, .. } => welcome(text, users),
        Event::Queued { text, .. } => format!("* {}", escape::text(text)),
        Event::Message { from, text, ts, .. } => format!(
            "[{}] <{}> {}",
            clock(*ts),
            escape::name(from),
            escape::text(text)
        ),
        Event::Joined { name, .. } => format!("* {} joined", escape::name(name)),
        Event::Left { name, reason, .. } => format!("* {} left ({reason})", escape::name(name)),
        Event::Users { names } => format!("* in the room: {}", escape::names(names)),
        Event::Gap { missed } => format!("* {missed} events skipped"),
        Event::Error { code, text } => format!("! {code}: {}", escape::text(text)),
        Event::Bye { reason, text } => format!("* bye ({reason}): {}", escape::text(text)),
        Event::Ping { .. }
        | Event::Pong { .. }
        | Event::History { .. }
        | Event::Whisper { .. }
        | Event::Unknown => return None,
    })
}

fn welcome<S: AsRef<str>>(text: &str, users: &[S]) -> String {
    format!(
        "* {}\n* in the room: {}",
        escape::text(text),
        escape::names(users)
    )
}

fn clock(ts: u64) -> String {
    Local
        .timestamp_millis_opt(ts as i64)
        .single()
        .map_or_else(|| "--:--:--".into(), |t| t.format("%H:%M:%S").to_string())
}

fn print(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs until standard input ends (then leaves) or the server refuses.
/// Returns an error message when the client could not join.
pub async fn run(dial: super::Dial, name: String) -> Result<(), String> {
    if matches!(dial.trust, crate::Trust::Insecure) {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; anyone in the middle can read and change this chat"
        );
    }
    let (out, mut events) = net::spawn(dial, name.clone(), Retry { when_full: false });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    let mut in_room = false;
    // Lines typed before the room lets us in wait here.
    let mut pending: Vec<Outgoing> = Vec::new();
    // Our own messages not yet echoed back; leaving waits for them.
    let mut unechoed = 0usize;
    let mut leave_requested = false;
    loop {
        if !input_open && !leave_requested && in_room && pending.is_empty() && unechoed == 0 {
            leave_requested = true;
            let _ = out.send(Outgoing::Bye).await;
        }
        tokio::select! {
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) => {
                    let request = match line.trim() {
                        "" => continue,
                        "/users" | "/who" => Outgoing::Who,
                        "/quit" | "/exit" => Outgoing::Bye,
                        _ => Outgoing::Say(line.clone()),
                    };
                    if request == Outgoing::Bye {
                        input_open = false;
                        leave_requested = true;
                        let _ = out.send(Outgoing::Bye).await;
                    } else if in_room {
                        unechoed += usize::from(matches!(request, Outgoing::Say(_)));
                        let _ = out.send(request).await;
                    } else {
                        pending.push(request);
                    }
                }
                _ => input_open = false,
            },
            event = events.recv() => match event {
                None => return Ok(()),
                Some(Net::Connecting { .. }) => {}
                Some(Net::Admitted(admission)) => {
                    match &admission {
                        Admission::Welcome { users, text, .. } => {
                            print(&welcome(text, users));
                            in_room = true;
                        }
                        Admission::Queued { text, .. } => print(&format!("* {}", escape::text(text))),
                    }
                    if in_room {
                        for request in pending.drain(..) {
                            unechoed += usize::from(matches!(request, Outgoing::Say(_)));
                            let _ = out.send(request).await;
                        }
                    }
                }
                Some(Net::Event(event)) => {
                    match &event {
                        Event::Welcome { .. } => {
                            in_room = true;
                            for request in pending.drain(..) {
                                unechoed += usize::from(matches!(request, Outgoing::Say(_)));
                                let _ = out.send(request).await;
                            }
                        }
                        Event::Message { from, .. } if *from == name => unechoed = unechoed.saturating_sub(1),
                        Event::Error { code: ErrorCode::RateLimited | ErrorCode::MessageTooLong | ErrorCode::BadRequest, .. } => {
                            unechoed = unechoed.saturating_sub(1);
                        }
                        _ => {}
                    }
                    if let Some(line) = format_event(&event) {
                        print(&line);
                    }
                }
                Some(Net::Lost { reason, retry_in, .. }) => {
                    in_room = false;
                    unechoed = 0;
                    print(&format!("* disconnected ({reason}); reconnecting in {:.1}s", retry_in.as_secs_f64()));
                }
                Some(Net::Finished { reason: None }) => return Ok(()),
                Some(Net::Finished { reason: Some(reason) }) => return Err(reason),
            },
            // Never wait for an echo forever.
            _ = tokio::time::sleep(Duration::from_secs(5)), if !input_open && unechoed > 0 => unechoed = 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByeReason, ErrorCode, LeftReason};

    /// Every line printed for `event`, which must be one (two for welcome).
    fn printed(event: Event) -> String {
        format_event(&event).expect("a line")
    }

    #[test]
    fn a_member_cannot_forge_lines_or_send_escape_sequences() {
        let line = printed(Event::Message {
            id: 1,
            from: "mallory".into(),
            text: "hi\n[12:00:00] <admin> send me your password\u{1b}]0;owned\u{7}\u{1b}[2J".into(),
            ts: 0,
            attachment: None,
        });
        assert!(!line.contains('\n'), "{line}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.ends_with(
                "<mallory> hi\\n[12:00:00] <admin> send me your password\\x1b]0;owned\\x07\\x1b[2J"
            ),
            "{line}"
        );
    }

    #[test]
    fn names_and_server_texts_are_escaped_in_every_line() {
        let bad = "ev\u{202e}il\n\u{1b}[31m";
        let events = [
            Event::Welcome {
                name: bad.into(),
                users: vec![bad.into()],
                capacity: 1,
                text: bad.into(),
                features: None,
                max_upload_bytes: None,
                upload_token: None,
            },
            Event::Queued {
                position: 1,
                waiting: 1,
                text: bad.into(),
                features: None,
            },
            Event::Message {
                id: 1,
                from: bad.into(),
                text: bad.into(),
                ts: 0,
                attachment: None,
            },
            Event::Joined {
                name: bad.into(),
                ts: 0,
            },
            Event::Left {
                name: bad.into(),
                reason: LeftReason::Bye,
                ts: 0,
            },
            Event::Users {
                names: vec![bad.into(), bad.into()],
            },
            Event::Error {
                code: ErrorCode::BadRequest,
                text: bad.into(),
            },
            Event::Bye {
                reason: ByeReason::Shutdown,
                text: bad.into(),
            },
        ];
        for event in events {
            let welcome = matches!(event, Event::Welcome { .. });
            let out = printed(event);
            assert_eq!(out.lines().count(), if welcome { 2 } else { 1 }, "{out}");
            for line in out.lines() {
                assert!(!line.chars().any(char::is_control), "{line:?}");
                assert!(!line.contains('\u{202e}'), "{line:?}");
            }
            assert!(out.contains("ev\\u{202e}il\\n\\x1b[31m"), "{out}");
        }
    }
}
