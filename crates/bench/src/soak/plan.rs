//! What a simulated client does in one session, drawn at random before it
//! connects: misbehaviour before or after `hello`, names it tries, how long
//! it stays, how it leaves.

use std::time::Duration;

use super::Args;

/// What a session does before `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pre {
    Nothing,
    /// Says nothing: `handshake_timeout`.
    Silent,
    /// Half a length prefix, then closes.
    HalfFrame,
    /// A length over `max_frame_bytes`: `frame_too_large`.
    Oversized,
    /// A `say` first: `handshake_required`, then joins.
    SayFirst,
}

impl Pre {
    /// Its name in the report's tally of misbehaviour.
    pub(super) fn name(self) -> &'static str {
        match self {
            Pre::Nothing => "nothing",
            Pre::Silent => "pre_silent",
            Pre::HalfFrame => "pre_half_frame",
            Pre::Oversized => "pre_oversized",
            Pre::SayFirst => "pre_say_first",
        }
    }
}

/// What a member does once, at a random moment of its stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    Nothing,
    /// 60 messages at once: some are `rate_limited`.
    Flood,
    /// A payload that is not MessagePack: `bad_frame`.
    BadPayload,
    UnknownType,
    /// A `say` without text: `bad_request`.
    BadRequest,
    /// `hello` again: `bad_request`.
    SecondHello,
    TooLong,
    /// Stops reading for a while, on a small receive buffer, but pings
    /// every second to stay active: may be cut off as a slow consumer.
    StopReading(Duration),
    /// Asks `who` 10,000 times without reading the answers: cut off as a
    /// slow consumer once the lists pile up beyond the socket's buffers
    /// (megabytes on loopback).
    WhoFlood,
    /// Reads but neither talks nor answers pings: `idle_timeout`.
    Silent,
    /// Half a frame, then silence: `idle_timeout`.
    HalfFrame,
    Oversized,
    /// A zero-length frame: `bad_frame`, then closed.
    ZeroLength,
}

impl Act {
    pub(super) fn name(self) -> &'static str {
        match self {
            Act::Nothing => "nothing",
            Act::Flood => "flood",
            Act::BadPayload => "bad_payload",
            Act::UnknownType => "unknown_type",
            Act::BadRequest => "bad_request",
            Act::SecondHello => "second_hello",
            Act::TooLong => "too_long",
            Act::StopReading(_) => "stop_reading",
            Act::WhoFlood => "who_flood",
            Act::Silent => "silent",
            Act::HalfFrame => "half_frame",
            Act::Oversized => "oversized",
            Act::ZeroLength => "zero_length",
        }
    }
}

/// How a session ends when nothing ended it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Bye,
    Close,
    /// Closes with a reset (SO_LINGER 0).
    Reset,
}

/// Everything a session will do, drawn before it connects.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) pre: Pre,
    pub(super) bad_name: bool,
    pub(super) duplicate: bool,
    /// How long to wait in the queue before giving up (none: until let in).
    pub(super) patience: Option<Duration>,
    pub(super) say_while_queued: bool,
    pub(super) talker: bool,
    pub(super) stay: Duration,
    pub(super) act: Act,
    pub(super) act_at: Duration,
    pub(super) end: End,
    pub(super) pause: Duration,
}

pub(super) fn exponential(rng: &mut fastrand::Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.f64()).ln()
}

fn uniform(rng: &mut fastrand::Rng, from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(from + rng.f64() * (to - from))
}

impl Plan {
    pub(super) fn draw(rng: &mut fastrand::Rng, args: &Args) -> Self {
        let mean_stay = args.stay.as_secs_f64().max(0.1);
        let stay = Duration::from_secs_f64(exponential(rng, mean_stay).clamp(0.5, 6.0 * mean_stay));
        let misbehave = rng.f64() < args.misbehave;
        let pre = if misbehave && rng.f64() < 0.25 {
            [Pre::Silent, Pre::HalfFrame, Pre::Oversized, Pre::SayFirst][rng.usize(..4)]
        } else {
            Pre::Nothing
        };
        let act = if misbehave && matches!(pre, Pre::Nothing | Pre::SayFirst) {
            match rng.usize(..12) {
                0 => Act::Flood,
                1 => Act::BadPayload,
                2 => Act::UnknownType,
                3 => Act::BadRequest,
                4 => Act::SecondHello,
                5 => Act::TooLong,
                6 | 7 => Act::StopReading(uniform(rng, 1.0, 20.0)),
                8 => Act::Silent,
                9 => Act::HalfFrame,
                10 => Act::WhoFlood,
                _ => {
                    if rng.bool() {
                        Act::Oversized
                    } else {
                        Act::ZeroLength
                    }
                }
            }
        } else {
            Act::Nothing
        };
        Plan {
            pre,
            bad_name: rng.f64() < 0.04,
            duplicate: rng.f64() < 0.04,
            patience: rng.bool().then(|| uniform(rng, 1.0, 30.0)),
            say_while_queued: rng.f64() < 0.1,
            talker: rng.f64() < 0.7,
            stay,
            act,
            act_at: stay.mul_f64(rng.f64()),
            end: match rng.usize(..10) {
                0..=5 => End::Bye,
                6 | 7 => End::Close,
                _ => End::Reset,
            },
            pause: if rng.f64() < 0.7 {
                uniform(rng, 0.0, 1.0)
            } else {
                uniform(rng, 1.0, 5.0)
            },
        }
    }

    /// The observer's: enters, stays silent and behaves until the end.
    pub(super) fn observer() -> Self {
        Plan {
            pre: Pre::Nothing,
            bad_name: false,
            duplicate: false,
            patience: None,
            say_while_queued: false,
            talker: false,
            stay: Duration::MAX,
            act: Act::Nothing,
            act_at: Duration::ZERO,
            end: End::Bye,
            pause: Duration::ZERO,
        }
    }
}
