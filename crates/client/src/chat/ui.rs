//! Drawing the chat screen from a [`ChatState`]; nothing else.

use chrono::{Local, TimeZone};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use std::collections::VecDeque;

use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::escape;
use super::state::{ChatState, Entry, Status};

/// Below this width the user panel is hidden to leave room for the talk.
const NARROW: u16 = 60;
const USERS_WIDTH: u16 = 22;

const PALETTE: [Color; 8] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Magenta,
    Color::LightBlue,
    Color::LightRed,
    Color::LightGreen,
    Color::LightMagenta,
];

/// A stable colour per sender, so each name is recognisable at a glance.
pub fn colour_of(name: &str) -> Color {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

fn clock(ts: u64) -> String {
    Local
        .timestamp_millis_opt(ts as i64)
        .single()
        .map_or_else(|| "--:--".to_string(), |t| t.format("%H:%M").to_string())
}

/// Draws the whole screen with a fresh [`Screen`]: everything is wrapped
/// anew. The terminal client keeps one `Screen` instead.
pub fn draw(frame: &mut Frame<'_>, state: &ChatState) {
    Screen::default().draw(frame, state);
}

/// What drawing remembers between frames: each entry of the conversation
/// wrapped into lines for the current width.
///
/// A member posting long messages at the rate limit must not make every
/// frame cost more than the last: the client would fall behind the room and
/// be cut off as a slow consumer. So an entry is wrapped once, when it is
/// new or when the width changes, and a frame builds only the lines that are
/// visible. One `Screen` belongs to one [`ChatState`].
#[derive(Debug, Default)]
pub struct Screen {
    conversation: Conversation,
}

/// Work done by a [`Screen`] so far, to show what a frame costs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Entries wrapped.
    pub wraps: u64,
    /// Conversation lines built for drawing.
    pub lines_drawn: u64,
}

impl Screen {
    /// Draws the whole screen.
    pub fn draw(&mut self, frame: &mut Frame<'_>, state: &ChatState) {
        let [body, status, input] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        if body.width >= NARROW {
            let [talk, users] =
                Layout::horizontal([Constraint::Min(20), Constraint::Length(USERS_WIDTH)])
                    .areas(body);
            self.conversation.draw(frame, talk, state);
            draw_users(frame, users, state);
        } else {
            self.conversation.draw(frame, body, state);
        }
        draw_status(frame, status, state);
        draw_input(frame, input, state);
    }

    /// The furthest the conversation can be scrolled back, as of the last
    /// frame: its lines less those that fit on the screen.
    pub fn max_scroll(&self) -> usize {
        self.conversation.max_scroll
    }

    /// The work done so far.
    pub fn stats(&self) -> Stats {
        self.conversation.stats
    }
}

/// The wrapped conversation.
#[derive(Debug, Default)]
struct Conversation {
    /// The width `wrapped` was made for.
    width: usize,
    /// The sequence number (see [`ChatState::first_seq`]) of `wrapped[0]`.
    first: u64,
    /// Each entry's lines, as byte ranges of its [`Pieces`].
    wrapped: VecDeque<Vec<(u32, u32)>>,
    /// Lines in `wrapped`, all entries together. A `usize`: 5,000 long
    /// entries on a narrow screen are far more than 65,535 lines.
    lines: usize,
    max_scroll: usize,
    stats: Stats,
}

impl Conversation {
    /// Brings `wrapped` up to date with the entries: drops those the state
    /// dropped and wraps those it added; everything only on a new width.
    fn sync(&mut self, state: &ChatState, width: usize) {
        let entries = state.entries();
        let first = state.first_seq();
        let cached_end = self.first + self.wrapped.len() as u64;
        let stale =
            width != self.width || self.first > first || cached_end > first + entries.len() as u64;
        if stale {
            self.wrapped.clear();
            self.lines = 0;
            self.width = width;
            self.first = first;
        }
        while self.first < first {
            match self.wrapped.pop_front() {
                Some(gone) => self.lines -= gone.len(),
                None => break,
            }
            self.first += 1;
        }
        if self.wrapped.is_empty() {
            self.first = first;
        }
        let have = (self.first + self.wrapped.len() as u64 - first) as usize;
        for entry in entries.iter().skip(have) {
            let lines = wrap(&Pieces::of(entry, &state.me), width);
            self.lines += lines.len();
            self.wrapped.push_back(lines);
            self.stats.wraps += 1;
        }
    }

    fn draw(&mut self, frame: &mut Frame<'_>, area: Rect, state: &ChatState) {
        let width = usize::from(area.width.saturating_sub(2)).max(1);
        let height = usize::from(area.height.saturating_sub(2));
        self.sync(state, width);
        self.max_scroll = self.lines.saturating_sub(height);
        // The window of lines shown, counted from the first line.
        let bottom = self.lines - state.scroll_back.min(self.max_scroll);
        let top = bottom.saturating_sub(height);
        let mut visible: Vec<Line<'_>> = Vec::with_capacity(height);
        let mut end = self.lines;
        for (entry, lines) in state.entries().iter().rev().zip(self.wrapped.iter().rev()) {
            if end <= top {
                break;
            }
            let begin = end - lines.len();
            if begin < bottom {
                let pieces = Pieces::of(entry, &state.me);
                let shown = &lines[top.max(begin) - begin..bottom.min(end) - begin];
                for &(from, to) in shown.iter().rev() {
                    visible.push(pieces.line(from as usize, to as usize));
                }
            }
            end = begin;
        }
        visible.reverse();
        self.stats.lines_drawn += visible.len() as u64;
        let block = Block::default().borders(Borders::ALL).title(" anteroom ");
        frame.render_widget(Paragraph::new(visible).block(block), area);
    }
}

/// An entry as styled pieces of text, one after the other: the time, then
/// the sender and the message, or the notice.
struct Pieces<'a> {
    /// The time and a space.
    clock: String,
    rest: [(&'a str, Style); 3],
}

impl<'a> Pieces<'a> {
    fn of(entry: &'a Entry, me: &str) -> Self {
        match entry {
            Entry::Message { ts, from, text } => {
                let mut name_style = Style::default()
                    .fg(colour_of(from))
                    .add_modifier(Modifier::BOLD);
                if *from == me {
                    name_style = name_style.add_modifier(Modifier::UNDERLINED);
                }
                Pieces {
                    clock: format!("{} ", clock(*ts)),
                    rest: [
                        (from, name_style),
                        (": ", Style::default()),
                        (text, Style::default()),
                    ],
                }
            }
            Entry::Notice { ts, text } => {
                let style = Style::default()
                    .fg(Color::DarkGray)
                    .add_modifier(Modifier::ITALIC);
                Pieces {
                    clock: format!("{} ", clock(*ts)),
                    rest: [("* ", style), (text, style), ("", style)],
                }
            }
        }
    }

    /// Each piece with its style and its first byte, counting from the start
    /// of the first piece.
    fn each(&self) -> impl Iterator<Item = (usize, &str, Style)> {
        let clock = (self.clock.as_str(), Style::default().fg(Color::DarkGray));
        std::iter::once(clock)
            .chain(self.rest.iter().copied())
            .scan(0, |at, (text, style)| {
                let start = *at;
                *at += text.len();
                Some((start, text, style))
            })
    }

    /// The line made of bytes `from..to`.
    fn line(&self, from: usize, to: usize) -> Line<'a> {
        let mut spans = Vec::new();
        for (i, (start, text, style)) in self.each().enumerate() {
            let (a, b) = (from.max(start), to.min(start + text.len()));
            if a >= b {
                continue;
            }
            let range = a - start..b - start;
            spans.push(match i {
                // The time is made here; the rest is borrowed from the entry,
                // so the line outlives these pieces.
                0 => Span::styled(text[range].to_string(), style),
                _ => Span::styled(&self.rest[i - 1].0[range], style),
            });
        }
        Line::from(spans)
    }
}

/// Wraps `pieces` into lines of at most `width` columns, as byte ranges:
/// at spaces where possible (a space that does not fit is dropped), inside a
/// word longer than a line otherwise.
fn wrap(pieces: &Pieces<'_>, width: usize) -> Vec<(u32, u32)> {
    let mut lines = Vec::new();
    let push = |lines: &mut Vec<(u32, u32)>, from: usize, to: usize| {
        // An entry is at most 64 KiB of text plus a short prefix.
        lines.push((
            u32::try_from(from).unwrap_or(u32::MAX),
            u32::try_from(to).unwrap_or(u32::MAX),
        ));
    };
    let (mut start, mut used) = (0usize, 0usize);
    // Just after the last space on this line, and the columns up to there.
    let mut space: Option<(usize, usize)> = None;
    let mut end = 0;
    for (offset, text, _) in pieces.each() {
        end = offset + text.len();
        for (i, c) in text.char_indices() {
            let at = offset + i;
            let w = c.width().unwrap_or(0);
            if used + w > width && used > 0 {
                if c == ' ' {
                    push(&mut lines, start, at);
                    (start, used, space) = (at + 1, 0, None);
                    continue;
                }
                match space.take() {
                    Some((after, columns)) if after > start => {
                        push(&mut lines, start, after);
                        start = after;
                        used -= columns;
                    }
                    _ => {
                        push(&mut lines, start, at);
                        (start, used) = (at, 0);
                    }
                }
                if used + w > width && used > 0 {
                    push(&mut lines, start, at);
                    (start, used) = (at, 0);
                }
            }
            used += w;
            if c == ' ' {
                space = Some((at + 1, used));
            }
        }
    }
    if start < end || lines.is_empty() {
        push(&mut lines, start, end);
    }
    lines
}

fn draw_users(frame: &mut Frame<'_>, area: Rect, state: &ChatState) {
    // Only the names that fit: the roster may be long.
    let items: Vec<ListItem<'_>> = state
        .users
        .iter()
        .take(usize::from(area.height.saturating_sub(2)))
        .map(|u| {
            let mut style = Style::default().fg(colour_of(u));
            if *u == state.me {
                style = style.add_modifier(Modifier::BOLD);
            }
            ListItem::new(Span::styled(escape::name(u), style))
        })
        .collect();
    let title = format!(" users ({}) ", state.users.len());
    frame.render_widget(
        List::new(items).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn draw_status(frame: &mut Frame<'_>, area: Rect, state: &ChatState) {
    let (text, colour) = match &state.status {
        Status::Connecting => (format!("connecting to {}…", state.server), Color::Yellow),
        Status::Queued { position, waiting } => (
            format!(
                "We are dealing with a large amount of users and you are at {position} in queue ({waiting} waiting)"
            ),
            Color::Yellow,
        ),
        Status::InRoom { capacity } => (
            format!(
                "connected as {} to {} · {} in the room (capacity {capacity}) · /help",
                state.me,
                state.server,
                state.users.len()
            ),
            Color::Green,
        ),
        Status::Reconnecting {
            attempt,
            retry_in_ms,
            reason,
        } => (
            format!(
                "disconnected ({reason}); reconnecting in {:.1}s (attempt {attempt})",
                *retry_in_ms as f64 / 1000.0
            ),
            Color::Red,
        ),
    };
    let line = Line::from(Span::styled(
        text,
        Style::default().fg(Color::Black).bg(colour),
    ));
    frame.render_widget(
        Paragraph::new(line).style(Style::default().bg(colour)),
        area,
    );
}

fn draw_input(frame: &mut Frame<'_>, area: Rect, state: &ChatState) {
    let prompt = "> ";
    let available = area.width.saturating_sub(prompt.len() as u16 + 1) as usize;
    let before: String = state.input.chars().take(state.cursor).collect();
    // Show the tail of a long line so the cursor stays visible.
    let mut start = 0;
    while before[start..].width() > available {
        start += before[start..].chars().next().map_or(1, char::len_utf8);
    }
    let visible = &state.input[start..];
    frame.render_widget(
        Paragraph::new(Line::from(vec![Span::raw(prompt), Span::raw(visible)])),
        area,
    );
    let x = area.x + prompt.len() as u16 + before[start..].width() as u16;
    frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Admission, Event};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn render(state: &ChatState, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, state)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..height {
            for x in 0..width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn in_room() -> ChatState {
        let mut s = ChatState::new("ann", "127.0.0.1:7878");
        s.admitted(&Admission::Welcome {
            users: vec!["bob".into(), "ann".into()],
            capacity: 10,
            text: "Welcome!".into(),
        });
        s.apply(&Event::Message {
            id: 1,
            from: "bob".into(),
            text: "hi ann 👋".into(),
            ts: 0,
        });
        s
    }

    #[test]
    fn in_the_room_shows_talk_users_and_status() {
        let screen = render(&in_room(), 80, 12);
        assert!(screen.contains("bob: hi ann 👋"), "{screen}");
        assert!(screen.contains("users (2)"), "{screen}");
        assert!(screen.contains("│bob"), "{screen}");
        assert!(screen.contains("│ann"), "{screen}");
        assert!(
            screen.contains("connected as ann to 127.0.0.1:7878"),
            "{screen}"
        );
        assert!(screen.contains("> "), "{screen}");
    }

    #[test]
    fn escape_sequences_are_drawn_as_text() {
        let mut s = in_room();
        s.apply(&Event::Joined {
            name: "eve\u{1b}[5m".into(),
            ts: 0,
        });
        s.apply(&Event::Message {
            id: 2,
            from: "eve\u{1b}[5m".into(),
            text: "x\n\u{1b}]0;owned\u{7}".into(),
            ts: 0,
        });
        let screen = render(&s, 80, 12);
        assert!(
            screen.contains(r"eve\x1b[5m: x\n\x1b]0;owned\x07"),
            "{screen}"
        );
        assert!(screen.contains(r"│eve\x1b[5m"), "{screen}");
        assert!(
            !screen.lines().any(|l| l.chars().any(char::is_control)),
            "{screen:?}"
        );
    }

    /// The words of a long message, numbered so that any line can be found.
    fn long_text(n: usize, bytes: usize) -> String {
        let mut text = format!("m{n}");
        let mut word = 0;
        while text.len() + 12 < bytes {
            text.push_str(&format!(" w{word}"));
            word += 1;
        }
        text
    }

    fn message(id: u64, text: String) -> Event {
        Event::Message {
            id,
            from: "bob".into(),
            text: text.into(),
            // 20 messages a second, the default rate limit.
            ts: 1_700_000_000_000 + id * 50,
        }
    }

    #[test]
    fn wrapped_lines_fit_and_lose_nothing_but_spaces() {
        let entry = |text: &str| Entry::Message {
            ts: 0,
            from: "bob".into(),
            text: text.into(),
        };
        let mut seed = 7u64;
        let alphabet = ['a', 'b', ' ', ' ', 'é', '李', '🦀', '\u{301}', 'x'];
        for case in 0..500 {
            let len = case % 97;
            let text: String = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let entry = entry(&text);
            let pieces = Pieces::of(&entry, "ann");
            let whole: String = pieces.each().map(|(_, t, _)| t).collect();
            for width in [2, 3, 7, 20, 80] {
                let lines = wrap(&pieces, width);
                let mut at = 0;
                for &(from, to) in &lines {
                    let (from, to) = (from as usize, to as usize);
                    // Only a space is skipped between two lines.
                    assert!(
                        from == at || (from == at + 1 && &whole[at..from] == " "),
                        "{whole:?}"
                    );
                    assert!(
                        whole[from..to].width() <= width,
                        "{:?} at {width}",
                        &whole[from..to]
                    );
                    at = to;
                }
                // Up to the end, but for a last space that did not fit.
                assert!(
                    at == whole.len() || (at + 1 == whole.len() && whole.ends_with(' ')),
                    "{whole:?} at {width}"
                );
            }
        }
    }

    #[test]
    fn a_conversation_of_more_than_65535_lines_shows_its_newest_line() {
        let mut s = in_room();
        // About 150 lines each at this width: 90,000 lines in all.
        for id in 0..600 {
            s.apply(&message(id, long_text(id as usize, 4000)));
        }
        s.apply(&message(600, "the newest".into()));
        let mut terminal = Terminal::new(TestBackend::new(30, 12)).unwrap();
        let mut screen = Screen::default();
        terminal.draw(|f| screen.draw(f, &s)).unwrap();
        assert!(screen.max_scroll() > 65_535, "{}", screen.max_scroll());
        let screen_text = render(&s, 30, 12);
        assert!(screen_text.contains("bob: the newest"), "{screen_text}");
        // Scrolled all the way back, the first line is at the top.
        s.scroll_back = usize::MAX;
        let screen_text = render(&s, 30, 12);
        assert!(screen_text.contains("Welcome!"), "{screen_text}");
    }

    #[test]
    fn long_messages_at_the_rate_limit_cost_one_wrap_each() {
        let mut s = in_room();
        let (width, height) = (100, 30);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let mut screen = Screen::default();
        terminal.draw(|f| screen.draw(f, &s)).unwrap();
        // A member posting 4 KB at 20 messages a second for four minutes:
        // the first 4,900 arrive before the next frame, the rest one frame
        // each, past the 5,000 kept entries, so that old ones are dropped too.
        for id in 0..4_900u64 {
            s.apply(&message(id, long_text(id as usize, 4096)));
        }
        terminal.draw(|f| screen.draw(f, &s)).unwrap();
        for id in 4_900..5_200u64 {
            s.apply(&message(id, long_text(id as usize, 4096)));
            let before = screen.stats();
            terminal.draw(|f| screen.draw(f, &s)).unwrap();
            let after = screen.stats();
            assert_eq!(after.wraps - before.wraps, 1, "event {id}");
            assert!(
                after.lines_drawn - before.lines_drawn <= u64::from(height),
                "event {id}"
            );
            if id == 5_100 {
                // Scrolled back, a new message costs the same.
                s.scroll_back = 10_000;
            }
        }
        assert_eq!(s.entries().len(), 5_000);
        let screen_text = {
            s.scroll_back = 0;
            terminal.draw(|f| screen.draw(f, &s)).unwrap();
            let buffer = terminal.backend().buffer().clone();
            (0..height)
                .map(|y| {
                    (0..width)
                        .map(|x| buffer[(x, y)].symbol())
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let newest = long_text(5_199, 4096);
        let last_word = newest.rsplit(' ').next().unwrap();
        assert!(screen_text.contains(last_word), "{screen_text}");
        // A new width wraps what is kept once, then each new entry once.
        let before = screen.stats().wraps;
        terminal.backend_mut().resize(60, height);
        terminal.draw(|f| screen.draw(f, &s)).unwrap();
        assert_eq!(screen.stats().wraps - before, s.entries().len() as u64);
        let before = screen.stats().wraps;
        s.apply(&message(9_999, "short".into()));
        terminal.draw(|f| screen.draw(f, &s)).unwrap();
        assert_eq!(screen.stats().wraps - before, 1);
    }

    #[test]
    fn sender_names_are_coloured() {
        let state = in_room();
        let mut terminal = Terminal::new(TestBackend::new(80, 12)).unwrap();
        terminal.draw(|f| draw(f, &state)).unwrap();
        let buffer = terminal.backend().buffer();
        let row = (0..12)
            .find(|y| {
                (0..80)
                    .map(|x| buffer[(x, *y)].symbol())
                    .collect::<String>()
                    .contains("bob: hi")
            })
            .unwrap();
        let x = (0..80).find(|x| buffer[(*x, row)].symbol() == "b").unwrap();
        assert_eq!(buffer[(x, row)].fg, colour_of("bob"));
    }

    #[test]
    fn queued_shows_the_live_position() {
        let mut s = ChatState::new("cid", "127.0.0.1:7878");
        s.admitted(&Admission::Queued {
            position: 3,
            waiting: 7,
            text: "We are dealing with a large amount of users and you are at 3 in queue".into(),
        });
        let screen = render(&s, 100, 10);
        assert!(
            screen.contains("you are at 3 in queue (7 waiting)"),
            "{screen}"
        );
        s.apply(&Event::Queued {
            position: 1,
            waiting: 5,
            text: String::new().into(),
        });
        let screen = render(&s, 100, 10);
        assert!(
            screen.contains("you are at 1 in queue (5 waiting)"),
            "{screen}"
        );
    }

    #[test]
    fn disconnected_says_so() {
        let mut s = in_room();
        s.status = Status::Reconnecting {
            attempt: 2,
            retry_in_ms: 4000,
            reason: "connection lost".into(),
        };
        let screen = render(&s, 80, 10);
        assert!(
            screen.contains("disconnected (connection lost); reconnecting in 4.0s (attempt 2)"),
            "{screen}"
        );
    }

    #[test]
    fn a_narrow_terminal_hides_the_user_panel_and_wraps() {
        let mut s = in_room();
        s.apply(&Event::Message {
            id: 2,
            from: "bob".into(),
            text: "a fairly long message that cannot fit on one narrow line".into(),
            ts: 0,
        });
        let screen = render(&s, 30, 12);
        assert!(!screen.contains("users ("), "{screen}");
        assert!(screen.contains("a fairly long"), "{screen}");
        assert!(screen.contains("narrow line"), "{screen}");
    }

    #[test]
    fn the_newest_lines_stay_visible() {
        let mut s = in_room();
        for i in 0..50 {
            s.apply(&Event::Message {
                id: i,
                from: "bob".into(),
                text: format!("line {i}").into(),
                ts: 0,
            });
        }
        let screen = render(&s, 80, 10);
        assert!(screen.contains("line 49"), "{screen}");
        assert!(!screen.contains("line 10 "), "{screen}");
    }
}
