//! Budgets for the log lines clients cause.
//!
//! A client decides how often it breaks the protocol, times out, reads too
//! slowly or joins and leaves; one line per event would let a flood of such
//! clients decide how much the server logs. Each kind of line below has a
//! process-wide budget per second. Lines beyond it are left out and counted
//! in `anteroom_log_lines_suppressed_total`, and the next line of the same
//! kind that is written carries `suppressed`, the number left out before it.
//!
//! ```
//! use anteroom_broker::telemetry::log_budget::{PROTOCOL_ERRORS, Verdict};
//!
//! if let Verdict::Write { suppressed } = PROTOCOL_ERRORS.take() {
//!     tracing::warn!(code = "bad_frame", suppressed, "protocol error; closing");
//! }
//! ```
//!
//! `suppressed` is an `Option`: tracing records the field only when it is
//! `Some`, so an ordinary line looks as it always did.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::metrics;

/// Length of one budget window.
const WINDOW: Duration = Duration::from_secs(1);

/// `protocol error; closing`.
pub static PROTOCOL_ERRORS: LogBudget = LogBudget::new(10);
/// `slow consumer cut off`.
pub static SLOW_CONSUMERS: LogBudget = LogBudget::new(10);
/// `handshake timeout` and `idle timeout`.
pub static TIMEOUTS: LogBudget = LogBudget::new(10);
/// `room and queue full; turned away`.
pub static TURNED_AWAY: LogBudget = LogBudget::new(10);
/// The chat log falling behind or failing, which repeats per batch.
pub static STORE: LogBudget = LogBudget::new(1);
/// A client's way through the room: `queued`, `joined the room`, `promoted
/// from the queue`, `left the room`, `left the queue`. Generous: these lines
/// are the record of who came and went, and a busy room writes many.
pub static MEMBERSHIP: LogBudget = LogBudget::new(500);

/// Whether one line is to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines of its kind were left out since the last
    /// one written (`None` when there were none).
    Write { suppressed: Option<u64> },
    /// Leave it out; it has been counted.
    LeaveOut,
}

/// At most `per_second` lines of one kind per second, process-wide.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_second` lines in each second.
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                started: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// Decides on one line now.
    pub fn take(&self) -> Verdict {
        let verdict = self.take_at(Instant::now());
        if verdict == Verdict::LeaveOut {
            metrics().log_lines_suppressed.increment(1);
        }
        verdict
    }

    fn take_at(&self, now: Instant) -> Verdict {
        // A short section, never held across anything that waits; a panic
        // inside cannot leave the counts inconsistent.
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= WINDOW)
        {
            window.started = Some(now);
            window.written = 0;
        }
        if window.written < self.per_second {
            window.written += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            Verdict::Write {
                suppressed: (suppressed > 0).then_some(suppressed),
            }
        } else {
            window.suppressed += 1;
            Verdict::LeaveOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_writes_its_budget_then_counts_and_the_next_reports() {
        let budget = LogBudget::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.take_at(start), Verdict::Write { suppressed: None });
        }
        for _ in 0..5 {
            assert_eq!(budget.take_at(start), Verdict::LeaveOut);
        }
        let later = start + Duration::from_millis(999);
        assert_eq!(budget.take_at(later), Verdict::LeaveOut);
        let next = start + WINDOW;
        assert_eq!(
            budget.take_at(next),
            Verdict::Write {
                suppressed: Some(6)
            }
        );
        assert_eq!(budget.take_at(next), Verdict::Write { suppressed: None });
    }
}
