//! The chat client's state: what the screen shows, updated by server events
//! and by keys. Plain data with no terminal or socket, so it is tested
//! directly and rendered by `ui`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;

use super::backlog::{self, PageKind};
use super::grant::Grant;
use super::{escape, files};
use crate::upload::WebBase;
use crate::{Admission, Event};

impl Entry {
    fn text_bytes(&self) -> usize {
        match self {
            Entry::Message {
                from,
                text,
                attachment,
                ..
            } => from.len() + text.len() + attachment.as_ref().map_or(0, String::len),
            Entry::Whisper { from, to, text, .. } => from.len() + to.len() + text.len(),
            Entry::Notice { text, .. } => text.len(),
        }
    }
}

/// Cuts `text` to [`MAX_ENTRY_BYTES`] (at a character boundary), noting how
/// much was left out.
fn cap_text(text: &mut String) {
    if text.len() <= MAX_ENTRY_BYTES {
        return;
    }
    let mut end = MAX_ENTRY_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" … ({left_out} more bytes not shown)"));
}

/// `text` escaped by `how`, copied only when something was escaped.
fn escaped(text: String, how: impl Fn(&str) -> Cow<'_, str>) -> String {
    match how(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(safe) => safe,
    }
}

/// Where the client stands with the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Queued {
        position: u64,
        waiting: u64,
    },
    InRoom {
        capacity: u64,
    },
    /// Lost the server; retrying (attempt number, time until the next try).
    Reconnecting {
        attempt: u32,
        retry_in_ms: u64,
        reason: String,
    },
}

/// One line of the conversation pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Message {
        ts: u64,
        from: String,
        text: String,
        /// A posted file, as [`files::describe`] shows it.
        attachment: Option<String>,
        /// From the chat log (`history`), not live.
        earlier: bool,
    },
    /// A direct message, sent or received.
    Whisper {
        ts: u64,
        from: String,
        to: String,
        text: String,
    },
    /// Something about the room or the connection (joins, leaves, errors).
    Notice { ts: u64, text: String },
}

/// Everything the chat screen shows.
#[derive(Debug, Clone)]
pub struct ChatState {
    pub me: String,
    pub server: String,
    pub status: Status,
    /// The conversation, oldest first; see [`ChatState::entries`].
    entries: VecDeque<Entry>,
    /// Entries ever dropped from the front: the sequence number of the
    /// first entry, so that a renderer can tell new entries from old.
    dropped: u64,
    /// Members in join order.
    pub users: Vec<String>,
    pub input: String,
    /// Cursor position in `input`, in characters.
    pub cursor: usize,
    history: Vec<String>,
    history_pos: Option<usize>,
    /// Lines scrolled up from the bottom of the conversation. The screen
    /// limits it to the lines there are (a `usize`: a conversation can wrap
    /// into far more than 65,535 lines).
    pub scroll_back: usize,
    /// Bytes of text in `entries`, bounded by [`MAX_TOTAL_BYTES`].
    text_bytes: usize,
    /// Bumped when entries are inserted at the top: the numbering of
    /// entries starts afresh, see [`ChatState::generation`].
    generation: u64,
    /// The features and the upload ticket of this connection.
    pub grant: Grant,
    /// The web listener, for the links of attachments.
    pub web: Option<WebBase>,
    /// The file being sent and the percent sent.
    pub upload: Option<(String, u64)>,
}

/// What the user asked for by pressing Enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Say(String),
    /// `/msg NAME TEXT`.
    Whisper {
        to: String,
        text: String,
    },
    /// `/history [N]`: N earlier messages.
    History(u32),
    /// `/send PATH [CAPTION]`.
    Send {
        path: PathBuf,
        caption: String,
    },
    Who,
    Quit,
    /// Nothing to send; show this instead (help, or why a command is wrong).
    Notice(String),
    /// Nothing to send.
    None,
}

/// Oldest entries are dropped beyond this many.
const MAX_ENTRIES: usize = 5000;

/// Most bytes of text kept in one entry; the rest of a longer one is left
/// out, with a note saying how much. Far above any message a server allows by
/// default (4 KiB), it keeps a hostile server's 16 MiB frames from filling
/// memory 5,000 times over.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Most bytes of text kept in all entries together; the oldest entries are
/// dropped beyond it (5,000 messages of 4 KiB fit).
pub const MAX_TOTAL_BYTES: usize = 32 * 1024 * 1024;

/// Most members the roster holds, whatever the server says: a room this
/// large is far beyond one server, and the bound keeps a hostile server's
/// endless `joined` frames from growing the roster without end. Below it,
/// the room's capacity from `welcome` is the bound.
pub const MAX_ROSTER: usize = 100_000;

/// The `/help` text.
pub const HELP: &str = "commands: /users lists the room, /msg NAME TEXT whispers, /send PATH [CAPTION] posts a file, /history [N] shows earlier messages, /quit leaves, /help shows this; PageUp/PageDown scroll";

impl ChatState {
    pub fn new(me: &str, server: &str) -> Self {
        Self {
            me: me.to_string(),
            server: server.to_string(),
            status: Status::Connecting,
            entries: VecDeque::new(),
            dropped: 0,
            users: Vec::new(),
            input: String::new(),
            cursor: 0,
            history: Vec::new(),
            history_pos: None,
            scroll_back: 0,
            text_bytes: 0,
            generation: 0,
            grant: Grant::default(),
            web: None,
            upload: None,
        }
    }

    /// An entry as kept: a notice escaped (message entries come escaped from
    /// [`ChatState::apply`]), and no text longer than [`MAX_ENTRY_BYTES`].
    fn kept(entry: Entry) -> Entry {
        let mut entry = match entry {
            Entry::Notice { ts, text } => Entry::Notice {
                ts,
                text: escaped(text, escape::text),
            },
            message => message,
        };
        match &mut entry {
            Entry::Message {
                text, attachment, ..
            } => {
                cap_text(text);
                if let Some(attachment) = attachment {
                    cap_text(attachment);
                }
            }
            Entry::Whisper { text, .. } | Entry::Notice { text, .. } => cap_text(text),
        }
        entry
    }

    /// Adds an entry at the bottom.
    fn push(&mut self, entry: Entry) {
        let entry = Self::kept(entry);
        self.text_bytes += entry.text_bytes();
        self.entries.push_back(entry);
        self.trim();
    }

    /// Inserts entries at the top, in their order: earlier messages paged
    /// back. Beyond the bounds the oldest go first, so a page larger than
    /// what is kept loses its own oldest lines, never the newest.
    fn prepend(&mut self, entries: Vec<Entry>) {
        for entry in entries.into_iter().rev() {
            let entry = Self::kept(entry);
            self.text_bytes += entry.text_bytes();
            self.entries.push_front(entry);
        }
        self.generation += 1;
        self.dropped = 0;
        self.trim();
    }

    /// Drops the oldest beyond either bound, never the newest.
    fn trim(&mut self) {
        while self.entries.len() > 1
            && (self.entries.len() > MAX_ENTRIES || self.text_bytes > MAX_TOTAL_BYTES)
        {
            if let Some(old) = self.entries.pop_front() {
                self.text_bytes -= old.text_bytes();
                self.dropped += 1;
            }
        }
    }

    /// The conversation, oldest first. Entries never change once added;
    /// they are dropped from the front, and earlier messages are inserted
    /// there (which starts a new [`ChatState::generation`]).
    pub fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    /// The sequence number of the first entry: within one generation,
    /// entries are numbered from 0 in the order they were added, and
    /// `entries()[i]` is number `first_seq() + i`.
    pub fn first_seq(&self) -> u64 {
        self.dropped
    }

    /// Changes when entries were inserted at the top: a renderer that keeps
    /// work per entry starts afresh.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The most members the roster may hold: the room's capacity when known.
    fn roster_limit(&self) -> usize {
        match self.status {
            Status::InRoom { capacity } => usize::try_from(capacity)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_ROSTER),
            _ => MAX_ROSTER,
        }
    }

    /// Replaces the roster, keeping at most [`ChatState::roster_limit`] names.
    fn set_roster<S: AsRef<str>>(&mut self, names: &[S]) {
        let limit = self.roster_limit();
        self.users = names
            .iter()
            .take(limit)
            .map(|n| n.as_ref().to_string())
            .collect();
    }

    /// Adds a local notice (connection state, help).
    pub fn notice(&mut self, text: impl Into<String>) {
        self.push(Entry::Notice {
            ts: anteroom_protocol::unix_millis(),
            text: text.into(),
        });
    }

    /// Applies the result of `hello`.
    pub fn admitted(&mut self, admission: &Admission) {
        self.grant.admitted(admission);
        match admission {
            Admission::Welcome {
                users,
                capacity,
                text,
                ..
            } => self.entered(users, *capacity, text),
            Admission::Queued {
                position,
                waiting,
                text,
                ..
            } => {
                self.status = Status::Queued {
                    position: *position,
                    waiting: *waiting,
                };
                self.notice(text.clone());
            }
        }
    }

    /// In the room, directly or from the queue.
    fn entered<S: AsRef<str>>(&mut self, users: &[S], capacity: u64, text: &str) {
        self.status = Status::InRoom { capacity };
        self.set_roster(users);
        self.notice(text);
    }

    /// A `message` as an entry, escaped; `None` for another event.
    fn message_entry(&self, event: &Event, earlier: bool) -> Option<Entry> {
        let Event::Message {
            from,
            text,
            ts,
            attachment,
            ..
        } = event
        else {
            return None;
        };
        Some(Entry::Message {
            ts: *ts,
            from: escape::name(from).into_owned(),
            text: escape::text(text).into_owned(),
            attachment: attachment
                .as_ref()
                .map(|a| files::describe(a, self.web.as_ref())),
            earlier,
        })
    }

    /// Shows a `history` frame: after `welcome` below what is shown (it
    /// comes before anything live), in answer to `/history` at the top.
    fn page(&mut self, messages: &[Event], more: bool, epoch: &str) {
        let page = self.grant.backlog.page(messages, more, epoch);
        let (kind, more) = (page.kind, page.more);
        let entries: Vec<Entry> = page
            .new
            .iter()
            .filter_map(|m| self.message_entry(m, true))
            .collect();
        let n = entries.len();
        let ts = anteroom_protocol::unix_millis();
        let header = Entry::Notice {
            ts,
            text: format!("— {n} earlier message{} —", plural(n)),
        };
        match kind {
            PageKind::Join if n == 0 => {}
            PageKind::Join => {
                self.push(header);
                for entry in entries {
                    self.push(entry);
                }
            }
            PageKind::Requested if n == 0 => self.notice(if more {
                "no earlier messages in that page; /history again for older ones"
            } else {
                "no older messages"
            }),
            PageKind::Requested => {
                let mut block = Vec::with_capacity(n + 2);
                if !more {
                    block.push(Entry::Notice {
                        ts,
                        text: "no older messages".into(),
                    });
                }
                block.push(header);
                block.extend(entries);
                self.prepend(block);
                self.notice(format!(
                    "{n} earlier message{} added at the top (PageUp){}",
                    plural(n),
                    if more { "" } else { "; no older messages" }
                ));
            }
        }
    }

    /// Applies one server event.
    pub fn apply(&mut self, event: &Event) {
        self.grant.event(event);
        match event {
            Event::Welcome {
                users,
                capacity,
                text,
                ..
            } => self.entered(users, *capacity, text),
            Event::Queued {
                position, waiting, ..
            } => {
                self.status = Status::Queued {
                    position: *position,
                    waiting: *waiting,
                };
            }
            Event::Message { id, .. } => {
                self.grant.backlog.live(*id);
                if let Some(entry) = self.message_entry(event, false) {
                    self.push(entry);
                }
            }
            Event::History {
                messages,
                more,
                epoch,
            } => self.page(messages, *more, epoch),
            Event::Lagging { queued, limit } => {
                self.notice(super::line::lagging(*queued, *limit));
            }
            Event::Whisper { from, to, text, ts } => self.push(Entry::Whisper {
                ts: *ts,
                from: escape::name(from).into_owned(),
                to: escape::name(to).into_owned(),
                text: escape::text(text).into_owned(),
            }),
            Event::Joined { name, ts } => {
                if self.users.len() < self.roster_limit() && !self.users.iter().any(|u| u == name) {
                    self.users.push(name.to_string());
                }
                self.push(Entry::Notice {
                    ts: *ts,
                    text: format!("{} joined", escape::name(name)),
                });
            }
            Event::Left { name, reason, ts } => {
                self.users.retain(|u| u != name);
                self.push(Entry::Notice {
                    ts: *ts,
                    text: format!(
                        "{} left ({})",
                        escape::name(name),
                        reason.as_str().replace('_', " ")
                    ),
                });
            }
            Event::Presence { joined, left, ts } => {
                // Departures first, as the contract asks: a name can leave
                // and come back within one frame.
                for gone in left {
                    self.users.retain(|u| *u != gone.name);
                }
                for name in joined {
                    if self.users.len() < self.roster_limit()
                        && !self.users.iter().any(|u| u == name)
                    {
                        self.users.push(name.to_string());
                    }
                }
                if let Some(text) = super::line::presence(joined, left) {
                    self.push(Entry::Notice { ts: *ts, text });
                }
            }
            Event::Users { names } => {
                self.set_roster(names);
                self.notice(format!(
                    "in the room ({}): {}",
                    names.len(),
                    escape::names(names)
                ));
            }
            Event::Gap { missed } => {
                self.notice(format!(
                    "{missed} events were skipped while you were behind; refreshing the user list"
                ));
            }
            Event::Error { code, text } => {
                self.grant.backlog.refused();
                self.notice(format!("error ({code}): {text}"));
            }
            Event::Bye { text, .. } => self.notice(text.to_string()),
            Event::Ping { .. } | Event::Pong { .. } | Event::Unknown => {}
        }
    }

    /// Takes the input line when Enter is pressed.
    pub fn submit(&mut self) -> Action {
        let line = std::mem::take(&mut self.input);
        self.cursor = 0;
        self.history_pos = None;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Action::None;
        }
        if self.history.last().map(String::as_str) != Some(line.as_str()) {
            self.history.push(line.clone());
        }
        self.scroll_back = 0;
        match parse_command(trimmed).unwrap_or(Action::Say(line)) {
            Action::Notice(text) => {
                self.notice(text);
                Action::None
            }
            action => action,
        }
    }

    /// Inserts a character at the cursor.
    pub fn insert(&mut self, c: char) {
        let at = self.byte_index(self.cursor);
        self.input.insert(at, c);
        self.cursor += 1;
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_index(self.cursor);
            self.input.remove(at);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.input.chars().count() {
            let at = self.byte_index(self.cursor);
            self.input.remove(at);
        }
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.input.chars().count());
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.input.chars().count();
    }

    /// Recalls the previous line of history.
    pub fn history_up(&mut self) {
        if self.history.is_empty() {
            return;
        }
        let pos = match self.history_pos {
            None => self.history.len() - 1,
            Some(p) => p.saturating_sub(1),
        };
        self.history_pos = Some(pos);
        self.input = self.history[pos].clone();
        self.end();
    }

    /// Moves forward in history; past the newest line, clears the input.
    pub fn history_down(&mut self) {
        match self.history_pos {
            None => {}
            Some(p) if p + 1 < self.history.len() => {
                self.history_pos = Some(p + 1);
                self.input = self.history[p + 1].clone();
                self.end();
            }
            Some(_) => {
                self.history_pos = None;
                self.input.clear();
                self.cursor = 0;
            }
        }
    }

    fn byte_index(&self, chars: usize) -> usize {
        self.input
            .char_indices()
            .nth(chars)
            .map_or(self.input.len(), |(i, _)| i)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The command a line of the full-screen client holds; `None` for a line
/// to say.
pub fn parse_command(line: &str) -> Option<Action> {
    if let Some(action) = parse_feature_command(line) {
        return Some(action);
    }
    let command = line.strip_prefix('/')?;
    Some(match command.split_whitespace().next().unwrap_or("") {
        "users" | "who" => Action::Who,
        "quit" | "exit" => Action::Quit,
        "help" => Action::Notice(HELP.into()),
        // `//text` sends a message starting with a slash.
        _ if command.starts_with('/') => Action::Say(command.to_string()),
        _ => Action::Notice(format!("unknown command; {HELP}")),
    })
}

/// `/msg`, `/send` and `/history`, the commands of version 1.1 features,
/// which both modes know; `None` for any other line. A command used wrongly
/// is [`Action::Notice`] saying how to use it.
pub fn parse_feature_command(line: &str) -> Option<Action> {
    let line = line.trim();
    let (command, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(c, r)| (c, r.trim_start()));
    Some(match command {
        "/msg" => match first_arg(rest) {
            Some((to, text)) if !to.is_empty() && !text.is_empty() => Action::Whisper {
                to: to.to_string(),
                text: text.to_string(),
            },
            _ => {
                Action::Notice("usage: /msg NAME TEXT (a name with spaces in double quotes)".into())
            }
        },
        "/history" => match rest.parse::<u32>() {
            _ if rest.is_empty() => Action::History(backlog::DEFAULT_PAGE),
            Ok(n) if n > 0 => Action::History(n.min(backlog::MAX_PAGE)),
            _ => Action::Notice(format!(
                "usage: /history [N], N from 1 to {} (default {})",
                backlog::MAX_PAGE,
                backlog::DEFAULT_PAGE
            )),
        },
        "/send" => match first_arg(rest) {
            Some((path, caption)) if !path.is_empty() => Action::Send {
                path: expand_home(path),
                caption: caption.to_string(),
            },
            _ => Action::Notice(
                "usage: /send PATH [CAPTION] (a path with spaces in double quotes)".into(),
            ),
        },
        _ => return None,
    })
}

/// The first argument in `rest` and what follows it: a word, or words in
/// double quotes (names and paths may hold spaces).
fn first_arg(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some((&quoted[..end], quoted[end + 1..].trim_start()));
    }
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    (end > 0).then(|| (&rest[..end], rest[end..].trim_start()))
}

/// `~/x` as the shell would read it.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests;
