//! `anteroom chat`: the terminal client.
//!
//! On a terminal it is a full-screen interface ([`tui`]); when standard input
//! or output is not a terminal it reads and prints lines ([`line`]), so it
//! can be scripted: `echo hi | anteroom chat --name bot`.

pub mod escape;
pub mod line;
pub mod net;
pub mod state;
pub mod tui;
pub mod ui;

use std::io::IsTerminal;

/// Runs the client. The error is a message for the user.
pub async fn run(server: String, name: String) -> Result<(), String> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        tui::run(server, name).await
    } else {
        line::run(server, name).await
    }
}
