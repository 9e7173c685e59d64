use super::*;
use crate::protocol::{Attachment, Feature, Features};
use crate::upload::Ticket;

#[test]
fn events_update_users_and_conversation() {
    let mut s = ChatState::new("ann", "x");
    s.admitted(&Admission::Welcome {
        users: vec!["bob".into(), "ann".into()],
        capacity: 5,
        text: "hi".into(),
        features: Features::NONE,
        upload: None,
    });
    assert_eq!(s.status, Status::InRoom { capacity: 5 });
    s.apply(&Event::Joined {
        name: "cid".into(),
        ts: 1,
    });
    s.apply(&Event::Left {
        name: "bob".into(),
        reason: crate::protocol::LeftReason::SlowConsumer,
        ts: 2,
    });
    assert_eq!(s.users, ["ann", "cid"]);
    assert!(
        matches!(s.entries.back(), Some(Entry::Notice { text, .. }) if text == "bob left (slow consumer)")
    );
}

#[test]
fn what_others_wrote_is_kept_escaped() {
    let mut s = ChatState::new("ann", "x");
    let bad = "x\n[12:00] <admin> hi\u{1b}]0;t\u{7}\u{202e}";
    s.apply(&Event::Message {
        id: 1,
        from: "ev\u{200b}e".into(),
        text: bad.into(),
        ts: 1,
        attachment: None,
    });
    s.apply(&Event::Joined {
        name: bad.into(),
        ts: 2,
    });
    s.apply(&Event::Error {
        code: crate::protocol::ErrorCode::BadRequest,
        text: bad.into(),
    });
    s.apply(&Event::Users {
        names: vec![bad.into()],
    });
    assert!(matches!(&s.entries[0], Entry::Message { from, .. } if from == "ev\\u{200b}e"));
    for entry in &s.entries {
        let (Entry::Message { text, .. }
        | Entry::Whisper { text, .. }
        | Entry::Notice { text, .. }) = entry;
        assert!(
            text.contains("x\\n[12:00] <admin> hi\\x1b]0;t\\x07\\u{202e}"),
            "{text}"
        );
    }
}

#[test]
fn the_roster_is_bounded_by_the_room_capacity() {
    let mut s = ChatState::new("ann", "x");
    s.admitted(&Admission::Welcome {
        users: vec!["ann".into(), "bob".into(), "cid".into(), "dan".into()],
        capacity: 3,
        text: "hi".into(),
        features: Features::NONE,
        upload: None,
    });
    assert_eq!(s.users, ["ann", "bob", "cid"]);
    s.apply(&Event::Left {
        name: "cid".into(),
        reason: crate::protocol::LeftReason::Bye,
        ts: 1,
    });
    for i in 0..1000 {
        s.apply(&Event::Joined {
            name: format!("u{i}").into(),
            ts: 2,
        });
    }
    assert_eq!(s.users, ["ann", "bob", "u0"]);
    s.apply(&Event::Users {
        names: (0..1000).map(|i| format!("v{i}").into()).collect(),
    });
    assert_eq!(s.users, ["v0", "v1", "v2"]);
}

#[test]
fn the_roster_has_a_hard_bound_whatever_the_server_says() {
    let mut s = ChatState::new("ann", "x");
    let huge: Vec<_> = (0..MAX_ROSTER + 10).map(|i| format!("u{i}")).collect();
    s.admitted(&Admission::Welcome {
        users: huge.clone(),
        capacity: u64::MAX,
        text: "hi".into(),
        features: Features::NONE,
        upload: None,
    });
    assert_eq!(s.users.len(), MAX_ROSTER);
    s.apply(&Event::Joined {
        name: "one more".into(),
        ts: 1,
    });
    assert_eq!(s.users.len(), MAX_ROSTER);
    s.apply(&Event::Welcome {
        name: "ann".into(),
        users: vec!["ann".into()],
        capacity: 0,
        text: "hi".into(),
        features: None,
        max_upload_bytes: None,
        upload_token: None,
        resume: None,
        resume_grace_s: None,
        resumed: None,
    });
    assert_eq!(s.users, ["ann"]);
}

#[test]
fn entries_are_bounded_in_size() {
    let mut s = ChatState::new("ann", "x");
    s.apply(&Event::Message {
        id: 1,
        from: "bob".into(),
        text: "é".repeat(MAX_ENTRY_BYTES).into(),
        ts: 1,
        attachment: None,
    });
    let Some(Entry::Message { text, .. }) = s.entries.back() else {
        panic!("no message");
    };
    assert!(text.len() < MAX_ENTRY_BYTES + 64, "{}", text.len());
    assert!(text.ends_with(&format!(" … ({} more bytes not shown)", MAX_ENTRY_BYTES)));
    // Large entries push the oldest out before their number does.
    for id in 0..MAX_TOTAL_BYTES / MAX_ENTRY_BYTES + 10 {
        s.apply(&Event::Message {
            id: id as u64,
            from: "bob".into(),
            text: "x".repeat(MAX_ENTRY_BYTES).into(),
            ts: 1,
            attachment: None,
        });
    }
    let total: usize = s.entries.iter().map(Entry::text_bytes).sum();
    assert!(total <= MAX_TOTAL_BYTES, "{total}");
    assert_eq!(total, s.text_bytes);
    assert!(s.entries.len() < MAX_TOTAL_BYTES / MAX_ENTRY_BYTES + 1);
}

#[test]
fn commands_and_history() {
    let mut s = ChatState::new("ann", "x");
    for c in "hello".chars() {
        s.insert(c);
    }
    assert_eq!(s.submit(), Action::Say("hello".into()));
    for c in "/users".chars() {
        s.insert(c);
    }
    assert_eq!(s.submit(), Action::Who);
    s.input = "/quit".into();
    assert_eq!(s.submit(), Action::Quit);
    s.input = "//etc".into();
    assert_eq!(s.submit(), Action::Say("/etc".into()));
    s.input = "/nope".into();
    assert_eq!(s.submit(), Action::None);
    s.history_up();
    assert_eq!(s.input, "/nope");
    s.history_up();
    s.history_up();
    assert_eq!(s.input, "/quit");
    s.history_down();
    assert_eq!(s.input, "//etc");
    s.history_down();
    s.history_down();
    assert_eq!(s.input, "");
}

#[test]
fn editing_is_by_character() {
    let mut s = ChatState::new("ann", "x");
    for c in "héllo🦀".chars() {
        s.insert(c);
    }
    s.left();
    s.backspace();
    assert_eq!(s.input, "héll🦀");
    s.home();
    s.delete();
    assert_eq!(s.input, "éll🦀");
}

fn typed(s: &mut ChatState, line: &str) -> Action {
    s.input = line.into();
    s.submit()
}

fn last_notice(s: &ChatState) -> String {
    match s.entries.back() {
        Some(Entry::Notice { text, .. }) => text.clone(),
        other => panic!("no notice last: {other:?}"),
    }
}

#[test]
fn whisper_history_and_send_commands() {
    let mut s = ChatState::new("ann", "x");
    assert_eq!(
        typed(&mut s, "/msg bob  hi  there"),
        Action::Whisper {
            to: "bob".into(),
            text: "hi  there".into()
        }
    );
    assert_eq!(
        typed(&mut s, "/msg \"bo b\" hi"),
        Action::Whisper {
            to: "bo b".into(),
            text: "hi".into()
        }
    );
    for wrong in ["/msg", "/msg bob", "/msg \"bob hi", "/msg \"\" hi"] {
        assert_eq!(typed(&mut s, wrong), Action::None, "{wrong}");
        assert!(
            last_notice(&s).starts_with("usage: /msg NAME TEXT"),
            "{wrong}"
        );
    }
    assert_eq!(typed(&mut s, "/history"), Action::History(20));
    assert_eq!(typed(&mut s, "/history 5"), Action::History(5));
    assert_eq!(typed(&mut s, "/history 100000"), Action::History(1000));
    for wrong in ["/history 0", "/history x", "/history -3", "/history 1 2"] {
        assert_eq!(typed(&mut s, wrong), Action::None, "{wrong}");
        assert!(
            last_notice(&s).starts_with("usage: /history [N]"),
            "{wrong}"
        );
    }
    assert_eq!(
        typed(&mut s, "/send notes.txt"),
        Action::Send {
            path: "notes.txt".into(),
            caption: String::new()
        }
    );
    assert_eq!(
        typed(&mut s, "/send \"my notes.txt\" the minutes, as promised"),
        Action::Send {
            path: "my notes.txt".into(),
            caption: "the minutes, as promised".into()
        }
    );
    if let Some(home) = std::env::var_os("HOME") {
        assert_eq!(
            typed(&mut s, "/send ~/a.png"),
            Action::Send {
                path: PathBuf::from(home).join("a.png"),
                caption: String::new()
            }
        );
    }
    assert_eq!(typed(&mut s, "/send"), Action::None);
    assert!(last_notice(&s).starts_with("usage: /send PATH"));
    // A word that merely starts like a command is said.
    assert_eq!(typed(&mut s, "/msgs"), Action::None);
    assert!(last_notice(&s).starts_with("unknown command"));
    assert_eq!(
        parse_feature_command("/msgs x"),
        None,
        "line mode says it as it is"
    );
}

fn all_features() -> Features {
    [Feature::History, Feature::Whisper, Feature::Files]
        .into_iter()
        .collect()
}

fn joined_with(features: Features) -> ChatState {
    let mut s = ChatState::new("ann", "x");
    s.web = Some(crate::upload::WebBase::parse("http://127.0.0.1:7880").unwrap());
    s.admitted(&Admission::Welcome {
        users: vec!["ann".into(), "bob".into()],
        capacity: 5,
        text: "hi".into(),
        features,
        upload: Some(Ticket::new("t", 1000)),
    });
    s
}

fn said(id: u64, from: &str, text: &str) -> Event {
    Event::Message {
        id,
        from: from.to_string().into(),
        text: text.to_string().into(),
        ts: 1_000 * id,
        attachment: None,
    }
}

fn history(ids: std::ops::RangeInclusive<u64>, more: bool) -> Event {
    Event::History {
        messages: ids.map(|id| said(id, "bob", &format!("m{id}"))).collect(),
        more,
        epoch: "e1".into(),
    }
}

/// The texts of the message entries, marked `*` when earlier.
fn said_texts(s: &ChatState) -> Vec<String> {
    s.entries
        .iter()
        .filter_map(|e| match e {
            Entry::Message { text, earlier, .. } => {
                Some(format!("{}{text}", if *earlier { "*" } else { "" }))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn history_on_join_comes_above_the_live_talk_and_paging_back_inserts_at_the_top() {
    let mut s = joined_with(all_features());
    s.apply(&history(8..=10, true));
    s.apply(&said(11, "bob", "live"));
    assert_eq!(said_texts(&s), ["*m8", "*m9", "*m10", "live"]);
    assert!(
        s.entries
            .iter()
            .any(|e| matches!(e, Entry::Notice { text, .. } if text == "— 3 earlier messages —"))
    );
    let generation = s.generation();
    // `/history 3` asks before the oldest shown.
    assert_eq!(
        s.grant.history(3),
        Ok(crate::chat::net::Outgoing::History {
            before: Some(8),
            limit: 3
        })
    );
    s.apply(&history(5..=7, false));
    assert_ne!(s.generation(), generation, "a renderer must start afresh");
    assert_eq!(
        said_texts(&s),
        ["*m5", "*m6", "*m7", "*m8", "*m9", "*m10", "live"]
    );
    let Some(Entry::Notice { text, .. }) = s.entries.front() else {
        panic!("no notice at the top");
    };
    assert_eq!(text, "no older messages");
    assert_eq!(
        last_notice(&s),
        "3 earlier messages added at the top (PageUp); no older messages"
    );
    assert_eq!(s.grant.history(3), Err("no older messages".to_string()));
    // Reconnected: the page after welcome repeats what is shown; only the
    // message missed meanwhile is added.
    s.admitted(&Admission::Welcome {
        users: vec!["ann".into()],
        capacity: 5,
        text: "hi".into(),
        features: all_features(),
        upload: None,
    });
    s.apply(&history(9..=12, true));
    assert_eq!(
        said_texts(&s),
        ["*m5", "*m6", "*m7", "*m8", "*m9", "*m10", "live", "*m12"]
    );
}

#[test]
fn an_empty_page_says_there_is_nothing_older() {
    let mut s = joined_with(all_features());
    s.apply(&history(1..=2, true));
    assert!(s.grant.history(20).is_ok());
    s.apply(&Event::History {
        messages: vec![],
        more: false,
        epoch: "e1".into(),
    });
    assert_eq!(last_notice(&s), "no older messages");
    assert_eq!(said_texts(&s), ["*m1", "*m2"]);
}

#[test]
fn earlier_messages_are_escaped_like_live_ones() {
    let mut s = joined_with(all_features());
    s.apply(&Event::History {
        messages: vec![said(1, "ev\u{200b}e", "x\n[12:00] <admin> \u{1b}[2J")],
        more: false,
        epoch: "e".into(),
    });
    let entry = s
        .entries
        .iter()
        .find(|e| matches!(e, Entry::Message { .. }))
        .unwrap();
    assert!(
        matches!(entry, Entry::Message { from, text, earlier: true, .. }
            if from == "ev\\u{200b}e" && text == "x\\n[12:00] <admin> \\x1b[2J"),
        "{entry:?}"
    );
}

#[test]
fn whispers_are_kept_apart_and_escaped() {
    let mut s = joined_with(all_features());
    s.apply(&Event::Whisper {
        from: "bob".into(),
        to: "ann".into(),
        text: "psst\u{1b}[31m".into(),
        ts: 5,
    });
    assert_eq!(
        s.entries.back(),
        Some(&Entry::Whisper {
            ts: 5,
            from: "bob".into(),
            to: "ann".into(),
            text: "psst\\x1b[31m".into()
        })
    );
    s.apply(&Event::Error {
        code: crate::protocol::ErrorCode::NoSuchUser,
        text: "nobody called zed is here".into(),
    });
    assert_eq!(
        last_notice(&s),
        "error (no_such_user): nobody called zed is here"
    );
}

#[test]
fn attachments_show_their_name_size_and_full_url() {
    let mut s = joined_with(all_features());
    s.apply(&Event::Message {
        id: 1,
        from: "bob".into(),
        text: "".into(),
        ts: 1,
        attachment: Some(Attachment {
            url: "/files/00112233445566778899aabbccddeeff".into(),
            name: "plan.pdf".into(),
            size: 2048,
            mime: "application/pdf".into(),
        }),
    });
    assert!(
        matches!(s.entries.back(), Some(Entry::Message { attachment: Some(a), .. })
            if a == "📎 plan.pdf (2.0 KiB) http://127.0.0.1:7880/files/00112233445566778899aabbccddeeff"),
        "{:?}",
        s.entries.back()
    );
}

#[test]
fn what_was_not_granted_is_not_asked_for() {
    let mut s = joined_with(Features::NONE);
    assert!(s.grant.whisper("bob".into(), "hi".into()).is_err());
    assert!(s.grant.history(5).is_err());
    assert!(
        s.grant.ticket().is_err(),
        "a ticket without `files` is ignored"
    );
    // The welcome that ends a wait carries the grant.
    let mut s = ChatState::new("ann", "x");
    s.apply(&Event::Welcome {
        name: "ann".into(),
        users: vec!["ann".into()],
        capacity: 3,
        text: "in".into(),
        features: Some(vec!["whisper".into(), "files".into(), "telepathy".into()]),
        upload_token: Some("tok".into()),
        max_upload_bytes: Some(77),
        resume: None,
        resumed: None,
        resume_grace_s: None,
    });
    assert!(s.grant.whisper("bob".into(), "hi".into()).is_ok());
    assert_eq!(s.grant.ticket().map(|t| t.max_bytes()), Ok(77));
    assert!(s.grant.history(5).is_err());
}

#[test]
fn a_page_larger_than_what_is_kept_loses_its_own_oldest() {
    let mut s = joined_with(all_features());
    s.apply(&history(10_000..=10_000, true));
    for id in 10_001..10_000 + MAX_ENTRIES as u64 {
        s.apply(&said(id, "bob", "live"));
    }
    let newest = s.entries.back().cloned();
    assert!(s.grant.history(200).is_ok());
    s.apply(&history(9_800..=9_999, true));
    assert_eq!(s.entries.len(), MAX_ENTRIES);
    assert_eq!(s.entries.back().cloned().map(|_| ()), newest.map(|_| ()));
    assert!(last_notice(&s).starts_with("200 earlier messages added at the top"));
}
