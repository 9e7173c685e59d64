//! The soak's own checks, on made-up frames and samples.

use std::collections::HashMap;
use std::time::Duration;

use super::Args;
use super::checks::{
    Echoes, Finding, Kind, QueueTrack, RoomView, Stamp, Stretch, fifo_violations, lost_messages,
    parse_text, say_text,
};
use super::plan::Plan;
use super::sampler::growth;

fn kinds(findings: &[Finding]) -> Vec<Kind> {
    findings.iter().map(|f| f.0).collect()
}

fn room(users: &[&str]) -> RoomView {
    RoomView::new(&users.iter().map(|u| u.to_string()).collect::<Vec<_>>())
}

#[test]
fn ids_must_increase_without_repeats() {
    let mut view = room(&["ann", "bob"]);
    assert!(view.message(3, "ann", Some((1, 1))).is_empty());
    assert!(view.message(4, "bob", Some((2, 1))).is_empty());
    assert_eq!(
        kinds(&view.message(4, "bob", Some((2, 1)))),
        [Kind::Duplicate]
    );
    assert_eq!(
        kinds(&view.message(3, "ann", Some((1, 1)))),
        [Kind::Duplicate]
    );
    // Never received, yet older than the last one: out of order.
    assert_eq!(kinds(&view.message(2, "ann", Some((1, 0)))), [Kind::Order]);
    assert!(view.message(9, "ann", Some((1, 2))).is_empty());
}

#[test]
fn each_senders_messages_stay_in_order() {
    let mut view = room(&["ann"]);
    assert!(view.message(1, "ann", Some((7, 5))).is_empty());
    assert_eq!(kinds(&view.message(2, "ann", Some((7, 4)))), [Kind::Order]);
    assert_eq!(
        kinds(&view.message(3, "ann", Some((7, 4)))),
        [Kind::Duplicate]
    );
    // Another connection under the same name has its own numbering.
    assert!(view.message(4, "ann", Some((8, 1))).is_empty());
}

#[test]
fn messages_only_from_users_in_the_room() {
    let mut view = room(&["me"]);
    assert_eq!(kinds(&view.message(1, "bob", None)), [Kind::Presence]);
    view.joined("bob");
    assert!(view.message(2, "bob", None).is_empty());
    assert!(view.left("bob").is_none());
    assert_eq!(kinds(&view.message(3, "bob", None)), [Kind::Presence]);
    assert_eq!(view.left("bob").map(|f| f.0), Some(Kind::Presence));
    // A name briefly held twice (the old holder's `left` comes late).
    view.joined("cid");
    view.joined("cid");
    assert!(view.left("cid").is_none());
    assert!(view.message(4, "cid", None).is_empty());
}

#[test]
fn a_gap_closes_a_stretch() {
    let mut view = room(&["me"]);
    for id in [1, 2, 3, 5] {
        view.message(id, "me", None);
    }
    view.gap();
    for id in [9, 10] {
        view.message(id, "me", None);
    }
    assert_eq!(view.stretches(), [vec![(1, 3), (5, 5)], vec![(9, 10)]]);
}

#[test]
fn own_messages_are_echoed_or_refused() {
    let mut echoes = Echoes::default();
    assert!(echoes.echoed(1).is_none());
    // 2 refused; its refusal arrives before 3's echo.
    echoes.refused();
    assert!(echoes.echoed(3).is_none());
    // 4 vanished: neither echoed nor refused.
    assert_eq!(echoes.echoed(5).map(|f| f.0), Some(Kind::Lost));
    assert_eq!(echoes.echoed(5).map(|f| f.0), Some(Kind::Duplicate));
    assert_eq!(echoes.echoed(4).map(|f| f.0), Some(Kind::Order));
}

#[test]
fn refusals_of_later_messages_are_kept_for_them() {
    let mut echoes = Echoes::default();
    // 1 refused, 2 accepted, 3 refused: both refusals can arrive before
    // the echo of 2, since the echo goes through the room first.
    echoes.refused();
    echoes.refused();
    assert!(echoes.echoed(2).is_none());
    assert!(echoes.echoed(4).is_none());
    // Nothing left to explain 5.
    assert_eq!(echoes.echoed(6).map(|f| f.0), Some(Kind::Lost));
}

#[test]
fn positions_never_go_up() {
    let text =
        |p: u64| format!("We are dealing with a large amount of users and you are at {p} in queue");
    let mut queue = QueueTrack::default();
    assert!(queue.queued(5, &text(5)).is_empty());
    assert!(queue.queued(3, &text(3)).is_empty());
    assert!(queue.queued(3, &text(3)).is_empty());
    assert_eq!(kinds(&queue.queued(4, &text(4))), [Kind::PositionIncreased]);
    assert_eq!(kinds(&queue.queued(2, "you are 2nd")), [Kind::Protocol]);
    queue.welcomed = true;
    assert_eq!(kinds(&queue.queued(1, &text(1))), [Kind::Protocol]);
}

#[test]
fn lost_means_received_by_someone_else() {
    let stretch = |member: &str, runs: &[(u64, u64)]| Stretch {
        member: member.into(),
        runs: runs.to_vec(),
    };
    let stretches = [
        // ann misses 4, 7 and 8, bob 5 to 7; nobody received 7.
        stretch("ann", &[(1, 3), (5, 6), (9, 12)]),
        stretch("bob", &[(2, 4), (8, 8)]),
        // cid left after 3 and came back at 20: not a gap of its own.
        stretch("cid", &[(1, 3)]),
        stretch("cid", &[(20, 21)]),
    ];
    assert_eq!(lost_messages(&stretches), [(0, 4), (0, 8), (1, 5), (1, 6)]);
    assert!(lost_messages(&[]).is_empty());
}

#[test]
fn fifo_is_judged_against_hello_times() {
    let stamps: HashMap<String, Stamp> = [
        // a queued at 2, before b said hello at 3.
        ("a", 1, Some(2)),
        ("b", 3, Some(4)),
        // c said hello at 5 and entered directly.
        ("c", 5, None),
        // d queued at 7, after e said hello at 6: either order is fine.
        ("d", 0, Some(7)),
        ("e", 6, Some(8)),
    ]
    .into_iter()
    .map(|(n, hello, queued)| (n.to_string(), Stamp { hello, queued }))
    .collect();
    let order = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert!(fifo_violations(&order(&["a", "b", "c", "d", "e"]), &stamps).is_empty());
    assert!(fifo_violations(&order(&["a", "b", "c", "e", "d"]), &stamps).is_empty());
    assert_eq!(fifo_violations(&order(&["b", "a"]), &stamps).len(), 1);
    // c jumped the queue that a was waiting in.
    assert_eq!(fifo_violations(&order(&["c", "a"]), &stamps).len(), 1);
    // Names the soak does not know (the observer, taken names) are skipped.
    assert!(fifo_violations(&order(&["x", "a", "y", "b"]), &stamps).is_empty());
}

#[test]
fn memory_is_judged_after_the_warm_up() {
    // Steep during the warm-up, flat after it.
    let mut samples: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, t as f64 * 3.0)).collect();
    samples.extend((10..60).map(|t| (t as f64, 30.0 + (t % 2) as f64 * 0.5)));
    let g = growth(&samples, 12.0);
    assert!(g.flat, "{g:?}");
    assert_eq!(g.max_mb, 30.5);
    assert!(g.slope_mb_per_min.abs() < 0.5, "{g:?}");
    // A steady climb of 0.2 MB/s: 9.6 MB over the judged span.
    let climbing: Vec<(f64, f64)> = (0..60).map(|t| (t as f64, 20.0 + t as f64 * 0.2)).collect();
    let g = growth(&climbing, 12.0);
    assert!(!g.flat, "{g:?}");
    assert!((g.slope_mb_per_min - 12.0).abs() < 1e-6, "{g:?}");
    assert!((g.fit_growth_mb - 9.4).abs() < 1e-6, "{g:?}");
    // The limit is 10% of the memory after the warm-up when that is more.
    let big: Vec<(f64, f64)> = (0..60)
        .map(|t| (t as f64, 200.0 + t as f64 * 0.2))
        .collect();
    assert!(growth(&big, 12.0).flat);
    assert!(growth(&[], 0.0).flat);
}

#[test]
fn texts_carry_sender_number_and_time() {
    let text = say_text(12, 3, 456, "s1-2", 5);
    let said = parse_text(&text).unwrap();
    assert_eq!(
        (said.uid, said.seq, said.sent_us, said.name),
        (12, 3, 456, "s1-2")
    );
    assert!(parse_text("hello there").is_none());
}

#[test]
fn plans_are_reproducible() {
    let args = Args {
        clients: 10,
        max_active: 5,
        duration: Duration::from_secs(1),
        seed: 1,
        sample: Duration::from_secs(1),
        say_rate: 0.5,
        stay: Duration::from_secs(15),
        misbehave: 0.5,
        server: None,
        metrics: None,
        report_only: false,
        storm: 0.0,
    };
    let draw = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..50)
            .map(|_| format!("{:?}", Plan::draw(&mut rng, &args)))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
}
