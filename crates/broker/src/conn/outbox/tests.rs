use super::*;

fn frame(n: u8) -> Bytes {
    Bytes::from(vec![n; 3])
}

#[tokio::test]
async fn batches_everything_queued_in_order() {
    let outbox = Outbox::new(8);
    for n in 0..5 {
        assert!(matches!(
            outbox.push_event(frame(n), None, false),
            Push::Queued { .. }
        ));
    }
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    let firsts: Vec<u8> = batch.entries.iter().map(|e| e.bytes()[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
}

#[test]
fn overflow_and_skip() {
    let outbox = Outbox::new(2);
    outbox.push_event(frame(0), None, false);
    outbox.push_event(frame(1), None, false);
    assert_eq!(outbox.push_event(frame(2), None, false), Push::Overflow);
    assert_eq!(outbox.push_event(frame(2), None, true), Push::Skipped);
    assert_eq!(outbox.push_event(frame(3), None, true), Push::Skipped);
    assert_eq!(outbox.lock().missed, 2);
}

#[test]
fn one_frame_over_the_byte_limit_fits_an_empty_queue() {
    let outbox = Outbox::with_byte_limit(100, 2);
    assert!(matches!(
        outbox.push_event(frame(0), None, false),
        Push::Queued { .. }
    ));
    assert_eq!(outbox.push_event(frame(1), None, false), Push::Overflow);
}

#[test]
fn the_byte_limit_counts_as_falling_behind() {
    let outbox = Outbox::with_byte_limit(100, 7);
    assert!(matches!(
        outbox.push_event(frame(0), None, false),
        Push::Queued { .. }
    ));
    assert!(matches!(
        outbox.push_event(frame(1), None, false),
        Push::Queued { .. }
    ));
    assert_eq!(outbox.push_event(frame(2), None, false), Push::Overflow);
    assert_eq!(outbox.push_event(frame(2), None, true), Push::Skipped);
}

#[tokio::test]
async fn gap_follows_what_was_queued_before_the_drop() {
    let outbox = Outbox::new(1);
    outbox.push_event(frame(0), None, true);
    outbox.push_event(frame(1), None, true);
    outbox.push_event(frame(2), None, true);
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    assert_eq!(batch.entries.len(), 2);
    assert_eq!(batch.entries[0].bytes()[0], 0);
    let gap = rmpv::decode::read_value(&mut &batch.entries[1].bytes()[4..]).unwrap();
    assert_eq!(gap["missed"].as_u64(), Some(2));
}

#[tokio::test]
async fn welcome_withdraws_pending_position() {
    let outbox = Outbox::new(4);
    assert!(outbox.set_position(frame(9)));
    outbox.push_welcome(frame(1), None);
    assert!(!outbox.set_position(frame(8)));
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    assert_eq!(batch.entries.len(), 1);
    assert_eq!(batch.entries[0].bytes()[0], 1);
}

#[tokio::test]
async fn position_updates_are_conflated() {
    let outbox = Outbox::new(4);
    for n in 0..10 {
        outbox.set_position(frame(n));
    }
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    assert_eq!(batch.entries.len(), 1);
    assert_eq!(batch.entries[0].bytes()[0], 9);
}

#[tokio::test]
async fn the_byte_cap_covers_the_batch_being_written() {
    // 30 bytes: ten 3-byte frames.
    let outbox = Outbox::with_byte_limit(1000, 30);
    let mut held = 0;
    while let Push::Queued { .. } = outbox.push_event(frame(0), None, true) {
        held += 3;
    }
    assert_eq!(held, 30);
    // The writer takes everything; until it has written it, those bytes
    // are still held and nothing more fits.
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    while let Push::Queued { .. } = outbox.push_event(frame(1), None, true) {
        held += 3;
    }
    assert!(held <= 30 + 3, "{held} bytes held under a cap of 30");
    // Asking for the next batch means the last one was written.
    assert!(
        futures_util::FutureExt::now_or_never(outbox.next_batch(&mut batch)).is_some(),
        "the gap for the skipped frames is ready at once"
    );
    assert!(matches!(
        outbox.push_event(frame(2), None, true),
        Push::Queued { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn bytes_held_by_queue_and_batch_never_exceed_the_cap_and_a_frame() {
    use crate::conn::writer::{ByteSink, run_writer};
    const CAP: usize = 300;
    const PIPE: usize = 64;
    let outbox = std::sync::Arc::new(Outbox::with_byte_limit(100_000, CAP));
    // A client that never reads: the pipe takes PIPE bytes, then nothing.
    let (client, _server) = tokio::io::duplex(PIPE);
    let writer = tokio::spawn({
        let outbox = outbox.clone();
        async move { run_writer(&outbox, ByteSink(client), None).await }
    });
    let mut accepted = 0;
    for round in 0..10 {
        while let Push::Queued { .. } = outbox.push_event(frame(round), None, true) {
            accepted += 3;
        }
        // Let the writer take what is queued and block on the pipe.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let held = accepted - PIPE;
    assert!(held <= CAP + 3, "{held} bytes held under a cap of {CAP}");
    writer.abort();
}

/// The frames of a batch, decoded where they are server messages.
fn lagging_in(batch: &Batch) -> Vec<(u64, u64)> {
    batch
        .entries
        .iter()
        .filter_map(|e| match e.bytes().get(4..).map(ServerMessage::decode) {
            Some(Ok(ServerMessage::Lagging { queued, limit })) => Some((queued, limit)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn lagging_goes_ahead_once_per_episode_and_never_moves_the_cut_off() {
    let outbox = Outbox::new(8);
    outbox.warn_when_lagging();
    for n in 0..8 {
        assert!(matches!(
            outbox.push_event(frame(n), None, false),
            Push::Queued { .. }
        ));
    }
    // The ninth is over the limit, warning or not.
    assert_eq!(outbox.push_event(frame(8), None, false), Push::Overflow);
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    // Past half (the fifth frame): one warning, ahead of everything queued.
    assert_eq!(lagging_in(&batch), vec![(5, 8)]);
    assert_eq!(
        batch.entries[0].bytes()[4..],
        ServerMessage::Lagging {
            queued: 5,
            limit: 8
        }
        .to_frame()[4..]
    );
    assert_eq!(batch.entries.len(), 9);

    // Drained: the next episode is warned again.
    for n in 0..5 {
        outbox.push_event(frame(n), None, false);
    }
    outbox.next_batch(&mut batch).await;
    assert_eq!(lagging_in(&batch), vec![(5, 8)]);
}

#[tokio::test]
async fn without_the_feature_there_is_no_warning() {
    let outbox = Outbox::new(8);
    for n in 0..8 {
        outbox.push_event(frame(n), None, false);
    }
    let mut batch = Batch::default();
    outbox.next_batch(&mut batch).await;
    assert!(lagging_in(&batch).is_empty());
    assert_eq!(batch.entries.len(), 8);
}

#[test]
fn a_members_buffers_shrink_once_a_burst_is_written() {
    let outbox = Outbox::new(1024);
    outbox.set_member();
    let mut batch = Batch::default();
    for round in 0..3 {
        for n in 0..40 {
            outbox.push_event(frame(n), None, false);
        }
        assert!(outbox.take(&mut batch), "round {round}");
        assert_eq!(batch.entries.len(), 40);
        outbox.written(&mut batch);
        assert!(batch.entries.capacity() <= SHRINK_ABOVE, "round {round}");
        assert!(
            outbox.lock().frames.capacity() <= SHRINK_ABOVE,
            "round {round}"
        );
    }
}
