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

/// The time of an earlier message: with its day, unless it is today.
fn earlier_clock(ts: u64) -> String {
    let today = Local::now().date_naive();
    match Local.timestamp_millis_opt(ts as i64).single() {
        Some(t) if t.date_naive() != today => t.format("%b %d %H:%M").to_string(),
        _ => clock(ts),
    }
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
    /// The [`ChatState::generation`] `wrapped` was made for.
    generation: u64,
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
        let stale = width != self.width
            || state.generation() != self.generation
            || self.first > first
            || cached_end > first + entries.len() as u64;
        if stale {
            self.wrapped.clear();
            self.lines = 0;
            self.width = width;
            self.generation = state.generation();
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
/// the sender and the message (and its file), or the whisper, or the notice.
struct Pieces<'a> {
    /// The time and a space.
    clock: String,
    rest: [(&'a str, Style); 5],
}

fn name_style(name: &str, me: &str) -> Style {
    let style = Style::default()
        .fg(colour_of(name))
        .add_modifier(Modifier::BOLD);
    if name == me {
        style.add_modifier(Modifier::UNDERLINED)
    } else {
        style
    }
}

impl<'a> Pieces<'a> {
    fn of(entry: &'a Entry, me: &str) -> Self {
        let plain = Style::default();
        match entry {
            Entry::Message {
                ts,
                from,
                text,
                attachment,
                earlier,
            } => {
                // Earlier messages are dimmed, and dated unless from today.
                let (time, dim) = if *earlier {
                    (earlier_clock(*ts), Modifier::DIM)
                } else {
                    (clock(*ts), Modifier::empty())
                };
                let file = attachment.as_deref().unwrap_or("");
                let gap = if text.is_empty() || file.is_empty() {
                    ""
                } else {
                    " "
                };
                Pieces {
                    clock: format!("{time} "),
                    rest: [
                        (from, name_style(from, me).add_modifier(dim)),
                        (": ", plain),
                        (text, plain.add_modifier(dim)),
                        (gap, plain),
                        (
                            file,
                            Style::default()
                                .fg(Color::LightBlue)
                                .add_modifier(Modifier::UNDERLINED | dim),
                        ),
                    ],
                }
            }
            Entry::Whisper { ts, from, to, text } => {
                let private = Style::default()
                    .fg(Color::Magenta)
                    .add_modifier(Modifier::ITALIC);
                Pieces {
                    clock: format!("{} ", clock(*ts)),
                    rest: [
                        (from, name_style(from, me)),
                        (" → ", private),
                        (to, name_style(to, me)),
                        (" (private): ", private),
                        (text, private),
                    ],
                }
            }
            Entry::Notice { ts, text } => {
                let style = Style::default()
                    .fg(Color::DarkGray)
                    .add_modifier(Modifier::ITALIC);
                Pieces {
                    clock: format!("{} ", clock(*ts)),
                    rest: [
                        ("* ", style),
                        (text, style),
                        ("", style),
                        ("", style),
                        ("", style),
                    ],
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
        Status::Queued {
            position,
            waiting,
            eta_s,
        } => (
            format!(
                "We are dealing with a large amount of users and you are at {position} in queue ({waiting} waiting{})",
                eta_s
                    .map(|s| format!(", {}", super::line::eta(s)))
                    .unwrap_or_default()
            ),
            Color::Yellow,
        ),
        Status::InRoom { capacity } => (
            format!(
                "connected as {} to {} · {} in the room (capacity {capacity}){} · /help",
                state.me,
                state.server,
                state.users.len(),
                state
                    .upload
                    .as_ref()
                    .map(|(name, percent)| format!(" · sending {} {percent}%", escape::text(name)))
                    .unwrap_or_default(),
            ),
            Color::Green,
        ),
        Status::Reconnecting {
            held_until: Some(until),
            attempt,
            ..
        } if *until > std::time::Instant::now() => (
            format!("{} (attempt {attempt})", super::line::held(*until)),
            Color::Red,
        ),
        Status::Reconnecting {
            attempt,
            retry_in_ms,
            reason,
            ..
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
mod tests;
