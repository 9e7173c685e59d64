use super::*;

#[tokio::test]
async fn an_idle_writer_stays_small() {
    // Every connection holds a writer future for its whole life: neither
    // the `writev` slice array (2 KiB) nor a write timer may be part of it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (_read, write) = stream.into_split();
    let outbox = Outbox::new(16);
    let writer = run_writer(&outbox, ByteSink(write), Some(Duration::from_secs(1)));
    let size = std::mem::size_of_val(&writer);
    assert!(size < 512, "the writer's future is {size} bytes");
}

fn frame(n: u8) -> Bytes {
    Bytes::from(vec![n; 3])
}

#[tokio::test]
async fn writer_writes_all_bytes_then_shuts_down() {
    let outbox = Outbox::new(1024);
    let (client, mut server) = tokio::io::duplex(7); // tiny pipe: many partial writes
    for n in 0..100 {
        outbox.push_event(frame(n), None, false);
    }
    outbox.close(&[frame(200)], false);
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
            .await
            .unwrap();
        out
    });
    run_writer(&outbox, ByteSink(client), Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let out = reader.await.unwrap();
    assert_eq!(out.len(), 303);
    assert_eq!(&out[297..300], &[99, 99, 99]);
    assert_eq!(&out[300..], &[200, 200, 200]);
}

#[tokio::test]
async fn a_discarding_close_cuts_the_batch_in_flight_at_a_frame_boundary() {
    let outbox = Outbox::new(1024);
    // Each write takes at most 5 bytes: the batch is written in pieces.
    let (client, mut server) = tokio::io::duplex(5);
    for n in 0..100 {
        outbox.push_event(frame(n), None, false);
    }
    let writer = run_writer(&outbox, ByteSink(client), None);
    let reader = async {
        let mut out = vec![0u8; 7];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut out)
            .await
            .unwrap();
        outbox.close(&[frame(200)], true);
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut out)
            .await
            .unwrap();
        out
    };
    let (written, out) = tokio::join!(writer, reader);
    written.unwrap();
    assert_eq!(out.len() % 3, 0, "a frame was cut: {out:?}");
    let frames: Vec<&[u8]> = out.chunks(3).collect();
    assert!(frames.len() < 10, "the batch was not cut: {out:?}");
    for (n, f) in frames[..frames.len() - 1].iter().enumerate() {
        assert_eq!(*f, &[n as u8; 3], "{out:?}");
    }
    assert_eq!(frames[frames.len() - 1], &[200; 3]);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_socket_times_out() {
    let outbox = Outbox::new(1024);
    let (client, _server) = tokio::io::duplex(4);
    outbox.push_event(frame(1), None, false);
    outbox.push_event(frame(2), None, false);
    let err = run_writer(&outbox, ByteSink(client), Some(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Stalled(_)));
}

#[tokio::test]
async fn a_message_sink_gets_one_message_per_frame_without_prefix() {
    let outbox = Outbox::new(16);
    for frame in [&b"\0\0\0\x02ab"[..], b"\0\0\0\x01c"] {
        outbox.push_event(Bytes::copy_from_slice(frame), None, false);
    }
    outbox.close(&[], false);
    let mut got: Vec<Bytes> = Vec::new();
    let sink = MessageSink((&mut got).sink_map_err(|never| -> std::io::Error { match never {} }));
    run_writer(&outbox, sink, None).await.unwrap();
    assert_eq!(
        got,
        vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_taking_a_byte_every_nine_seconds_is_cut_off() {
    let outbox = Outbox::new(1024);
    let (client, mut server) = tokio::io::duplex(4);
    for n in 0..10 {
        outbox.push_event(frame(n), None, false);
    }
    tokio::spawn(async move {
        let mut byte = [0u8; 1];
        loop {
            tokio::time::sleep(Duration::from_secs(9)).await;
            match tokio::io::AsyncReadExt::read(&mut server, &mut byte).await {
                Ok(1) => {}
                _ => return,
            }
        }
    });
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(
        Duration::from_secs(120),
        run_writer(&outbox, ByteSink(client), Some(Duration::from_secs(10))),
    )
    .await;
    assert!(
        matches!(ended, Ok(Err(WriteError::Stalled(_)))),
        "a trickling reader was not cut off: {ended:?}"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(10), "cut off early: {took:?}");
    assert!(took <= Duration::from_secs(11), "cut off late: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_reader_is_not_cut_off() {
    // 256 KiB read 8 KiB a second takes 32 s, far beyond the timeout,
    // but every 10 s window moves 80 KiB.
    let outbox = Outbox::new(1024);
    let (client, mut server) = tokio::io::duplex(8 * 1024);
    for _ in 0..64 {
        outbox.push_event(Bytes::from(vec![7u8; 4096]), None, false);
    }
    outbox.close(&[], false);
    let reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 8 * 1024];
        let mut total = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match tokio::io::AsyncReadExt::read(&mut server, &mut chunk).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    run_writer(&outbox, ByteSink(client), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(reader.await.unwrap(), 64 * 4096);
}

#[test]
fn a_message_sink_sweeps_what_it_can_and_resumes_at_the_next_frame() {
    let prefixed = |payload: &[u8]| {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    };
    let mut run = Vec::new();
    for payload in [&b"one"[..], b"two", b"three"] {
        run.extend(prefixed(payload));
    }
    let entries = [
        Entry::run(super::super::entry::EventRun::new(
            Bytes::from(run),
            3,
            Vec::new(),
        )),
        Entry::reply(Bytes::from(prefixed(b"four"))),
    ];
    // A channel that holds two messages: each sweep stops when it is full.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let tx = tokio_util::sync::PollSender::new(tx);
    let mut sink = MessageSink(tx.sink_map_err(std::io::Error::other));
    let outbox = Outbox::new(16);
    let batch = Batch::default();
    let mut at = Position::default();
    let mut got = Vec::new();
    for _ in 0..10 {
        let done = sink
            .try_write(&entries, &mut at, outbox.discarded(&batch))
            .unwrap();
        while let Ok(message) = rx.try_recv() {
            got.push(message);
        }
        if done {
            break;
        }
    }
    assert_eq!(
        got,
        [&b"one"[..], b"two", b"three", b"four"].map(Bytes::from_static),
        "every frame once, in order"
    );
    assert_eq!(
        at,
        Position {
            index: 2,
            offset: 0
        }
    );
}
