//! Panics: contained where they cost one connection, fatal where they would
//! leave a broken room.
//!
//! A session or a writer that panics takes down one connection: the session
//! core catches the panic, closes the connection and gives its seat or
//! queue place back (see `gateway::session`). A component (admission, room
//! delivery, the roster, the waitlist, the metrics listener, upkeep) holds
//! state the whole room depends on; restarting it would lose that state, and
//! running without it leaves clients waiting forever. So each runs as a
//! [`Component`], and the server shuts down with an error as soon as one
//! ends before it was told to.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::FusedFuture;
use tokio::task::{JoinError, JoinHandle};

/// What a panic said, for the log.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "a non-text panic payload"
    }
}

/// A task the room cannot do without, under a name for logs and for
/// `anteroom_panics_total`. Awaiting it gives how the task ended; once it
/// has ended it is never ready again (see [`FusedFuture`]).
#[derive(Debug)]
pub struct Component {
    name: &'static str,
    /// `None` once the task has ended and its end has been reported.
    task: Option<JoinHandle<()>>,
}

impl Component {
    /// Spawns `work` as the component `name`, one of
    /// [`crate::telemetry::PANIC_TASKS`].
    pub fn spawn(name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            name,
            task: Some(tokio::spawn(work)),
        }
    }

    /// The component's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Stops a component that never ends by itself.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Future for Component {
    type Output = Result<(), JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Pending;
        };
        let ended = std::task::ready!(Pin::new(task).poll(cx));
        self.task = None;
        Poll::Ready(ended)
    }
}

impl FusedFuture for Component {
    fn is_terminated(&self) -> bool {
        self.task.is_none()
    }
}

/// Waits until one of `components` ends, and says which and how.
pub async fn first_to_end(components: &mut [Component]) -> (&'static str, Result<(), JoinError>) {
    std::future::poll_fn(|cx| {
        for component in components.iter_mut() {
            if component.is_terminated() {
                continue;
            }
            if let Poll::Ready(ended) = Pin::new(&mut *component).poll(cx) {
                return Poll::Ready((component.name, ended));
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_component_to_end_is_named() {
        let mut components = vec![
            Component::spawn("admission", std::future::pending()),
            Component::spawn("roster", async { panic!("injected") }),
        ];
        let (name, ended) = first_to_end(&mut components).await;
        assert_eq!(name, "roster");
        let panic = ended.unwrap_err().into_panic();
        assert_eq!(panic_message(&*panic), "injected");
        assert!(components[1].is_terminated());
        components[0].abort();
        assert!((&mut components[0]).await.unwrap_err().is_cancelled());
    }
}
