use super::*;

#[test]
fn events_update_users_and_conversation() {
    let mut s = ChatState::new("ann", "x");
    s.admitted(&Admission::Welcome {
        users: vec!["bob".into(), "ann".into()],
        capacity: 5,
        text: "hi".into(),
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
        let (Entry::Message { text, .. } | Entry::Notice { text, .. }) = entry;
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
