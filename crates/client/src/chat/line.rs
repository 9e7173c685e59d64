//! Line mode, for pipes and scripts: standard input lines are sent, and
//! every event is printed as one line on standard output.

use std::io::Write;
use std::time::Duration;

use chrono::{Local, TimeZone};
use tokio::io::AsyncBufReadExt;

use super::net::{self, Net, Outgoing, Retry};
use crate::protocol::ErrorCode;
use crate::{Admission, Event};

/// Formats an event as one line; `None` for events not worth a line.
pub fn format_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Welcome { text, users, .. } => {
            format!("* {text}\n* in the room: {}", users.join(", "))
        }
        Event::Queued { text, .. } => format!("* {text}"),
        Event::Message { from, text, ts, .. } => format!("[{}] <{from}> {text}", clock(*ts)),
        Event::Joined { name, .. } => format!("* {name} joined"),
        Event::Left { name, reason, .. } => format!("* {name} left ({reason})"),
        Event::Users { names } => format!("* in the room: {}", names.join(", ")),
        Event::Gap { missed } => format!("* {missed} events skipped"),
        Event::Error { code, text } => format!("! {code}: {text}"),
        Event::Bye { reason, text } => format!("* bye ({reason}): {text}"),
        Event::Ping { .. } | Event::Pong { .. } | Event::Unknown => return None,
    })
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
pub async fn run(server: String, name: String) -> Result<(), String> {
    let (out, mut events) = net::spawn(server, name.clone(), Retry { when_full: false });
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
                            print(&format!("* {text}\n* in the room: {}", users.join(", ")));
                            in_room = true;
                        }
                        Admission::Queued { text, .. } => print(&format!("* {text}")),
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
