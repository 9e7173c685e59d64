use super::*;
use crate::protocol::Features;
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
        features: Features::NONE,
        upload: None,
    });
    s.apply(&Event::Message {
        id: 1,
        from: "bob".into(),
        text: "hi ann 👋".into(),
        ts: 0,
        attachment: None,
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
        attachment: None,
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
        attachment: None,
    }
}

#[test]
fn wrapped_lines_fit_and_lose_nothing_but_spaces() {
    let entry = |text: &str| Entry::Message {
        ts: 0,
        from: "bob".into(),
        text: text.into(),
        attachment: None,
        earlier: false,
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
        features: Features::NONE,
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
        features: None,
        resume: None,
        resumed: None,
        resume_grace_s: None,
        eta_s: None,
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
        attachment: None,
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
            attachment: None,
        });
    }
    let screen = render(&s, 80, 10);
    assert!(screen.contains("line 49"), "{screen}");
    assert!(!screen.contains("line 10 "), "{screen}");
}

fn with_features() -> ChatState {
    let mut s = ChatState::new("ann", "127.0.0.1:7878");
    s.web = Some(crate::upload::WebBase::parse("http://127.0.0.1:7880").unwrap());
    s.admitted(&Admission::Welcome {
        users: vec!["bob".into(), "ann".into()],
        capacity: 10,
        text: "Welcome!".into(),
        features: crate::chat::grant::asked(),
        upload: Some(crate::upload::Ticket::new("t", 100)),
    });
    s
}

fn page(ids: std::ops::RangeInclusive<u64>, more: bool) -> Event {
    Event::History {
        messages: ids
            .map(|id| Event::Message {
                id,
                from: "bob".into(),
                text: format!("old {id}").into(),
                ts: 0,
                attachment: None,
            })
            .collect(),
        more,
        epoch: "e".into(),
    }
}

#[test]
fn whispers_name_both_ends_and_say_private() {
    let mut s = with_features();
    s.apply(&Event::Whisper {
        from: "ann".into(),
        to: "bob".into(),
        text: "just between us".into(),
        ts: 0,
    });
    let screen = render(&s, 80, 12);
    assert!(
        screen.contains("ann → bob (private): just between us"),
        "{screen}"
    );
}

#[test]
fn earlier_messages_come_under_a_header_and_paging_back_lands_on_top() {
    let mut s = with_features();
    s.apply(&page(3..=4, true));
    s.apply(&Event::Message {
        id: 5,
        from: "bob".into(),
        text: "now".into(),
        ts: 0,
        attachment: None,
    });
    let (width, height) = (80, 12);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut screen = Screen::default();
    let text = |terminal: &Terminal<TestBackend>| {
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
    terminal.draw(|f| screen.draw(f, &s)).unwrap();
    let shown = text(&terminal);
    let header = shown.find("— 2 earlier messages —").expect(&shown);
    let old = shown.find("bob: old 3").expect(&shown);
    let now = shown.find("bob: now").expect(&shown);
    assert!(header < old && old < now, "{shown}");
    // The answer to `/history`: at the top, the same screen kept.
    s.grant.history(2).unwrap();
    s.apply(&page(1..=2, false));
    s.scroll_back = usize::MAX;
    terminal.draw(|f| screen.draw(f, &s)).unwrap();
    s.scroll_back = s.scroll_back.min(screen.max_scroll());
    terminal.draw(|f| screen.draw(f, &s)).unwrap();
    let top = text(&terminal);
    let first = top.find("no older messages").expect(&top);
    let one = top.find("bob: old 1").expect(&top);
    let three = top.find("bob: old 3").expect(&top);
    assert!(first < one && one < three, "{top}");
    s.scroll_back = 0;
    terminal.draw(|f| screen.draw(f, &s)).unwrap();
    let bottom = text(&terminal);
    assert!(
        bottom.contains("2 earlier messages added at the top (PageUp)"),
        "{bottom}"
    );
}

#[test]
fn an_attachment_shows_as_name_size_and_link() {
    let mut s = with_features();
    s.apply(&Event::Message {
        id: 9,
        from: "bob".into(),
        text: "minutes".into(),
        ts: 0,
        attachment: Some(crate::protocol::Attachment {
            url: "/files/0123456789abcdef0123456789abcdef".into(),
            name: "notes.txt".into(),
            size: 1536,
            mime: "text/plain".into(),
        }),
    });
    let screen = render(&s, 160, 12);
    // The clip is two columns wide: the buffer holds it and a filler cell.
    assert!(screen.contains("bob: minutes 📎"), "{screen}");
    assert!(
        screen.contains(
            " notes.txt (1.5 KiB) http://127.0.0.1:7880/files/0123456789abcdef0123456789abcdef"
        ),
        "{screen}"
    );
}

#[test]
fn the_status_line_shows_how_far_a_file_has_gone() {
    let mut s = with_features();
    s.upload = Some(("notes.txt".into(), 42));
    let screen = render(&s, 140, 10);
    assert!(screen.contains("· sending notes.txt 42% ·"), "{screen}");
}
