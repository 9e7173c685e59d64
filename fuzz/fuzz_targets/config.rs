//! The configuration: arbitrary TOML text, environment variables and flags
//! through the parsers, then `Config::validate`, then everything the server
//! builds from an accepted configuration.
//!
//! Input: the TOML text, then any number of settings, each after a NUL byte:
//! one byte choosing the key (its top bit: an `ANTEROOM_*` variable rather
//! than a flag), then the value's text.
//!
//! Nothing may panic: not the parsers, and not the structures built from a
//! configuration they accepted (the rate limiter, the connection caps, an
//! outbox, the frame codec, the room's components, every deadline).

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use anteroom_broker::bus::Bus;
use anteroom_broker::config::{Config, KEYS, Raw, Source};
use anteroom_broker::conn::outbox::{Outbox, Push};
use anteroom_broker::conn::shards::Shards;
use anteroom_broker::gateway::Gateway;
use anteroom_broker::room::admission::Admission;
use anteroom_broker::room::delivery::RoomDelivery;
use anteroom_broker::room::roster::Roster;
use bytes::Bytes;
use governor::DefaultDirectRateLimiter;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// Applies the input as the binary would: the file, then the variables,
/// then the flags. Errors are kept going past: every value set went through
/// its parser, which is all a configuration relies on.
fn load(data: &[u8]) -> Config {
    let mut parts = data.split(|b| *b == 0);
    let mut config = Config::default();
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let _ = config.apply_toml(&text, Path::new("fuzz.toml"));
    for part in parts {
        let Some((&selector, value)) = part.split_first() else {
            continue;
        };
        let key = &KEYS[usize::from(selector & 0x7f) % KEYS.len()];
        let value = String::from_utf8_lossy(value);
        if selector & 0x80 != 0 {
            let var = key.env_var();
            let _ = config.apply_env(|v| (v == var).then(|| value.to_string()));
        } else {
            let _ = config.set(key.name, Raw::Text(&value), &Source::Flag(key.flag()));
        }
    }
    config
}

/// Builds what the server builds from `config`, the way it builds it.
fn exercise(config: &Config) {
    // Every deadline the server computes is `now` plus a configured duration.
    let durations = [
        config.handshake_timeout,
        config.heartbeat_interval,
        config.idle_timeout,
        config.write_timeout,
        config.shutdown_grace,
    ];
    for d in durations {
        let _ = std::time::Instant::now() + d;
        let _ = tokio::time::Instant::now() + d;
        let _ = tokio::time::Instant::now() + d + d;
    }
    let _ = config
        .shutdown_grace
        .saturating_sub(std::time::Duration::from_millis(400).min(config.shutdown_grace / 5));

    // The gateway: the rate limiter's quota and the connection caps.
    let (bus, _subscriptions) = Bus::new();
    let gateway = Gateway::new(
        config.clone(),
        bus,
        Arc::new(Roster::new()),
        SHARDS.1.clone(),
        anteroom_broker::chat_log::Chat::memory(config),
        Arc::new(anteroom_broker::room::held::HeldPlaces::new()),
        CancellationToken::new(),
    );
    let limiter = DefaultDirectRateLimiter::direct(gateway.quota);
    for _ in 0..3 {
        let _ = limiter.check();
    }
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let first = gateway.limits.admit(ip);
    let second = gateway.limits.admit(ip);
    assert!(first.is_ok(), "the caps refuse the first connection");
    drop((first, second));

    // A connection's outbox and the frame codec.
    let outbox = Outbox::with_byte_limit(config.outbox_limit, config.max_outbox_bytes);
    for n in 0..4u8 {
        let frame = Bytes::from(vec![n; 64]);
        assert_ne!(outbox.push_event(frame.clone(), None, false), Push::Closed);
        assert_ne!(outbox.push_reply(frame), Push::Closed);
    }
    outbox.close(&[Bytes::from_static(b"bye")], true);
    let mut codec = anteroom_protocol::frame_codec(config.max_frame_bytes);
    let mut input = bytes::BytesMut::from(&b"\x00\x00\x00\x01\x80"[..]);
    assert!(codec.decode(&mut input).is_ok());

    // The room's components.
    let skip = config.slow_consumer == anteroom_broker::config::SlowConsumerPolicy::Skip;
    let _ = RoomDelivery::new(config.max_active, skip);
    let mut admission = Admission::new(config.max_active, config.max_waiting);
    for key in 0..4u32 {
        let _ = admission.arrive(key);
    }
    let _ = config.connection_cap();
}

/// The writer shards every gateway needs, started once: the gateway is only
/// built here, never run, so they never write.
static SHARDS: std::sync::LazyLock<(tokio::runtime::Runtime, Arc<Shards>)> =
    std::sync::LazyLock::new(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime for the shards");
        let shards = runtime.block_on(async { Shards::start(1) });
        (runtime, shards)
    });

fuzz_target!(|data: &[u8]| {
    let config = load(data);
    if config.validate().is_ok() {
        exercise(&config);
    }
});
