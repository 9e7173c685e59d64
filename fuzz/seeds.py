#!/usr/bin/env python3
"""Writes the seed corpus under corpus/<target>/: valid and nearly valid frames.

Run from anywhere: python3 fuzz/seeds.py (needs the msgpack package). The
seeds are committed; rerunning rewrites them identically.
"""

import pathlib
import struct

import msgpack

HERE = pathlib.Path(__file__).resolve().parent


def pack(value):
    return msgpack.packb(value, use_bin_type=True)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


# Frame payloads a client may send, good and bad.
PAYLOADS = {
    "hello": pack({"type": "hello", "name": "ann"}),
    "hello_padded": pack({"type": "hello", "name": "  Zoë 🦀\t"}),
    "hello_long_name": pack({"type": "hello", "name": "é" * 33}),
    "hello_control": pack({"type": "hello", "name": "a\x07b"}),
    "hello_blank": pack({"type": "hello", "name": "   "}),
    "hello_name_int": pack({"type": "hello", "name": 7}),
    "hello_name_bad_utf8": b"\x82\xa4type\xa5hello\xa4name\xa2\xc3\x28",
    "say": pack({"type": "say", "text": "hello ann 👋"}),
    "say_extra_keys": pack({"type": "say", "text": "hi", "colour": "blue", 1: 2}),
    "say_empty": pack({"type": "say", "text": ""}),
    "say_missing_text": pack({"type": "say"}),
    "say_text_bin": pack({"type": "say", "text": b"bytes"}),
    "who": pack({"type": "who"}),
    "ping": pack({"type": "ping"}),
    "ping_id": pack({"type": "ping", "id": 42}),
    "ping_id_nil": pack({"type": "ping", "id": None}),
    "ping_id_u64": pack({"type": "ping", "id": 2**64 - 1}),
    "ping_id_negative": pack({"type": "ping", "id": -(2**63)}),
    "ping_id_string": pack({"type": "ping", "id": "x"}),
    "pong": pack({"type": "pong", "id": 1}),
    "pong_no_id": pack({"type": "pong"}),
    "bye": pack({"type": "bye"}),
    "unknown_type": pack({"type": "dance"}),
    "type_int": pack({"type": 1}),
    "type_bin": pack({"type": b"who"}),
    "no_type": pack({"name": "ann"}),
    "not_a_map": pack(["hello", "ann"]),
    "scalar": pack(3),
    "nil": pack(None),
    "empty_map": pack({}),
    "trailing_byte": pack({"type": "who"}) + b"\xc0",
    "truncated_map": pack({"type": "hello", "name": "ann"})[:-2],
    "reserved_marker": b"\xc1",
    "nested_arrays": pack({"type": "who", "x": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}),
    "nested_deep": b"\x91" * 200 + b"\xc0",
    "map_announces_huge": b"\xdf\xff\xff\xff\xff",
    "str_announces_huge": b"\x81\xa4type\xdb\xff\xff\xff\xff",
}

# Whole client streams: frames one after the other, then oddities.
STREAMS = {
    "hello_say_who_bye": b"".join(
        frame(PAYLOADS[k]) for k in ["hello", "say", "who", "ping_id", "pong", "bye"]
    ),
    "say_before_hello": frame(PAYLOADS["say"]) + frame(PAYLOADS["hello"]),
    "hello_twice": frame(PAYLOADS["hello"]) * 2 + frame(PAYLOADS["who"]),
    "errors_then_hello": b"".join(
        frame(PAYLOADS[k])
        for k in ["unknown_type", "not_a_map", "say_missing_text", "hello_control", "hello"]
    ),
    "flood_of_says": frame(PAYLOADS["hello"]) + frame(PAYLOADS["say"]) * 45,
    "zero_length": frame(PAYLOADS["hello"]) + struct.pack(">I", 0),
    "oversized_4gib": frame(PAYLOADS["hello"]) + b"\xff\xff\xff\xff",
    "oversized_limit_plus_one": struct.pack(">I", 65537) + b"\x80" * 16,
    "truncated_prefix": frame(PAYLOADS["hello"]) + b"\x00\x00",
    "truncated_payload": frame(PAYLOADS["hello"])[:-3],
    "just_hello": frame(PAYLOADS["hello"]),
    "hello_then_silence": frame(PAYLOADS["hello"]) + frame(PAYLOADS["ping"]),
    "who_over_burst": frame(PAYLOADS["hello"]) + frame(PAYLOADS["who"]) * 8,
    "flood_of_frames": (frame(PAYLOADS["ping"]) + frame(PAYLOADS["reserved_marker"])) * 110,
}

# Frames a server sends, for the client side.
SERVER = {
    "welcome": {"type": "welcome", "name": "ann", "users": ["bob", "ann"], "capacity": 1000,
                "text": "Welcome to anteroom! You are now connected to the chat."},
    "queued": {"type": "queued", "position": 2, "waiting": 5,
               "text": "We are dealing with a large amount of users and you are at 2 in queue"},
    "message": {"type": "message", "id": 1, "from": "bob", "text": "hi\tthere 👋\x1b[31m",
                "ts": 1700000000000},
    "message_far_ts": {"type": "message", "id": 2, "from": "bob", "text": "x", "ts": 2**64 - 1},
    "joined": {"type": "joined", "name": "cid", "ts": 1},
    "left": {"type": "left", "name": "bob", "reason": "idle_timeout", "ts": 2},
    "users": {"type": "users", "names": ["ann", "cid"]},
    "gap": {"type": "gap", "missed": 12},
    "error": {"type": "error", "code": "rate_limited", "text": "too many messages; slow down"},
    "ping": {"type": "ping", "id": 3},
    "pong": {"type": "pong"},
    "bye": {"type": "bye", "reason": "shutdown", "text": "The server is shutting down."},
    "unknown": {"type": "novelty", "x": [1, 2]},
    "wrong_field_type": {"type": "joined", "name": 5, "ts": "later"},
}


# Configurations: the shipped file, values at and beyond every range, and
# settings as variables (top bit of the key byte) or flags, after NUL bytes.
KEY_INDEX = {
    key: i
    for i, key in enumerate(
        [
            line.split("=")[0].strip()
            for line in (HERE.parent / "config" / "anteroom.toml").read_text().splitlines()
            if line and not line.startswith("#")
        ]
    )
}


def setting(key, value, env=False):
    return b"\0" + bytes([KEY_INDEX[key] | (0x80 if env else 0)]) + value.encode()


CONFIGS = {
    "shipped": (HERE.parent / "config" / "anteroom.toml").read_bytes(),
    "extremes": b"rate_limit = 1e-30\nhandshake_timeout = \"1ns\"\nmax_active = 9223372036854775807\n",
    "bounds": b'rate_limit = 0.001\nrate_burst = 31535\nidle_timeout = "1day"\n'
    b'heartbeat_interval = "1ms"\nmax_active = 10000000\nmax_waiting = 10000000\n',
    "floats": b"rate_limit = nan\nrate_limit = inf\nrate_limit = -0.0\n",
    "flags": b"max_frame_bytes = 64"
    + setting("max_message_bytes", "0")
    + setting("rate_limit", "1e9")
    + setting("rate_burst", "1000000000", env=True)
    + setting("write_timeout", "1000years", env=True)
    + setting("max_connections", "18446744073709551615")
    + setting("shutdown_grace", "1ms"),
}


def write(target, name, data):
    path = HERE / "corpus" / target / f"{name}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main():
    for name, payload in PAYLOADS.items():
        write("client_message", name, payload)
    # frame_decoder: a byte picking the limit (index into LIMITS: 4 is 16
    # bytes, 7 the default 64 KiB), a byte seeding the cuts, then the stream.
    for i, (name, stream) in enumerate(STREAMS.items()):
        write("frame_decoder", name, bytes([7, i]) + stream)
    write("frame_decoder", "small_limit", bytes([4, 1]) + STREAMS["hello_say_who_bye"])
    write("frame_decoder", "zero_limit", bytes([0, 2]) + struct.pack(">I", 0) * 3)
    # session: a byte seeding the cuts (top bit: pause between writes).
    for i, (name, stream) in enumerate(STREAMS.items()):
        write("session", name, bytes([i]) + stream)
    write("session", "slow_hello", bytes([0x85]) + STREAMS["hello_then_silence"])
    write("session", "silent_half_frame", bytes([0x81]) + frame(PAYLOADS["hello"])[:5])
    # room: two bytes an operation (client, what it does; see room.rs).
    # Three clients join a room of two seats, the members talk, one leaves,
    # the queued one is promoted; then a client vanishes mid-frame.
    HELLO, SAY, WHO, PING, BYE, VANISH, RAW, PAUSE = 0, 1, 2, 3, 4, 5, 6, 7
    write("room", "fill_queue_promote", bytes([
        0, HELLO, 1, HELLO + 9, 2, HELLO + 18, 0, SAY, 1, WHO, 2, SAY,
        0, BYE, 2, PAUSE, 2, SAY, 1, PING, 3, HELLO + 27, 1, VANISH, 3, SAY,
    ]))
    write("room", "announce_and_trickle", bytes([
        0, HELLO, 1, RAW, 5, 0, 1, 0, 0, 0x81, 1, PAUSE + 9 * 20, 0, SAY,
    ]))
    # http: a byte seeding the cuts (top bit: pauses), then the request bytes.
    write("http", "metrics", b"\x01GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    write("http", "two_requests", b"\x02GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n")
    write("http", "half_line_then_pause", b"\x81GET /met")
    write("http", "body", b"\x03POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    for name, config in CONFIGS.items():
        write("config", name, config)
    stream = b"".join(frame(pack(m)) for m in SERVER.values())
    write("server_event", "every_event", stream)
    for name, message in SERVER.items():
        write("server_event", name, frame(pack(message)))


if __name__ == "__main__":
    main()
