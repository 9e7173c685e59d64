//! Drawing the chat screen from a [`ChatState`]; nothing else.

use chrono::{Local, TimeZone};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Wrap};
use unicode_width::UnicodeWidthStr;

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

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, state: &ChatState) {
    let [body, status, input] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    if body.width >= NARROW {
        let [talk, users] =
            Layout::horizontal([Constraint::Min(20), Constraint::Length(USERS_WIDTH)]).areas(body);
        draw_conversation(frame, talk, state);
        draw_users(frame, users, state);
    } else {
        draw_conversation(frame, body, state);
    }
    draw_status(frame, status, state);
    draw_input(frame, input, state);
}

fn draw_conversation(frame: &mut Frame<'_>, area: Rect, state: &ChatState) {
    let lines: Vec<Line<'_>> = state
        .entries
        .iter()
        .map(|entry| match entry {
            Entry::Message { ts, from, text } => {
                let mut name_style = Style::default()
                    .fg(colour_of(from))
                    .add_modifier(Modifier::BOLD);
                if *from == state.me {
                    name_style = name_style.add_modifier(Modifier::UNDERLINED);
                }
                Line::from(vec![
                    Span::styled(
                        format!("{} ", clock(*ts)),
                        Style::default().fg(Color::DarkGray),
                    ),
                    Span::styled(from.as_str(), name_style),
                    Span::raw(": "),
                    Span::raw(text.as_str()),
                ])
            }
            Entry::Notice { ts, text } => Line::from(vec![
                Span::styled(
                    format!("{} ", clock(*ts)),
                    Style::default().fg(Color::DarkGray),
                ),
                Span::styled(
                    format!("* {text}"),
                    Style::default()
                        .fg(Color::DarkGray)
                        .add_modifier(Modifier::ITALIC),
                ),
            ]),
        })
        .collect();
    let block = Block::default().borders(Borders::ALL).title(" anteroom ");
    let inner_height = area.height.saturating_sub(2);
    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: false });
    let total = paragraph.line_count(area.width.saturating_sub(2)) as u16;
    let bottom = total.saturating_sub(inner_height);
    let scroll = bottom.saturating_sub(state.scroll_back);
    frame.render_widget(paragraph.block(block).scroll((scroll, 0)), area);
}

fn draw_users(frame: &mut Frame<'_>, area: Rect, state: &ChatState) {
    let items: Vec<ListItem<'_>> = state
        .users
        .iter()
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
