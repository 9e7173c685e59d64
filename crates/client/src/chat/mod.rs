//! `anteroom chat`: the terminal client.
//!
//! On a terminal it is a full-screen interface ([`tui`]); when standard input
//! or output is not a terminal it reads and prints lines ([`mod@line`]), so it
//! can be scripted: `echo hi | anteroom chat --name bot`.

pub mod backlog;
pub mod escape;
pub mod files;
pub mod grant;
pub mod line;
pub mod net;
pub mod state;
pub mod tui;
pub mod ui;

use std::io::IsTerminal;

use crate::upload::WebBase;
use crate::{Target, Trust};

/// Where the client connects, and whom it trusts there.
#[derive(Debug, Clone)]
pub struct Dial {
    /// `tcp://host:port` (or `host:port`), `tls://…`, `quic://…`, `ws://…`
    /// or `wss://…`.
    pub server: String,
    pub trust: Trust,
    /// The web listener, for `/send` and the links of attachments; derived
    /// from `server` when not given (see [`WebBase::for_server`]).
    pub web: Option<WebBase>,
}

impl Dial {
    /// The web listener: as given, or the one that goes with the server.
    pub fn web_base(&self) -> Option<WebBase> {
        self.web.clone().or_else(|| {
            let target: Target = self.server.parse().ok()?;
            Some(WebBase::for_server(&target))
        })
    }

    /// The server as the screen names it; `--insecure` says so there.
    pub fn shown(&self) -> String {
        match self.trust {
            Trust::Insecure => format!("{} (INSECURE: certificate not checked)", self.server),
            _ => self.server.clone(),
        }
    }
}

/// Runs the client. The error is a message for the user.
pub async fn run(dial: Dial, name: String) -> Result<(), String> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        tui::run(dial, name).await
    } else {
        line::run(dial, name).await
    }
}
