//! Every metric the broker exports, named in one place and registered at zero
//! on start-up so dashboards see each series before anything happens.
//!
//! Components hold the pre-registered handles in [`Metrics`]; the hot path
//! never formats a name or looks up a label set.

pub mod http;
mod latency;
pub mod log_budget;

use std::sync::OnceLock;

pub use latency::{LatencyHistogram, LocalLatency};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Buckets for time spent waiting in the queue: from 10 ms to an hour.
/// Buckets of `anteroom_store_commit_seconds`: from an in-memory commit to
/// a slow disk's fsync.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Reasons a request is refused, each a label value of `anteroom_rejected_total`.
pub const REJECT_REASONS: &[&str] = &[
    "server_full",
    "name_taken",
    "name_invalid",
    "rate_limited",
    "protocol_error",
    "bad_request",
    "not_admitted",
    "handshake_required",
    "message_too_long",
    "unknown_type",
    "bad_frame",
    "connection_rate",
    "who_rate_limited",
    "request_flood",
    "no_such_user",
    "whisper_unsupported",
    "unavailable",
];

/// Transports a connection can arrive on, each a label value of
/// `anteroom_connections_accepted_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Quic,
    WebSocket,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 4] = [Self::Tcp, Self::Tls, Self::Quic, Self::WebSocket];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Quic => "quic",
            Self::WebSocket => "ws",
        }
    }
}

/// Tasks whose panics are contained and counted, each a label value of
/// `anteroom_panics_total`: the per-connection tasks, and the supervised
/// components whose panic stops the server.
pub const PANIC_TASKS: &[&str] = &[
    "session",
    "writer",
    "admission",
    "room_delivery",
    "roster",
    "waitlist",
    "chat_log",
    "cluster",
    "http",
    "upkeep",
];

/// The `result` label values of `anteroom_uploads_total`.
pub const UPLOAD_RESULTS: &[&str] = &[
    "stored",
    "too_large",
    "unauthorized",
    "rate_limited",
    "bad_request",
    "failed",
];

/// Handles to every series, registered once per process.
pub struct Metrics {
    pub conn_handshake: Gauge,
    pub conn_active: Gauge,
    pub conn_waiting: Gauge,
    pub room_capacity: Gauge,
    pub published_room: Counter,
    pub published_presence: Counter,
    pub published_queue: Counter,
    pub lag_room_delivery: Gauge,
    pub lag_roster: Gauge,
    pub lag_waitlist: Gauge,
    pub lag_admission: Gauge,
    pub dropped_room_delivery_slow: Counter,
    pub dropped_waitlist_slow: Counter,
    pub delivered: Counter,
    /// Recorded per delivered frame, so it is not a `metrics` histogram;
    /// see [`LatencyHistogram`].
    pub delivery_latency: LatencyHistogram,
    pub queue_wait: Histogram,
    pub promotions: Counter,
    pub queue_abandoned: Counter,
    /// Log lines left out because their kind's budget was spent
    /// ([`log_budget`]).
    pub log_lines_suppressed: Counter,
    /// Log lines the program's log writer dropped because its output fell
    /// behind; read from [`count_dropped_log_lines`]'s source at each render.
    pub log_lines_dropped: Counter,
    pub joins_paced: Counter,
    pub lag_chat_log: Gauge,
    /// Messages the chat log could not commit, as a component's drops.
    pub dropped_chat_log: Counter,
    pub store_written: Counter,
    pub store_dropped: Counter,
    pub store_commit_seconds: Histogram,
    pub whispers: Counter,
    pub held_seat: Gauge,
    pub held_queue: Gauge,
    pub resumed_seat: Counter,
    pub resumed_queue: Counter,
    pub queue_estimated_wait: Gauge,
    pub cluster_nodes: Gauge,
    pub presence_batch_changes: Histogram,
    uploads: Vec<(&'static str, Counter)>,
    rejected: Vec<(&'static str, Counter)>,
    /// Indexed like [`Transport::ALL`].
    accepted: [Counter; 4],
    panics: Vec<(&'static str, Counter)>,
}

impl Metrics {
    fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            "anteroom_connections",
            "Open connections by state (handshake, waiting, active)."
        );
        describe_gauge!(
            "anteroom_room_capacity",
            "Configured room capacity (max_active)."
        );
        describe_counter!(
            "anteroom_bus_published_total",
            "Events published on the internal bus, by topic."
        );
        describe_gauge!(
            "anteroom_subscriber_lag",
            "Events a bus component is behind: events left on its topic (room_delivery adds the deepest member outbox)."
        );
        describe_counter!(
            "anteroom_subscribers_dropped_total",
            "Subscribers a component dropped, by component and reason."
        );
        describe_counter!(
            "anteroom_messages_delivered_total",
            "Room event frames written to members."
        );
        describe_histogram!(
            "anteroom_queue_wait_seconds",
            Unit::Seconds,
            "Time from being queued to being welcomed into the room."
        );
        describe_counter!(
            "anteroom_promotions_total",
            "Queued clients promoted into the room."
        );
        describe_counter!(
            "anteroom_queue_abandoned_total",
            "Queued clients that left before promotion."
        );
        describe_counter!(
            "anteroom_joins_paced_total",
            "Entries into the room that waited for join_rate."
        );
        describe_counter!("anteroom_rejected_total", "Requests refused, by reason.");
        describe_counter!(
            "anteroom_store_written_total",
            "Messages committed to the chat log."
        );
        describe_counter!(
            "anteroom_store_dropped_total",
            "Messages that could not be committed to the chat log (the store was down or too far behind)."
        );
        describe_histogram!(
            "anteroom_store_commit_seconds",
            Unit::Seconds,
            "Time to commit one batch of the chat log."
        );
        describe_counter!("anteroom_whispers_total", "Direct messages delivered.");
        describe_counter!(
            "anteroom_resumed_total",
            "Held places taken back by a resuming client, by place (seat, queue)."
        );
        describe_gauge!(
            "anteroom_held",
            "Places held for dropped clients now, by place (seat, queue)."
        );
        describe_gauge!(
            "anteroom_queue_estimated_wait_seconds",
            "The eta_s the last client in the queue would be told (0 while there is no estimate)."
        );
        describe_gauge!(
            "anteroom_cluster_nodes",
            "Live nodes in the cluster (1 when single)."
        );
        describe_histogram!(
            "anteroom_presence_batch_changes",
            "Joins and leaves in each presence frame sent to presence_batch members."
        );
        describe_counter!(
            "anteroom_uploads_total",
            "Upload requests, by result (stored, too_large, unauthorized, rate_limited, bad_request; failed when the server could not store a file)."
        );
        describe_counter!(
            "anteroom_connections_accepted_total",
            "Connections accepted, by transport; a TLS or QUIC connection counts once its handshake completes."
        );
        describe_counter!(
            "anteroom_panics_total",
            "Tasks that panicked, by task: a session or writer panic closes its connection, a component panic stops the server."
        );
        describe_counter!(
            "anteroom_log_lines_dropped_total",
            "Log lines dropped because standard output did not take them fast enough."
        );
        describe_counter!(
            "anteroom_log_lines_suppressed_total",
            "Log lines about clients left out because their kind's budget per second was spent."
        );
    }

    fn register() -> Self {
        Self::describe();
        let conns = |state: &'static str| gauge!("anteroom_connections", "state" => state);
        let published =
            |topic: &'static str| counter!("anteroom_bus_published_total", "topic" => topic);
        let lag =
            |component: &'static str| gauge!("anteroom_subscriber_lag", "component" => component);
        let dropped = |component: &'static str| counter!("anteroom_subscribers_dropped_total", "component" => component, "reason" => "slow_consumer");
        let m = Metrics {
            conn_handshake: conns("handshake"),
            conn_active: conns("active"),
            conn_waiting: conns("waiting"),
            room_capacity: gauge!("anteroom_room_capacity"),
            published_room: published("room"),
            published_presence: published("presence"),
            published_queue: published("queue"),
            lag_room_delivery: lag("room_delivery"),
            lag_roster: lag("roster"),
            lag_waitlist: lag("waitlist"),
            lag_admission: lag("admission"),
            dropped_room_delivery_slow: dropped("room_delivery"),
            dropped_waitlist_slow: dropped("waitlist"),
            delivered: counter!("anteroom_messages_delivered_total"),
            delivery_latency: LatencyHistogram::new(
                "anteroom_delivery_latency_seconds",
                "Time from a say being read to its message frame being written to a member.",
            ),
            queue_wait: histogram!("anteroom_queue_wait_seconds"),
            promotions: counter!("anteroom_promotions_total"),
            queue_abandoned: counter!("anteroom_queue_abandoned_total"),
            log_lines_suppressed: counter!("anteroom_log_lines_suppressed_total"),
            log_lines_dropped: counter!("anteroom_log_lines_dropped_total"),
            joins_paced: counter!("anteroom_joins_paced_total"),
            lag_chat_log: lag("chat_log"),
            dropped_chat_log: counter!("anteroom_subscribers_dropped_total", "component" => "chat_log", "reason" => "store_behind"),
            store_written: counter!("anteroom_store_written_total"),
            store_dropped: counter!("anteroom_store_dropped_total"),
            store_commit_seconds: histogram!("anteroom_store_commit_seconds"),
            whispers: counter!("anteroom_whispers_total"),
            held_seat: gauge!("anteroom_held", "place" => "seat"),
            held_queue: gauge!("anteroom_held", "place" => "queue"),
            resumed_seat: counter!("anteroom_resumed_total", "place" => "seat"),
            resumed_queue: counter!("anteroom_resumed_total", "place" => "queue"),
            queue_estimated_wait: gauge!("anteroom_queue_estimated_wait_seconds"),
            cluster_nodes: gauge!("anteroom_cluster_nodes"),
            presence_batch_changes: histogram!("anteroom_presence_batch_changes"),
            uploads: UPLOAD_RESULTS
                .iter()
                .map(|r| (*r, counter!("anteroom_uploads_total", "result" => *r)))
                .collect(),
            rejected: REJECT_REASONS
                .iter()
                .map(|r| (*r, counter!("anteroom_rejected_total", "reason" => *r)))
                .collect(),
            accepted: Transport::ALL
                .map(|t| counter!("anteroom_connections_accepted_total", "transport" => t.label())),
            panics: PANIC_TASKS
                .iter()
                .map(|t| (*t, counter!("anteroom_panics_total", "task" => *t)))
                .collect(),
        };
        // Touch every series so it is rendered at zero from start-up.
        for g in [
            &m.conn_handshake,
            &m.conn_active,
            &m.conn_waiting,
            &m.room_capacity,
            &m.held_seat,
            &m.held_queue,
            &m.queue_estimated_wait,
        ] {
            g.increment(0.0);
        }
        m.cluster_nodes.set(1.0);
        for g in [
            &m.lag_room_delivery,
            &m.lag_roster,
            &m.lag_waitlist,
            &m.lag_admission,
            &m.lag_chat_log,
        ] {
            g.set(0.0);
        }
        for c in [
            &m.published_room,
            &m.published_presence,
            &m.published_queue,
            &m.dropped_room_delivery_slow,
            &m.dropped_waitlist_slow,
            &m.delivered,
            &m.promotions,
            &m.queue_abandoned,
            &m.log_lines_suppressed,
            &m.log_lines_dropped,
            &m.joins_paced,
            &m.dropped_chat_log,
            &m.store_written,
            &m.store_dropped,
            &m.whispers,
            &m.resumed_seat,
            &m.resumed_queue,
        ] {
            c.increment(0);
        }
        for (_, c) in m.rejected.iter().chain(&m.panics).chain(&m.uploads) {
            c.increment(0);
        }
        for c in &m.accepted {
            c.increment(0);
        }
        m
    }

    /// Counts one panic of `task`, one of [`PANIC_TASKS`].
    pub fn panicked(&self, task: &str) {
        if let Some((_, c)) = self.panics.iter().find(|(t, _)| *t == task) {
            c.increment(1);
        }
    }

    /// Counts one connection accepted on `transport` (for TLS and QUIC,
    /// once its handshake is complete).
    pub fn accepted(&self, transport: Transport) {
        self.accepted[transport as usize].increment(1);
    }

    /// Counts one refusal. `reason` is one of [`REJECT_REASONS`].
    pub fn rejected(&self, reason: &str) {
        if let Some((_, c)) = self.rejected.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    /// Counts one upload request by its result, one of [`UPLOAD_RESULTS`].
    pub fn upload(&self, result: &str) {
        if let Some((_, c)) = self.uploads.iter().find(|(r, _)| *r == result) {
            c.increment(1);
        }
    }
}

/// Bucket bounds of `anteroom_presence_batch_changes`: from a lone join to
/// a reconnect storm.
const PRESENCE_BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

struct Telemetry {
    handle: PrometheusHandle,
    metrics: Metrics,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

fn telemetry() -> &'static Telemetry {
    TELEMETRY.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("anteroom_queue_wait_seconds".into()),
                QUEUE_WAIT_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "anteroom_store_commit_seconds".into(),
                    ),
                    COMMIT_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "anteroom_presence_batch_changes".into(),
                    ),
                    PRESENCE_BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are non-empty constants");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // A process has one global recorder; a second server in the same
        // process (as in tests) shares it.
        let _ = metrics::set_global_recorder(recorder);
        Telemetry {
            handle,
            metrics: Metrics::register(),
        }
    })
}

/// The process-wide metric handles, installing the recorder on first use.
pub fn metrics() -> &'static Metrics {
    &telemetry().metrics
}

/// Where the count of dropped log lines comes from, if anywhere.
type DroppedLines = Box<dyn Fn() -> u64 + Send + Sync>;

static DROPPED_LOG_LINES: OnceLock<DroppedLines> = OnceLock::new();

/// Names where `anteroom_log_lines_dropped_total` comes from: the program
/// owns the log output and counts the lines its writer drops (the broker
/// only logs); each render reads the count. The first source set is kept.
pub fn count_dropped_log_lines(source: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(source));
}

/// Renders every series in the Prometheus text format.
pub fn render() -> String {
    let telemetry = telemetry();
    if let Some(source) = DROPPED_LOG_LINES.get() {
        telemetry.metrics.log_lines_dropped.absolute(source());
    }
    let mut out = telemetry.handle.render();
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    telemetry.metrics.delivery_latency.render(&mut out);
    out
}

/// Drains histogram samples into their buckets; call periodically so that
/// memory stays bounded between scrapes.
pub fn upkeep() {
    telemetry().handle.run_upkeep();
}
