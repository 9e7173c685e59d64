//! The full-screen terminal interface.

use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::net::{self, Net, Outgoing, Retry};
use super::state::{Action, ChatState, Status};
use super::ui;
use crate::Event;

/// Runs the interface until the user quits or the name is refused.
pub async fn run(dial: super::Dial, name: String) -> Result<(), String> {
    let server = dial.shown();
    let mut state = ChatState::new(&name, &server);
    state.notice(format!(
        "connecting to {server} as {name}; {}",
        super::state::HELP
    ));
    let (out, mut events) = net::spawn(dial, name, Retry { when_full: true });
    // Raw mode and the alternate screen; restored on return and on panic.
    let mut terminal = ratatui::init();
    let mut keys = EventStream::new();
    let mut screen = ui::Screen::default();
    let result = loop {
        if let Err(error) = terminal.draw(|frame| screen.draw(frame, &state)) {
            break Err(format!("cannot draw: {error}"));
        }
        state.scroll_back = state.scroll_back.min(screen.max_scroll());
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) if key.kind != KeyEventKind::Release => {
                    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
                    match key.code {
                        KeyCode::Char('c') | KeyCode::Char('d') if ctrl => {
                            let _ = out.send(Outgoing::Bye).await;
                            break Ok(());
                        }
                        KeyCode::Enter => match state.submit() {
                            Action::Say(text) => {
                                if matches!(state.status, Status::InRoom { .. }) {
                                    let _ = out.send(Outgoing::Say(text)).await;
                                } else {
                                    state.notice("not in the room yet; message not sent");
                                }
                            }
                            Action::Who => {
                                let _ = out.send(Outgoing::Who).await;
                            }
                            Action::Quit => {
                                let _ = out.send(Outgoing::Bye).await;
                                break Ok(());
                            }
                            Action::None => {}
                        },
                        KeyCode::Char('u') if ctrl => {
                            state.input.clear();
                            state.cursor = 0;
                        }
                        // Other control chords have no meaning here.
                        KeyCode::Char(_) if ctrl => {}
                        KeyCode::Char(c) => state.insert(c),
                        KeyCode::Backspace => state.backspace(),
                        KeyCode::Delete => state.delete(),
                        KeyCode::Left => state.left(),
                        KeyCode::Right => state.right(),
                        KeyCode::Home => state.home(),
                        KeyCode::End => state.end(),
                        KeyCode::Up => state.history_up(),
                        KeyCode::Down => state.history_down(),
                        // Limited to the lines there are after the next frame.
                        KeyCode::PageUp => state.scroll_back = state.scroll_back.saturating_add(10),
                        KeyCode::PageDown => state.scroll_back = state.scroll_back.saturating_sub(10),
                        _ => {}
                    }
                }
                // Resizes and other terminal events: redraw.
                Some(Ok(_)) => {}
                Some(Err(error)) => break Err(format!("terminal error: {error}")),
                None => break Ok(()),
            },
            event = events.recv() => {
                // Everything already received is applied before the next
                // frame: a burst costs one frame, not one per event.
                let mut next = event;
                let mut batch = 0;
                let finished = loop {
                    let Some(event) = next else { break Some(Ok(())) };
                    if let Some(done) = on_net(&mut state, &out, event).await {
                        break Some(done);
                    }
                    batch += 1;
                    if batch == BATCH {
                        break None;
                    }
                    match events.try_recv() {
                        Ok(event) => next = Some(event),
                        Err(_) => break None,
                    }
                };
                if let Some(done) = finished {
                    break done;
                }
            }
        }
    };
    // Give the goodbye a moment to reach the server.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(event) = events.recv().await {
            if matches!(event, Net::Finished { .. }) {
                break;
            }
        }
    })
    .await;
    ratatui::restore();
    result
}

/// Most events applied between two frames, so that keys stay responsive.
const BATCH: usize = 256;

/// Applies what the connection reports; `Some` when the client is done.
async fn on_net(
    state: &mut ChatState,
    out: &mpsc::Sender<Outgoing>,
    event: Net,
) -> Option<Result<(), String>> {
    match event {
        Net::Connecting { .. } => {
            if !matches!(state.status, Status::Reconnecting { .. }) {
                state.status = Status::Connecting;
            }
        }
        Net::Admitted(admission) => state.admitted(&admission),
        Net::Event(event) => {
            state.apply(&event);
            if matches!(event, Event::Gap { .. }) {
                let _ = out.send(Outgoing::Who).await;
            }
        }
        Net::Lost {
            reason,
            attempt,
            retry_in,
        } => {
            state.notice(format!("disconnected: {reason}"));
            state.status = Status::Reconnecting {
                attempt,
                retry_in_ms: retry_in.as_millis() as u64,
                reason,
            };
        }
        Net::Finished { reason: None } => return Some(Ok(())),
        Net::Finished {
            reason: Some(reason),
        } => return Some(Err(reason)),
    }
    None
}
