//! Line mode, for pipes and scripts: standard input lines are sent, and
//! every event is printed as one line on standard output.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use chrono::{Local, TimeZone};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::backlog::PageKind;
use super::escape;
use super::files::{self, Job, Transfer};
use super::grant::Grant;
use super::net::{self, Net, Outgoing, Retry};
use super::state::{Action, parse_feature_command};
use crate::protocol::{Attachment, ErrorCode};
use crate::upload::{WebBase, human_size};
use crate::{Admission, Event};

/// Formats an event as one line (two for `welcome`); `None` for events not
/// worth a line (and for `history`, which takes the client's state to
/// show). What the server sent is escaped ([`escape`]): a message holding
/// a newline or an escape sequence stays on its one line, visibly. `web`
/// makes the links of attachments full URLs.
pub fn format_event(event: &Event, web: Option<&WebBase>) -> Option<String> {
    Some(match event {
        Event::Welcome { text, users, .. } => welcome(text, users),
        Event::Queued { text, .. } => format!("* {}", escape::text(text)),
        Event::Message {
            from,
            text,
            ts,
            attachment,
            ..
        } => message(from, text, attachment.as_ref(), web, clock(*ts)),
        Event::Whisper { from, to, text, ts } => format!(
            "[{}] {} → {} (private): {}",
            clock(*ts),
            escape::name(from),
            escape::name(to),
            escape::text(text)
        ),
        Event::Joined { name, .. } => format!("* {} joined", escape::name(name)),
        Event::Left { name, reason, .. } => format!("* {} left ({reason})", escape::name(name)),
        Event::Users { names } => format!("* in the room: {}", escape::names(names)),
        Event::Gap { missed } => format!("* {missed} events skipped"),
        Event::Lagging { queued, limit } => format!("! {}", lagging(*queued, *limit)),
        Event::Error { code, text } => format!("! {code}: {}", escape::text(text)),
        Event::Bye { reason, text } => format!("* bye ({reason}): {}", escape::text(text)),
        Event::Presence { .. }
        | Event::Ping { .. }
        | Event::Pong { .. }
        | Event::History { .. }
        | Event::Unknown => {
            return None;
        }
    })
}

/// One line for a `presence` frame: who left, who joined; `None` when it
/// carries nothing.
pub fn presence(
    joined: &[std::borrow::Cow<'_, str>],
    left: &[crate::protocol::PresenceLeft<'_>],
) -> Option<String> {
    let mut parts = Vec::new();
    if !joined.is_empty() {
        parts.push(format!("{} joined", escape::names(joined)));
    }
    if !left.is_empty() {
        let names: Vec<&str> = left.iter().map(|l| &*l.name).collect();
        parts.push(format!("{} left", escape::names(&names)));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `[TIME] <from> text 📎 file (size) url`.
fn message(
    from: &str,
    text: &str,
    attachment: Option<&Attachment<'_>>,
    web: Option<&WebBase>,
    time: String,
) -> String {
    let mut line = format!("[{time}] <{}> {}", escape::name(from), escape::text(text));
    if let Some(attachment) = attachment {
        if !text.is_empty() {
            line.push(' ');
        }
        line.push_str(&files::describe(attachment, web));
    }
    line
}

/// The lines for a `history` frame: a header, then its new messages, oldest
/// first (dated unless from today); after a request, whether older ones
/// exist.
pub fn format_page(grant: &mut Grant, event: &Event, web: Option<&WebBase>) -> Vec<String> {
    let Event::History {
        messages,
        more,
        epoch,
    } = event
    else {
        return Vec::new();
    };
    let page = grant.backlog.page(messages, *more, epoch);
    let n = page.new.len();
    let mut lines = Vec::with_capacity(n + 2);
    if n > 0 {
        lines.push(format!(
            "* {n} earlier message{}:",
            if n == 1 { "" } else { "s" }
        ));
    }
    for m in &page.new {
        if let Event::Message {
            from,
            text,
            ts,
            attachment,
            ..
        } = m
        {
            lines.push(message(
                from,
                text,
                attachment.as_ref(),
                web,
                dated_clock(*ts),
            ));
        }
    }
    if page.kind == PageKind::Requested {
        if !page.more {
            lines.push("* no older messages".into());
        } else if n == 0 {
            lines.push("* no earlier messages in that page; /history again for older ones".into());
        }
    }
    lines
}

fn welcome<S: AsRef<str>>(text: &str, users: &[S]) -> String {
    format!(
        "* {}\n* in the room: {}",
        escape::text(text),
        escape::names(users)
    )
}

/// The warning shown for `lagging`, in both modes.
pub fn lagging(queued: u64, limit: u64) -> String {
    format!(
        "falling behind: the server holds {queued} events for you and cuts the connection off at {limit}"
    )
}

fn clock(ts: u64) -> String {
    Local
        .timestamp_millis_opt(ts as i64)
        .single()
        .map_or_else(|| "--:--:--".into(), |t| t.format("%H:%M:%S").to_string())
}

/// The time of an earlier message: with its date, unless it is today.
fn dated_clock(ts: u64) -> String {
    let today = Local::now().date_naive();
    match Local.timestamp_millis_opt(ts as i64).single() {
        Some(t) if t.date_naive() != today => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => clock(ts),
    }
}

fn print(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The client between the connection and standard input.
struct Line {
    out: mpsc::Sender<Outgoing>,
    grant: Grant,
    web: Option<WebBase>,
    trust: crate::Trust,
    transfers: mpsc::Sender<Transfer>,
    /// Our own messages and whispers not yet echoed back; leaving waits
    /// for them.
    unechoed: usize,
    /// Files to send, one at a time, in the order asked.
    sends: VecDeque<(std::path::PathBuf, String)>,
    sending: bool,
}

impl Line {
    /// Sends what an input line asks for; the client is in the room.
    async fn input(&mut self, line: String) {
        let request = match parse_feature_command(&line) {
            None if matches!(line.trim(), "/users" | "/who") => Ok(Outgoing::Who),
            None => Ok(Outgoing::Say(line)),
            Some(Action::Whisper { to, text }) => self.grant.whisper(to, text),
            Some(Action::History(limit)) => self.grant.history(limit),
            Some(Action::Send { path, caption }) => {
                self.sends.push_back((path, caption));
                self.next_send();
                return;
            }
            Some(Action::Notice(text)) => Err(text),
            Some(_) => return,
        };
        match request {
            Ok(request) => {
                self.unechoed += usize::from(matches!(
                    request,
                    Outgoing::Say(_) | Outgoing::Whisper { .. }
                ));
                let _ = self.out.send(request).await;
            }
            Err(why) => print(&format!("! {}", escape::text(&why))),
        }
    }

    /// Starts the next file to send, unless one is being sent.
    fn next_send(&mut self) {
        while !self.sending {
            let Some((path, caption)) = self.sends.pop_front() else {
                return;
            };
            let started = match (self.grant.ticket(), self.web.clone()) {
                (Err(why), _) => Err(why),
                (_, None) => Err("the web listener is not known; start with --web URL".into()),
                (Ok(ticket), Some(web)) => {
                    files::start(
                        Job {
                            path: path.clone(),
                            caption,
                            web,
                            trust: self.trust.clone(),
                            ticket,
                        },
                        self.transfers.clone(),
                    );
                    self.sending = true;
                    Ok(())
                }
            };
            if let Err(why) = started {
                let name = crate::upload::file_name(&path);
                print(&format!(
                    "! cannot send {}: {}",
                    escape::text(&name),
                    escape::text(&why)
                ));
            }
        }
    }

    /// One line at the end of an upload; a stored file is posted.
    async fn transfer(&mut self, transfer: Transfer) {
        let Transfer::Done {
            name,
            caption,
            result,
        } = transfer
        else {
            return;
        };
        self.sending = false;
        let name = escape::text(&name).into_owned();
        match result {
            Ok(stored) => {
                print(&format!("* sent {name} ({})", human_size(stored.size)));
                self.unechoed += 1;
                let _ = self
                    .out
                    .send(Outgoing::Attach {
                        text: caption,
                        url: stored.url,
                    })
                    .await;
            }
            Err(why) => print(&format!("! cannot send {name}: {}", escape::text(&why))),
        }
        self.next_send();
    }

    /// Nothing sent is still waiting for its answer.
    fn settled(&self) -> bool {
        self.unechoed == 0 && !self.sending && self.sends.is_empty() && !self.grant.backlog.asked()
    }
}

/// Runs until standard input ends (then leaves) or the server refuses.
/// Returns an error message when the client could not join.
pub async fn run(dial: super::Dial, name: String) -> Result<(), String> {
    if matches!(dial.trust, crate::Trust::Insecure) {
        eprintln!(
            "warning: --insecure: the server's certificate is not checked; anyone in the middle can read and change this chat"
        );
    }
    let (transfers_tx, mut transfers) = mpsc::channel(64);
    let mut client = Line {
        out: mpsc::channel(1).0,
        grant: Grant::default(),
        web: dial.web_base(),
        trust: dial.trust.clone(),
        transfers: transfers_tx,
        unechoed: 0,
        sends: VecDeque::new(),
        sending: false,
    };
    let (out, mut events) = net::spawn(dial, name.clone(), Retry { when_full: false });
    client.out = out.clone();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    let mut in_room = false;
    // Lines typed before the room lets us in wait here.
    let mut pending: Vec<String> = Vec::new();
    let mut leave_requested = false;
    loop {
        if !input_open && !leave_requested && in_room && pending.is_empty() && client.settled() {
            leave_requested = true;
            let _ = out.send(Outgoing::Bye).await;
        }
        tokio::select! {
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    if matches!(line.trim(), "/quit" | "/exit") {
                        input_open = false;
                        leave_requested = true;
                        let _ = out.send(Outgoing::Bye).await;
                    } else if in_room {
                        client.input(line).await;
                    } else {
                        pending.push(line);
                    }
                }
                _ => input_open = false,
            },
            event = events.recv() => match event {
                None => return Ok(()),
                Some(Net::Connecting { .. }) => {}
                Some(Net::Admitted(admission)) => {
                    client.grant.admitted(&admission);
                    match &admission {
                        Admission::Welcome { users, text, .. } => {
                            print(&welcome(text, users));
                            in_room = true;
                        }
                        Admission::Queued { text, .. } => print(&format!("* {}", escape::text(text))),
                    }
                }
                Some(Net::Event(event)) => {
                    client.grant.event(&event);
                    match &event {
                        Event::Welcome { .. } => in_room = true,
                        Event::Message { id, from, .. } => {
                            client.grant.backlog.live(*id);
                            if *from == name {
                                client.unechoed = client.unechoed.saturating_sub(1);
                            }
                        }
                        Event::Whisper { from, .. } if *from == name => {
                            client.unechoed = client.unechoed.saturating_sub(1);
                        }
                        Event::Error { code, .. } => {
                            client.grant.backlog.refused();
                            if matches!(
                                code,
                                ErrorCode::RateLimited
                                    | ErrorCode::MessageTooLong
                                    | ErrorCode::BadRequest
                                    | ErrorCode::NoSuchUser
                                    | ErrorCode::WhisperUnsupported
                                    | ErrorCode::UnknownType
                                    | ErrorCode::NotAdmitted
                            ) {
                                client.unechoed = client.unechoed.saturating_sub(1);
                            }
                        }
                        _ => {}
                    }
                    if let Event::History { .. } = event {
                        for line in format_page(&mut client.grant, &event, client.web.as_ref()) {
                            print(&line);
                        }
                    } else if let Some(line) = format_event(&event, client.web.as_ref()) {
                        print(&line);
                    }
                }
                Some(Net::Lost { reason, retry_in, .. }) => {
                    in_room = false;
                    client.unechoed = 0;
                    print(&format!("* disconnected ({reason}); reconnecting in {:.1}s", retry_in.as_secs_f64()));
                }
                Some(Net::Finished { reason: None }) => return Ok(()),
                Some(Net::Finished { reason: Some(reason) }) => return Err(reason),
            },
            Some(transfer) = transfers.recv() => client.transfer(transfer).await,
            // Never wait for an echo or a page forever.
            _ = tokio::time::sleep(Duration::from_secs(5)), if !input_open && (client.unechoed > 0 || client.grant.backlog.asked()) => {
                client.unechoed = 0;
                client.grant.backlog.refused();
            }
        }
        // Lines held while waiting go out once in the room, in order.
        if in_room && !pending.is_empty() {
            for line in std::mem::take(&mut pending) {
                client.input(line).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByeReason, ErrorCode, LeftReason};

    /// Every line printed for `event`, which must be one (two for welcome).
    fn printed(event: Event) -> String {
        format_event(&event, None).expect("a line")
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
                resume: None,
                resume_grace_s: None,
                resumed: None,
            },
            Event::Queued {
                position: 1,
                waiting: 1,
                text: bad.into(),
                features: None,
                eta_s: None,
                resume: None,
                resume_grace_s: None,
                resumed: None,
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
            Event::Whisper {
                from: bad.into(),
                to: bad.into(),
                text: bad.into(),
                ts: 0,
            },
            Event::Message {
                id: 2,
                from: bad.into(),
                text: bad.into(),
                ts: 0,
                attachment: Some(Attachment {
                    url: bad.into(),
                    name: bad.into(),
                    size: 1,
                    mime: bad.into(),
                }),
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

    #[test]
    fn whispers_and_attachments_have_lines_of_their_own() {
        let line = printed(Event::Whisper {
            from: "ann".into(),
            to: "bo".into(),
            text: "psst".into(),
            ts: 0,
        });
        assert!(line.ends_with("] ann → bo (private): psst"), "{line}");
        let web = WebBase::parse("http://127.0.0.1:7880").unwrap();
        let event = Event::Message {
            id: 1,
            from: "ann".into(),
            text: "".into(),
            ts: 0,
            attachment: Some(Attachment {
                url: "/files/abc".into(),
                name: "a.txt".into(),
                size: 12,
                mime: "text/plain".into(),
            }),
        };
        let line = format_event(&event, Some(&web)).unwrap();
        assert!(
            line.ends_with("] <ann> 📎 a.txt (12 B) http://127.0.0.1:7880/files/abc"),
            "{line}"
        );
    }

    fn said(id: u64) -> Event {
        Event::Message {
            id,
            from: "bob".into(),
            text: format!("m{id}").into(),
            ts: crate::protocol::unix_millis(),
            attachment: None,
        }
    }

    #[test]
    fn pages_print_under_a_header_once_each() {
        let mut grant = Grant::default();
        grant.admitted(&Admission::Welcome {
            users: vec!["ann".into()],
            capacity: 2,
            text: "hi".into(),
            features: super::super::grant::asked(),
            upload: None,
        });
        let join = Event::History {
            messages: vec![said(4), said(5)],
            more: true,
            epoch: "e".into(),
        };
        let lines = format_page(&mut grant, &join, None);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "* 2 earlier messages:");
        assert!(lines[1].ends_with("] <bob> m4") && lines[2].ends_with("] <bob> m5"));
        assert!(grant.history(10).is_ok());
        let answer = Event::History {
            messages: vec![said(3), said(4)],
            more: false,
            epoch: "e".into(),
        };
        let lines = format_page(&mut grant, &answer, None);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "* 1 earlier message:");
        assert!(lines[1].ends_with("] <bob> m3"));
        assert_eq!(lines[2], "* no older messages");
        assert_eq!(grant.history(10), Err("no older messages".into()));
    }

    #[test]
    fn an_earlier_message_from_another_day_carries_its_date() {
        let line = dated_clock(86_400_000 * 3);
        assert_eq!(line.len(), "1970-01-04 00:00:00".len(), "{line}");
        assert!(line.starts_with("1970-01-0"), "{line}");
    }
}
