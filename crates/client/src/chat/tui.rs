//! The full-screen terminal interface.

use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::files::{self, Job, Transfer};
use super::net::{self, Net, Outgoing, Retry};
use super::state::{Action, ChatState, Status};
use super::ui;
use crate::upload::human_size;
use crate::{Event, Trust};

/// Runs the interface until the user quits or the name is refused.
pub async fn run(dial: super::Dial, name: String) -> Result<(), String> {
    let server = dial.shown();
    let mut state = ChatState::new(&name, &server);
    state.web = dial.web_base();
    let trust = dial.trust.clone();
    state.notice(format!(
        "connecting to {server} as {name}; {}",
        super::state::HELP
    ));
    let (out, mut events) = net::spawn(dial, name, Retry { when_full: true });
    let (transfers_tx, mut transfers) = mpsc::channel(64);
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
                            Action::Quit => {
                                let _ = out.send(Outgoing::Bye).await;
                                break Ok(());
                            }
                            action => act(&mut state, &out, &trust, &transfers_tx, action).await,
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
            Some(transfer) = transfers.recv() => on_transfer(&mut state, &out, transfer).await,
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

/// Does what the user asked for (but quitting).
async fn act(
    state: &mut ChatState,
    out: &mpsc::Sender<Outgoing>,
    trust: &Trust,
    transfers: &mpsc::Sender<Transfer>,
    action: Action,
) {
    let in_room = matches!(state.status, Status::InRoom { .. });
    let request = match action {
        Action::Who => Ok(Outgoing::Who),
        Action::Quit | Action::None | Action::Notice(_) => return,
        _ if !in_room => Err("not in the room yet; nothing sent".to_string()),
        Action::Say(text) => Ok(Outgoing::Say(text)),
        Action::Whisper { to, text } => state.grant.whisper(to, text),
        Action::History(limit) => state.grant.history(limit),
        Action::Send { path, caption } => {
            let ticket = state.grant.ticket();
            let started = match (ticket, state.web.clone(), &state.upload) {
                (_, _, Some((name, _))) => {
                    Err(format!("{name} is still being sent; one file at a time"))
                }
                (Err(why), _, _) => Err(why),
                (_, None, _) => Err("the web listener is not known; start with --web URL".into()),
                (Ok(ticket), Some(web), None) => {
                    let name = crate::upload::file_name(&path);
                    files::start(
                        Job {
                            path,
                            caption,
                            web,
                            trust: trust.clone(),
                            ticket,
                        },
                        transfers.clone(),
                    );
                    state.upload = Some((name, 0));
                    Ok(())
                }
            };
            if let Err(why) = started {
                state.notice(why);
            }
            return;
        }
    };
    match request {
        Ok(request) => {
            let _ = out.send(request).await;
        }
        Err(why) => state.notice(why),
    }
}

/// Shows how an upload goes; posts the file once stored.
async fn on_transfer(state: &mut ChatState, out: &mpsc::Sender<Outgoing>, transfer: Transfer) {
    match transfer {
        Transfer::Progress { name, percent } => state.upload = Some((name, percent)),
        Transfer::Done {
            name,
            caption,
            result,
        } => {
            state.upload = None;
            match result {
                Ok(stored) if !matches!(state.status, Status::InRoom { .. }) => {
                    state.notice(format!(
                        "{name} was stored but not posted: not in the room; its link: {}",
                        state
                            .web
                            .as_ref()
                            .map_or(stored.url.clone(), |web| web.url(&stored.url))
                    ));
                }
                Ok(stored) => {
                    state.notice(format!("sent {name} ({})", human_size(stored.size)));
                    let _ = out
                        .send(Outgoing::Attach {
                            text: caption,
                            url: stored.url,
                        })
                        .await;
                }
                Err(why) => state.notice(format!("cannot send {name}: {why}")),
            }
        }
    }
}

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
            held_until,
        } => {
            match held_until.filter(|until| *until > std::time::Instant::now()) {
                Some(until) => state.notice(format!(
                    "connection lost: {reason}; {}",
                    super::line::held(until)
                )),
                None => state.notice(format!("disconnected: {reason}")),
            }
            state.status = Status::Reconnecting {
                attempt,
                retry_in_ms: retry_in.as_millis() as u64,
                reason,
                held_until,
            };
        }
        Net::Finished { reason: None } => return Some(Ok(())),
        Net::Finished {
            reason: Some(reason),
        } => return Some(Err(reason)),
    }
    None
}
