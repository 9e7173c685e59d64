//! Clients lost from the queue: reset, closed or killed while waiting, and
//! reset at the moment they are promoted.

use std::time::{Duration, Instant};

use super::harness::{ONE_AT_A_TIME, Served, expect_consistent};
use crate::support::process::Chat;

/// Busy-waits `d`: finer than a timer, for racing two events.
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[tokio::test]
async fn clients_killed_while_queued_leave_and_those_behind_move_up() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // No grace: the chat process asks for `resume`, and a killed one would
    // keep its place (the waiting room tests cover that).
    let s = Served::start(
        &[
            "--max-active",
            "1",
            "--max-waiting",
            "10",
            "--resume-grace",
            "0s",
        ],
        &[],
    )
    .await;
    let mut ann = s.join("ann").await;
    let mut q0 = s.queue("q0", 1).await;
    let q1 = s.queue("q1", 2).await;
    let q2 = s.queue("q2", 3).await;
    let q3 = s.queue("q3", 4).await;
    let q4 = s.queue("q4", 5).await;
    // A real client process, 6th in the queue.
    let mut chat = Chat::start(s.addr(), "proc");
    chat.expect_containing("you are at 6 in queue");
    let q5 = s.queue("q5", 7).await;
    s.expect_connections(0, 1, 7).await;

    // q1 resets, q3 closes without a bye, the process is killed.
    q1.client.reset();
    drop(q3);
    chat.kill();
    let mut waiting = vec![q2, q4, q5];
    for (w, want) in waiting.iter_mut().zip([2, 3, 4]) {
        w.expect_position(want).await;
    }
    s.expect_connections(0, 1, 4).await;
    // The head did not move, so it is told nothing.
    q0.client.expect_silence(Duration::from_millis(400)).await;

    // A seat opens: the head enters, the rest move up once more.
    ann.send_type("bye", &[]).await;
    ann.expect_bye("bye").await;
    let (mut q0, users) = q0.expect_welcome().await;
    assert_eq!(users, ["q0"]);
    expect_consistent(&s, &mut q0, &["q0"], &mut waiting, 0).await;
    assert_eq!(s.value("anteroom_queue_abandoned_total").await, 3.0);
    assert_eq!(s.value("anteroom_promotions_total").await, 1.0);
    drop((ann, q0, waiting));
    s.expect_clean().await;
}

#[tokio::test]
async fn a_client_reset_while_being_promoted_is_never_lost_or_listed_twice() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const ROUNDS: u64 = 90;
    let s = Served::start(&["--max-active", "1", "--max-waiting", "4"], &[]).await;
    for round in 0..ROUNDS {
        let mut ann = s.join(&format!("ann{round}")).await;
        let mut head = s.queue(&format!("head{round}"), 1).await;
        let after = s.queue(&format!("after{round}"), 2).await;
        // The member leaves and the head of the queue resets, in either
        // order and at various distances, up to the head resetting as soon
        // as its welcome arrives.
        let delay = Duration::from_micros([0, 20, 100, 300, 1000][(round % 5) as usize]);
        match round % 3 {
            0 => {
                ann.send_type("bye", &[]).await;
                spin(delay);
                head.client.reset();
            }
            1 => {
                head.client.reset();
                spin(delay);
                ann.send_type("bye", &[]).await;
            }
            _ => {
                ann.send_type("bye", &[]).await;
                let v = head.client.recv().await;
                assert_eq!(v["type"].as_str(), Some("welcome"), "{v}");
                head.client.reset();
            }
        }
        // The next in line always gets the seat, alone in the room.
        let (mut member, users) = after.expect_welcome().await;
        let me = format!("after{round}");
        assert_eq!(users, [me.as_str()], "round {round}");
        // A member from its welcome on: what it says at once is delivered.
        member.say("in at last").await;
        let v = member
            .recv_until(|v| matches!(v["type"].as_str(), Some("message") | Some("error")))
            .await;
        assert_eq!(v["text"].as_str(), Some("in at last"), "round {round}: {v}");
        expect_consistent(&s, &mut member, &[me.as_str()], &mut [], 0).await;
        ann.expect_end().await;
        member.send_type("bye", &[]).await;
        member.expect_bye("bye").await;
        s.expect_connections(0, 0, 0).await;
    }
    // Every queued client left the queue exactly once: promoted or gone.
    let promoted = s.value("anteroom_promotions_total").await;
    let abandoned = s.value("anteroom_queue_abandoned_total").await;
    assert_eq!(promoted + abandoned, (2 * ROUNDS) as f64);
    assert!(promoted >= ROUNDS as f64, "{promoted} promotions");
    s.expect_clean().await;
}
