//! Version 1.1's waiting-room features over real sockets: resuming a seat
//! or a queue place across a dropped TCP connection, wait estimates under
//! a scripted promotion rate, presence batches in a room of version-1 and
//! version-1.1 members, and the `lagging` warning.

mod support;

#[path = "chat_log/kit.rs"]
#[allow(dead_code)]
mod kit;

#[path = "waiting_room/eta.rs"]
mod eta;
#[path = "waiting_room/lagging.rs"]
mod lagging;
#[path = "waiting_room/presence.rs"]
mod presence;
#[path = "waiting_room/resume.rs"]
mod resume;

/// The metrics are the process's, shared by every server in it: tests that
/// read them, and so all of these, run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}
