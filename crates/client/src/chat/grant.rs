//! What the server granted this connection (version 1.1 features, the
//! upload ticket) and what the commands that need them become: the one
//! place both the full-screen client and line mode ask whether `/msg`,
//! `/history` or `/send` can go out.

use super::backlog::{Ask, Backlog};
use super::net::Outgoing;
use crate::protocol::{Feature, Features};
use crate::upload::Ticket;
use crate::{Admission, Event, granted};

/// The features `anteroom chat` asks for: every one it shows.
pub fn asked() -> Features {
    [
        Feature::History,
        Feature::Whisper,
        Feature::Files,
        Feature::Resume,
        Feature::Eta,
        Feature::PresenceBatch,
        Feature::Lagging,
    ]
    .into_iter()
    .collect()
}

/// The grant of the connection of the moment.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub features: Features,
    /// With `files`: for `/send`.
    pub ticket: Option<Ticket>,
    pub backlog: Backlog,
}

impl Grant {
    /// Takes in the answer to `hello`.
    pub fn admitted(&mut self, admission: &Admission) {
        match admission {
            Admission::Welcome {
                features, upload, ..
            } => self.entered(*features, upload.clone()),
            Admission::Queued { features, .. } => {
                self.features = *features;
                self.ticket = None;
            }
        }
    }

    /// Takes in a `welcome` that ends a wait in the queue; other events
    /// change nothing.
    pub fn event(&mut self, event: &Event) {
        if let Event::Welcome {
            features,
            upload_token,
            max_upload_bytes,
            ..
        } = event
        {
            let ticket = Ticket::from_welcome(upload_token.as_deref(), *max_upload_bytes);
            self.entered(granted(features.as_deref()), ticket);
        }
    }

    fn entered(&mut self, features: Features, ticket: Option<Ticket>) {
        self.features = features;
        self.ticket = ticket.filter(|_| features.has(Feature::Files));
        self.backlog.entered(features);
    }

    /// `/msg TO TEXT`, if the server delivers whispers to this client.
    pub fn whisper(&self, to: String, text: String) -> Result<Outgoing, String> {
        if !self.features.has(Feature::Whisper) {
            return Err("this server does not deliver whispers (/msg) to this client".into());
        }
        Ok(Outgoing::Whisper { to, text })
    }

    /// `/history N`: the page before the oldest message shown.
    pub fn history(&mut self, limit: u32) -> Result<Outgoing, String> {
        self.backlog
            .request(limit)
            .map(|Ask { before, limit }| Outgoing::History { before, limit })
            .map_err(str::to_string)
    }

    /// The ticket for `/send`.
    pub fn ticket(&self) -> Result<Ticket, String> {
        self.ticket.clone().ok_or_else(|| {
            "this server does not take files from this client (its web listener may be off)".into()
        })
    }
}
