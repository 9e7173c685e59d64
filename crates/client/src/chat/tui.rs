//! The full-screen terminal interface.

use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;

use super::net::{self, Net, Outgoing, Retry};
use super::state::{Action, ChatState, Status};
use super::ui;
use crate::Event;

/// Runs the interface until the user quits or the name is refused.
pub async fn run(server: String, name: String) -> Result<(), String> {
    let mut state = ChatState::new(&name, &server);
    state.notice(format!(
        "connecting to {server} as {name}; {}",
        super::state::HELP
    ));
    let (out, mut events) = net::spawn(server, name, Retry { when_full: true });
    // Raw mode and the alternate screen; restored on return and on panic.
    let mut terminal = ratatui::init();
    let mut keys = EventStream::new();
    let result = loop {
        if let Err(error) = terminal.draw(|frame| ui::draw(frame, &state)) {
            break Err(format!("cannot draw: {error}"));
        }
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
                        KeyCode::PageUp => {
                            let most = u16::try_from(state.entries.len()).unwrap_or(u16::MAX);
                            state.scroll_back = state.scroll_back.saturating_add(10).min(most);
                        }
                        KeyCode::PageDown => state.scroll_back = state.scroll_back.saturating_sub(10),
                        _ => {}
                    }
                }
                // Resizes and other terminal events: redraw.
                Some(Ok(_)) => {}
                Some(Err(error)) => break Err(format!("terminal error: {error}")),
                None => break Ok(()),
            },
            event = events.recv() => match event {
                None => break Ok(()),
                Some(Net::Connecting { .. }) => {
                    if !matches!(state.status, Status::Reconnecting { .. }) {
                        state.status = Status::Connecting;
                    }
                }
                Some(Net::Admitted(admission)) => state.admitted(&admission),
                Some(Net::Event(event)) => {
                    state.apply(&event);
                    if matches!(event, Event::Gap { .. }) {
                        let _ = out.send(Outgoing::Who).await;
                    }
                }
                Some(Net::Lost { reason, attempt, retry_in }) => {
                    state.notice(format!("disconnected: {reason}"));
                    state.status = Status::Reconnecting {
                        attempt,
                        retry_in_ms: retry_in.as_millis() as u64,
                        reason,
                    };
                }
                Some(Net::Finished { reason: None }) => break Ok(()),
                Some(Net::Finished { reason: Some(reason) }) => break Err(reason),
            },
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
