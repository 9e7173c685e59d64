//! Log output that never stalls the runtime.
//!
//! A line is formatted on the thread that logs it and handed to a bounded
//! queue; one thread of its own writes the queue to standard output. Were
//! the runtime's threads to write themselves, a slow or unread standard
//! output (a full pipe, a stalled log collector) would block them in
//! `write`, and with them admission and every connection they serve. When
//! the queue is full, a new line is dropped instead of waited for, and
//! counted in `anteroom_log_lines_dropped_total`.
//!
//! The start-up lines (`listening on ADDR`, `metrics on ADDR`) are the
//! first ones queued, so they are never the ones dropped. At exit
//! [`finish`] gives the writer a moment to write what is still queued, the
//! last lines of a shutdown, but never waits on an output that takes
//! nothing.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds: a burst of a few seconds at the worst rates the
/// log budgets allow, a few megabytes at most.
const BUFFERED_LINES: usize = 8192;

/// Longest wait at exit for the queue to be written out. A standard output
/// that takes lines at all takes a full queue in milliseconds; the wait
/// must fit in the margin the shutdown leaves inside `shutdown_grace`.
const FLUSH_LIMIT: Duration = Duration::from_millis(100);

/// How far the writer has got, to know at exit whether the queue is empty.
#[derive(Debug, Default)]
struct Progress {
    /// Lines handed to the queue, dropped ones included.
    queued: AtomicU64,
    /// Lines the writer thread has finished with (written, or failed).
    written: AtomicU64,
}

/// What [`finish`] needs: the writer thread's guard and the counts.
struct Output {
    guard: WorkerGuard,
    progress: Arc<Progress>,
    dropped: ErrorCounter,
}

static OUTPUT: Mutex<Option<Output>> = Mutex::new(None);

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber, writing through the queue. Filtered by
/// `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let progress = Arc::new(Progress::default());
    let stdout = Counted {
        inner: std::io::stdout(),
        progress: progress.clone(),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("anteroom-log")
        .finish(stdout);
    let dropped = writer.error_counter();
    let source = dropped.clone();
    anteroom_broker::telemetry::count_dropped_log_lines(move || source.dropped_lines() as u64);
    *OUTPUT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Output {
        guard,
        progress: progress.clone(),
        dropped,
    });
    let writer = Queue { writer, progress };

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Lets the writer finish what is queued, within [`FLUSH_LIMIT`]; call once,
/// just before the process exits.
pub fn finish() {
    let Some(output) = OUTPUT.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let drained = || {
        let written = output.progress.written.load(Ordering::Acquire);
        let dropped = output.dropped.dropped_lines() as u64;
        written + dropped >= output.progress.queued.load(Ordering::Acquire)
    };
    let deadline = Instant::now() + FLUSH_LIMIT;
    while !drained() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if drained() {
        // Tells the writer to stop after the queue and waits for it.
        drop(output.guard);
    } else {
        // The output takes nothing: the guard would wait for it, and, with
        // the queue full, print its complaint to that same blocked output.
        // What is queued is lost either way.
        std::mem::forget(output.guard);
    }
}

/// The queue's writing side, counting the lines handed to it.
#[derive(Clone)]
struct Queue {
    writer: NonBlocking,
    progress: Arc<Progress>,
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Queue;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Write for Queue {
    /// One call per line: the formatter hands each event over whole.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// The writer thread's output, counting the lines it is done with.
struct Counted<W> {
    inner: W,
    progress: Arc<Progress>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    /// The writer thread writes each queued line with one call.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let result = self.inner.write_all(buf);
        self.progress.written.fetch_add(1, Ordering::AcqRel);
        result
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
