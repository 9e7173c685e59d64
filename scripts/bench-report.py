#!/usr/bin/env python3
"""Turns the JSON lines of scripts/bench-all.sh into the Markdown tables of
BENCHMARKS.md: median and range over repetitions, and ratios against Redis
and NATS measured in the same run.

    python3 scripts/bench-report.py bench-results.jsonl

Fan-out tables come once per CPU mode (unpinned; pinned, with the server on
one CPU and the load generator on another). Each row carries the CPU both
processes spent per delivery. The load generator's figure should be about
the same for every broker: a row where it differs from anteroom's by more
than 20% is marked, since there the clients, not only the brokers, differ.

Runs over TLS and QUIC (anteroom only) have tables of their own, beside
anteroom over TCP with the same settings: fan-out sweeps, fixed-rate runs and
handshake rates, each with its ratio to TCP. The broker tables hold TCP runs
only.
"""

import json
import statistics
import sys
from collections import defaultdict

BROKERS = ["anteroom", "redis", "nats"]

# Load generator CPU per delivery differing from anteroom's by more than
# this share marks the row.
CLIENT_COST_TOLERANCE = 0.20

MODES = [
    (False, "unpinned (server and load generator share every CPU)"),
    (True, "pinned (server on one CPU, load generator on another)"),
]


TRANSPORTS = ["tcp", "tls", "quic", "ws"]


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def transport(r):
    """A run's transport; results from before the field existed are TCP."""
    return r.get("transport", "tcp")


def is_burst(r):
    """A connections run opening every connection at once: a handshake-rate
    run, reported in its own table rather than among the idle connections."""
    return r.get("concurrency", 0) >= r["connections"]


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def median_of(runs, key):
    values = [r.get(key) for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(ours, theirs):
    if ours is None or not theirs:
        return "–"
    return f"{ours / theirs:.2f}x"


def client_cost_note(broker, runs_by_broker, key="loadgen_cpu_us_per_delivery"):
    """The marker of a row whose load generator CPU per delivery is more
    than CLIENT_COST_TOLERANCE away from anteroom's in the same setting."""
    if broker == "anteroom":
        return ""
    ours = median_of(runs_by_broker.get("anteroom", []), key)
    theirs = median_of(runs_by_broker.get(broker, []), key)
    if not ours or theirs is None:
        return ""
    differs = theirs / ours - 1
    if abs(differs) <= CLIENT_COST_TOLERANCE:
        return ""
    return f"client cost differs by {differs * 100:+.0f}%"


def us(v):
    return f"{v:.2f}"


# Where each criterion's best round is in a sweep's summary line: the
# strict one under the original names, capacity under `capacity_*`.
CRITERIA = {
    "strict": ("sustainable msg/s", lambda key: key),
    "capacity": (
        "msg/s within capacity",
        lambda key: "capacity_rate" if key == "sustainable_rate" else f"capacity_{key}",
    ),
}


def fanout_table(runs, pinned, criterion="strict"):
    heading, key_of = CRITERIA[criterion]
    # Summaries from before capacity was measured have no capacity fields.
    runs = [r for r in runs if r["workload"] != "fanout-sweep" or key_of("sustainable_rate") in r]
    sweeps = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["workload"] == "fanout-sweep" and r.get("pinned", False) == pinned:
            sweeps[(r["members"], r["publishers"])][r["broker"]].append(r)
    if not sweeps:
        return None
    out = [
        f"| S | P | broker | {heading} | deliveries/s | p99 at that rate (ms) "
        "| load generator CPU per delivery (µs) | server CPU per delivery (µs) "
        "| server peak RSS (MB) | anteroom / this (deliveries/s) | |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m, p in sorted(sweeps):
        by_broker = sweeps[(m, p)]
        held = {b: [r for r in rs if r[key_of("sustainable_rate")]] for b, rs in by_broker.items()}
        ours = median_of(held.get("anteroom", []), key_of("deliveries_per_s"))
        for broker in BROKERS:
            all_rs = by_broker.get(broker, [])
            rs = held.get(broker, [])
            if not all_rs:
                continue
            if not rs:
                start = min(r["start_rate"] for r in all_rs)
                out.append(
                    f"| {m:,} | {p} | {broker} | none at >= {start:,.0f} | – | – | – | – | – | – | |"
                )
                continue
            note = "" if len(rs) == len(all_rs) else f" in {len(rs)} of {len(all_rs)} runs"
            theirs = median_of(rs, key_of("deliveries_per_s"))
            out.append(
                f"| {m:,} | {p} | {broker} "
                f"| {spread([r[key_of('sustainable_rate')] for r in rs], lambda v: f'{v:,.0f}')}{note} "
                f"| {spread([r[key_of('deliveries_per_s')] for r in rs], lambda v: f'{v:,.0f}')} "
                f"| {spread([r[key_of('p99_ms')] for r in rs], lambda v: f'{v:.1f}')} "
                f"| {spread([r.get(key_of('loadgen_cpu_us_per_delivery')) for r in rs], us)} "
                f"| {spread([r.get(key_of('server_cpu_us_per_delivery')) for r in rs], us)} "
                f"| {spread([r[key_of('server_peak_rss_mb')] for r in rs], lambda v: f'{v:.0f}')} "
                f"| {'–' if broker == 'anteroom' else ratio(ours, theirs)} "
                f"| {client_cost_note(broker, held, key_of('loadgen_cpu_us_per_delivery'))} |"
            )
    return "\n".join(out)


def fixed_rate_table(runs, pinned):
    # Rounds of a sweep say "sweep": true; results from before the field
    # existed came from sweeps only.
    fixed = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["workload"] == "fanout" and not r.get("sweep", True) and r.get("pinned", False) == pinned:
            fixed[(r["members"], r["publishers"], r["offered_rate"])][r["broker"]].append(r)
    if not fixed:
        return None
    out = [
        "| S | P | offered msg/s | broker | delivered | p99 (ms) | server CPU per delivery (µs) "
        "| load generator CPU per delivery (µs) | server CPU, anteroom / this | |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for m, p, rate in sorted(fixed):
        by_broker = fixed[(m, p, rate)]
        ours = median_of(by_broker.get("anteroom", []), "server_cpu_us_per_delivery")
        for broker in BROKERS:
            rs = by_broker.get(broker, [])
            if not rs:
                continue
            theirs = median_of(rs, "server_cpu_us_per_delivery")
            out.append(
                f"| {m:,} | {p} | {rate:,.0f} | {broker} "
                f"| {spread([r['delivered_ratio'] for r in rs], lambda v: f'{v * 100:.2f}%')} "
                f"| {spread([r['p99_ms'] for r in rs], lambda v: f'{v:.1f}')} "
                f"| {spread([r.get('server_cpu_us_per_delivery') for r in rs], us)} "
                f"| {spread([r.get('loadgen_cpu_us_per_delivery') for r in rs], us)} "
                f"| {'–' if broker == 'anteroom' else ratio(ours, theirs)} "
                f"| {client_cost_note(broker, by_broker)} |"
            )
    return "\n".join(out)


def mode_label(r):
    return " (pinned)" if r.get("pinned", False) else ""


def connections_table(runs):
    rows = defaultdict(list)
    for r in runs:
        if r["workload"] == "connections" and not is_burst(r):
            rows[(r["connections"], r.get("pinned", False), r["broker"])].append(r)
    out = [
        "| connections | broker | in room / queued | connects/s | server RSS after (MB) | bytes per connection | anteroom / this |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for c, pinned in sorted({(c, pinned) for (c, pinned, _) in rows}):
        ours = [r["bytes_per_connection"] for r in rows.get((c, pinned, "anteroom"), [])]
        for broker in BROKERS:
            rs = rows.get((c, pinned, broker), [])
            if not rs:
                continue
            per = [r["bytes_per_connection"] for r in rs]
            ratio_text = (
                "–"
                if broker == "anteroom" or not ours or not statistics.median(per)
                else f"{statistics.median(ours) / statistics.median(per):.2f}"
            )
            out.append(
                f"| {c:,} | {broker}{mode_label(rs[0])} | {rs[0]['in_room']:,} / {rs[0]['queued']:,} | "
                f"{spread([r['connect_per_s'] for r in rs], lambda v: f'{v:,.0f}')} | "
                f"{spread([r['server_rss_after_mb'] for r in rs], lambda v: f'{v:.1f}')} | "
                f"{spread(per, lambda v: f'{v:,.0f}')} | {ratio_text} |"
            )
    return "\n".join(out)


def churn_table(runs):
    rows = defaultdict(list)
    for r in runs:
        if r["workload"] == "churn":
            rows[(r["queued"], r.get("pinned", False))].append(r)
    out = [
        "| queued | departures/s | departures | position checks | went up | stale > 1 s | promotion p50 / p99 (ms) | server CPU (share of a core) | CPU per departure (µs) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for w, pinned in sorted(rows):
        rs = rows[(w, pinned)]
        out.append(
            f"| {w:,}{mode_label(rs[0])} | {rs[0]['departure_rate']:,.0f} | {spread([r['departures'] for r in rs], lambda v: f'{v:,.0f}')} | "
            f"{spread([r['positions_checked'] for r in rs], lambda v: f'{v:,.0f}')} | "
            f"{sum(r['position_went_up'] for r in rs)} | {sum(r['position_stale'] for r in rs)} | "
            f"{spread([r['promotion_p50_ms'] for r in rs], lambda v: f'{v:.1f}')} / "
            f"{spread([r['promotion_p99_ms'] for r in rs], lambda v: f'{v:.1f}')} | "
            f"{spread([r['server_cpu_share'] for r in rs], lambda v: f'{v * 100:.0f}%')} | "
            f"{spread([r['cpu_us_per_departure'] for r in rs], lambda v: f'{v:,.0f}')} |"
        )
    return "\n".join(out)


def transport_groups(runs, workload, key, pinned=None):
    """Anteroom runs of `workload` by `key(run)` and transport, for the keys
    where some run is over a transport other than TCP."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["workload"] != workload or r["broker"] != "anteroom":
            continue
        if pinned is not None and r.get("pinned", False) != pinned:
            continue
        k = key(r)
        if k is not None:
            groups[k][transport(r)].append(r)
    return {k: g for k, g in groups.items() if any(t != "tcp" for t in g)}


def to_tcp(by_transport, t, key, held=lambda r: True):
    """`t`'s median of `key` over TCP's, as `0.50x`; – for TCP itself or
    without both."""
    if t == "tcp":
        return "–"
    ours = median_of([r for r in by_transport.get(t, []) if held(r)], key)
    tcp = median_of([r for r in by_transport.get("tcp", []) if held(r)], key)
    return ratio(ours, tcp)


def transports_table(runs, pinned):
    groups = transport_groups(
        runs, "fanout-sweep", lambda r: (r["members"], r["publishers"]), pinned
    )
    if not groups:
        return None
    out = [
        "| S | P | transport | sustainable msg/s | msg/s within capacity | p99 at the sustainable rate (ms) "
        "| server CPU per delivery (µs) | load generator CPU per delivery (µs) "
        "| this / TCP: sustainable | capacity | server CPU per delivery | load generator CPU per delivery |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rate = lambda v: f"{v:,.0f}"
    for (m, p) in sorted(groups):
        by_transport = groups[(m, p)]
        for t in TRANSPORTS + sorted(set(by_transport) - set(TRANSPORTS)):
            rs = by_transport.get(t, [])
            if not rs:
                continue
            strict = [r for r in rs if r.get("sustainable_rate")]
            capacity = [r for r in rs if r.get("capacity_rate")]
            if strict:
                note = "" if len(strict) == len(rs) else f" in {len(strict)} of {len(rs)} runs"
                strict_text = spread([r["sustainable_rate"] for r in strict], rate) + note
            else:
                strict_text = f"none at >= {min(r['start_rate'] for r in rs):,.0f}"
            held = lambda r: bool(r.get("sustainable_rate"))
            out.append(
                f"| {m:,} | {p} | {t} | {strict_text} "
                f"| {spread([r['capacity_rate'] for r in capacity], rate) if capacity else '–'} "
                f"| {spread([r['p99_ms'] for r in strict], lambda v: f'{v:.1f}')} "
                f"| {spread([r.get('server_cpu_us_per_delivery') for r in strict], us)} "
                f"| {spread([r.get('loadgen_cpu_us_per_delivery') for r in strict], us)} "
                f"| {to_tcp(by_transport, t, 'sustainable_rate', held)} "
                f"| {to_tcp(by_transport, t, 'capacity_rate', lambda r: bool(r.get('capacity_rate')))} "
                f"| {to_tcp(by_transport, t, 'server_cpu_us_per_delivery', held)} "
                f"| {to_tcp(by_transport, t, 'loadgen_cpu_us_per_delivery', held)} |"
            )
    return "\n".join(out)


def transports_fixed_table(runs, pinned):
    groups = transport_groups(
        runs,
        "fanout",
        lambda r: None if r.get("sweep", True) else (r["members"], r["publishers"], r["offered_rate"]),
        pinned,
    )
    if not groups:
        return None
    out = [
        "| S | P | offered msg/s | transport | delivered | p99 (ms) | server CPU per delivery (µs) "
        "| load generator CPU per delivery (µs) | this / TCP: server CPU | load generator CPU |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (m, p, rate) in sorted(groups):
        by_transport = groups[(m, p, rate)]
        for t in TRANSPORTS + sorted(set(by_transport) - set(TRANSPORTS)):
            rs = by_transport.get(t, [])
            if not rs:
                continue
            out.append(
                f"| {m:,} | {p} | {rate:,.0f} | {t} "
                f"| {spread([r['delivered_ratio'] for r in rs], lambda v: f'{v * 100:.2f}%')} "
                f"| {spread([r['p99_ms'] for r in rs], lambda v: f'{v:.1f}')} "
                f"| {spread([r.get('server_cpu_us_per_delivery') for r in rs], us)} "
                f"| {spread([r.get('loadgen_cpu_us_per_delivery') for r in rs], us)} "
                f"| {to_tcp(by_transport, t, 'server_cpu_us_per_delivery')} "
                f"| {to_tcp(by_transport, t, 'loadgen_cpu_us_per_delivery')} |"
            )
    return "\n".join(out)


def handshakes_table(runs):
    groups = transport_groups(
        runs,
        "connections",
        lambda r: (r["connections"], r.get("concurrency"), r.get("pinned", False)) if "concurrency" in r else None,
    )
    if not groups:
        return None
    out = [
        "| connections | at once | transport | ready/s (to `welcome` or `queued`) | each, p50 / p99 (ms) "
        "| failed | server CPU per connection (µs) | load generator CPU per connection (µs) "
        "| UDP datagrams dropped | this / TCP (ready/s) |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for (c, at_once, pinned) in sorted(groups):
        by_transport = groups[(c, at_once, pinned)]
        for t in TRANSPORTS + sorted(set(by_transport) - set(TRANSPORTS)):
            rs = by_transport.get(t, [])
            if not rs:
                continue
            label = f"{t} (pinned)" if pinned else t
            out.append(
                f"| {c:,} | {at_once:,} | {label} "
                f"| {spread([r['connect_per_s'] for r in rs], lambda v: f'{v:,.0f}')} "
                f"| {spread([r.get('connect_p50_ms') for r in rs], lambda v: f'{v:.1f}')} / "
                f"{spread([r.get('connect_p99_ms') for r in rs], lambda v: f'{v:.1f}')} "
                f"| {spread([r.get('failed', 0) for r in rs], lambda v: f'{v:,.0f}')} "
                f"| {spread([r.get('server_cpu_us_per_connection') for r in rs], lambda v: f'{v:,.0f}')} "
                f"| {spread([r.get('loadgen_cpu_us_per_connection') for r in rs], lambda v: f'{v:,.0f}')} "
                f"| {spread([r.get('udp_receive_buffer_errors') for r in rs], lambda v: f'{v:,.0f}')} "
                f"| {to_tcp(by_transport, t, 'connect_per_s')} |"
            )
    return "\n".join(out)


def main():
    all_runs = load(sys.argv[1] if len(sys.argv) > 1 else "bench-results.jsonl")
    # The broker tables compare brokers over TCP, the one transport all three have.
    runs = [r for r in all_runs if transport(r) == "tcp"]
    for pinned, mode in MODES:
        for criterion, limit in (("strict", "sustainable rate (>= 99.9% delivered, p99 <= 50 ms)"),
                                 ("capacity", "rate within capacity (>= 99.9% delivered, p99 <= 250 ms)")):
            table = fanout_table(runs, pinned, criterion)
            if table:
                print(f"### Fan-out, {mode}: highest {limit}\n")
                print(table)
                print()
    for pinned, mode in MODES:
        table = fixed_rate_table(runs, pinned)
        if table:
            print(f"### Fan-out at a fixed rate, {mode}: CPU per delivery\n")
            print(table)
            print()
    print("### Idle connections\n")
    print(connections_table(runs))
    print("\n### Queue churn (anteroom)\n")
    print(churn_table(runs))
    for pinned, mode in MODES:
        table = transports_table(all_runs, pinned)
        if table:
            print(f"\n### Transports, {mode}: anteroom's fan-out sweeps over TCP, TLS and QUIC\n")
            print(table)
    for pinned, mode in MODES:
        table = transports_fixed_table(all_runs, pinned)
        if table:
            print(f"\n### Transports at a fixed rate, {mode}: CPU per delivery\n")
            print(table)
    table = handshakes_table(all_runs)
    if table:
        print("\n### Handshakes: connections opened at once, to `welcome` or `queued` (anteroom)\n")
        print(table)


if __name__ == "__main__":
    main()
