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


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.startswith("{")]


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
        if r["workload"] == "connections":
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


def main():
    runs = load(sys.argv[1] if len(sys.argv) > 1 else "bench-results.jsonl")
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


if __name__ == "__main__":
    main()
