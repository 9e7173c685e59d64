use super::*;

fn file(text: &str) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    c.apply_toml(text, Path::new("test.toml"))?;
    c.validate()?;
    Ok(c)
}

#[test]
fn defaults_match_the_contract() {
    let c = Config::default();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
    assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9878");
    assert_eq!(
        (c.max_active, c.max_waiting, c.outbox_limit),
        (1000, 10_000, 1024)
    );
    assert_eq!((c.max_frame_bytes, c.max_message_bytes), (65_536, 4096));
    assert_eq!(c.rate_limit, 20.0);
    assert_eq!(c.rate_burst, 40);
    c.validate().unwrap();
}

#[test]
fn by_default_one_host_is_limited_and_a_nat_fits() {
    let c = Config::default();
    assert_eq!(c.max_connections_per_ip, 256);
    assert_eq!(
        (c.connection_rate_per_ip, c.connection_burst_per_ip),
        (10.0, 100)
    );
    // A NAT of a few hundred people fits under the per-address cap; one
    // host holds at most a small share of the places.
    assert!(c.max_connections_per_ip * 40 < c.connection_cap());
}

#[test]
fn rates_take_zero_as_off_and_nothing_slower_than_one_per_1000_s() {
    let c = file("connection_rate_per_ip = 0").unwrap();
    assert_eq!(c.connection_rate_per_ip, 0.0);
    for bad in ["-1", "0.0001", "\"fast\""] {
        let e = file(&format!("connection_rate_per_ip = {bad}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`connection_rate_per_ip`"), "{e}");
    }
}

#[test]
fn entries_into_the_room_are_paced_by_default() {
    let c = Config::default();
    assert_eq!((c.join_rate, c.join_burst), (100.0, 100));
    assert_eq!(file("join_rate = 0").unwrap().join_rate, 0.0);
    let e = file("join_rate = -1").unwrap_err().to_string();
    assert!(e.contains("`join_rate`"), "{e}");
}

#[test]
fn every_request_is_metered_and_request_rate_must_allow_the_say_rate() {
    let c = Config::default();
    assert_eq!((c.request_rate, c.request_burst), (100.0, 200));
    assert_eq!((c.who_rate, c.who_burst), (1.0, 5));
    assert_eq!(file("who_rate = 0.5").unwrap().who_rate, 0.5);
    let e = file("rate_limit = 500").unwrap_err().to_string();
    assert!(
        e.contains("request_rate") && e.contains("rate_limit"),
        "{e}"
    );
    file("rate_limit = 500\nrequest_rate = 0").unwrap();
    file("rate_limit = 500\nrate_burst = 500\nrequest_rate = 500\nrequest_burst = 500").unwrap();
}

#[test]
fn file_values_are_typed() {
    let c = file(
        "max_active = 3\nhandshake_timeout = \"250ms\"\nrate_limit = 2.5\nslow_consumer = \"skip\"",
    )
    .unwrap();
    assert_eq!(c.max_active, 3);
    assert_eq!(c.handshake_timeout, Duration::from_millis(250));
    assert_eq!(c.rate_limit, 2.5);
    assert_eq!(c.slow_consumer, SlowConsumerPolicy::Skip);
    assert_eq!(file("rate_limit = 5").unwrap().rate_limit, 5.0);
}

#[test]
fn errors_name_the_key() {
    let e = file("max_active = \"lots\"").unwrap_err().to_string();
    assert!(e.contains("`max_active`") && e.contains("lots"), "{e}");
    let e = file("colour = 1").unwrap_err().to_string();
    assert!(e.contains("`colour`"), "{e}");
    let e = file("idle_timeout = \"10s\"").unwrap_err().to_string();
    assert!(e.contains("idle_timeout"), "{e}");
    let e = file("write_timeout = \"0s\"").unwrap_err().to_string();
    assert!(e.contains("write_timeout"), "{e}");
}

#[test]
fn values_that_could_panic_or_mean_nothing_are_refused() {
    for (text, key) in [
        ("rate_limit = 1e-30", "rate_limit"),
        ("rate_limit = 0.0009", "rate_limit"),
        ("rate_limit = 2e9", "rate_limit"),
        ("rate_limit = nan", "rate_limit"),
        ("rate_limit = inf", "rate_limit"),
        ("handshake_timeout = \"1ns\"", "handshake_timeout"),
        ("idle_timeout = \"999us\"", "idle_timeout"),
        ("write_timeout = \"1000years\"", "write_timeout"),
        ("shutdown_grace = \"25h\"", "shutdown_grace"),
        ("max_active = 9223372036854775807", "max_active"),
        ("max_waiting = 10000001", "max_waiting"),
        ("max_connections = 2305843009213693951", "max_connections"),
        (
            "max_connections_per_ip = 100000001",
            "max_connections_per_ip",
        ),
        ("outbox_limit = 100000001", "outbox_limit"),
        ("max_outbox_bytes = 1073741825", "max_outbox_bytes"),
        (
            "max_message_bytes = 9223372036854775807",
            "max_message_bytes",
        ),
        ("rate_burst = 1000000001", "rate_burst"),
        ("rate_limit = 0.001\nrate_burst = 40000", "rate_burst"),
    ] {
        let e = file(text).unwrap_err().to_string();
        assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
    }
    let mut c = Config::default();
    let e = c
        .set(
            "max_active",
            Raw::Text("18446744073709551615"),
            &Source::Flag("--max-active".into()),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("18446744073709551615") && e.contains("10000000"),
        "{e}"
    );
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let c = file(
        "rate_limit = 0.001\nrate_burst = 31535\nhandshake_timeout = \"1ms\"\n\
             heartbeat_interval = \"23h\"\nidle_timeout = \"1day\"\nshutdown_grace = \"24h\"\n\
             max_active = 10000000\nmax_waiting = 10000000\noutbox_limit = 100000000\n\
             max_outbox_bytes = 1073741824\nmax_connections_per_ip = 100000000\n\
             request_rate = 0",
    )
    .unwrap();
    assert_eq!(c.idle_timeout, MAX_DURATION);
    assert_eq!(c.connection_cap(), 20_001_000);
    assert_eq!(
        file("rate_limit = 1e9\nrate_burst = 1000000000\nrequest_rate = 0")
            .unwrap()
            .rate_limit,
        1e9
    );
}

#[test]
fn env_uses_upper_cased_keys() {
    let mut c = Config::default();
    c.apply_env(|v| (v == "ANTEROOM_MAX_WAITING").then(|| "7".to_string()))
        .unwrap();
    assert_eq!(c.max_waiting, 7);
    let e = c
        .apply_env(|v| (v == "ANTEROOM_RATE_BURST").then(|| "0".to_string()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`rate_burst`") && e.contains("ANTEROOM_RATE_BURST"),
        "{e}"
    );
}

#[test]
fn shipped_config_file_is_the_generated_one() {
    let text = include_str!("../../../../config/anteroom.toml");
    assert_eq!(
        text,
        sample_file(),
        "config/anteroom.toml differs from the declaration; regenerate it with \
             `ANTEROOM_REGENERATE=1 cargo test -p anteroom docs`"
    );
    assert_eq!(file(text).unwrap(), Config::default());
}

#[test]
fn every_key_is_settable_and_round_trips_its_default() {
    for key in KEYS {
        let mut c = Config::default();
        let table: toml::Table = format!("v = {}", key.default).parse().unwrap();
        c.set(key.name, Raw::Toml(&table["v"]), &Source::Flag(key.flag()))
            .unwrap();
        assert_eq!(c, Config::default(), "{}", key.name);
    }
    let names: std::collections::HashSet<_> = KEYS.iter().map(|k| k.name).collect();
    assert_eq!(names.len(), KEYS.len(), "a key is declared twice");
}

#[test]
fn a_cluster_defaults_to_a_memory_log_and_refuses_sqlite() {
    let single = file("").unwrap();
    assert_eq!(single.store_kind(), StoreKind::Sqlite);
    let cluster = file("cluster_redis = \"redis://127.0.0.1:6379\"").unwrap();
    assert_eq!(cluster.store_kind(), StoreKind::Memory);
    let shared =
        file("cluster_redis = \"redis://127.0.0.1:6379\"\nstore = \"postgres://u@db/chat\"")
            .unwrap();
    assert!(matches!(shared.store_kind(), StoreKind::Postgres(_)));
    let error = file("cluster_redis = \"redis://127.0.0.1:6379\"\nstore = \"sqlite\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("store"), "{error}");
    let error = file("cluster_redis = \"redis://h\"\ncluster_lease = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("cluster_lease"), "{error}");
}

#[test]
fn cluster_keys_refuse_what_the_cluster_cannot_use() {
    for bad in [
        "cluster_redis = \"http://127.0.0.1\"",
        "cluster_redis = \"127.0.0.1:6379\"",
        "node_id = \"a|b\"",
        "node_id = \"a:b\"",
        "node_id = \"sp ace\"",
    ] {
        assert!(file(bad).is_err(), "{bad}");
    }
    let c = file("node_id = \"node-1.eu_west\"").unwrap();
    assert_eq!(c.node_id, "node-1.eu_west");
}
