//! The client side of the wire: a frame payload from the server, read as an
//! `Event`, applied to the chat state, printed as a line and drawn on a
//! small screen, as `anteroom chat` does with whatever the server sends.
//!
//! The input is a sequence of frames (length prefix included), as a socket
//! would deliver them.

#![no_main]

use anteroom_client::Event;
use anteroom_client::chat::line::format_event;
use anteroom_client::chat::state::ChatState;
use anteroom_client::chat::ui::draw;
use anteroom_protocol::codec::MAX_SERVER_FRAME_BYTES;
use anteroom_protocol::frame_codec;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = frame_codec(MAX_SERVER_FRAME_BYTES);
    let mut buf = BytesMut::from(data);
    let mut state = ChatState::new("ann", "127.0.0.1:7878");
    let mut applied = 0;
    while let Ok(Some(payload)) = codec.decode_eof(&mut buf) {
        let Ok(event) = Event::decode(&payload) else {
            continue;
        };
        let _ = format_event(&event, None);
        state.apply(&event);
        applied += 1;
    }
    if applied > 0 {
        for (width, height) in [(80, 16), (30, 6)] {
            let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
            terminal.draw(|f| draw(f, &state)).unwrap();
        }
    }
});
