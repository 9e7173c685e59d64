#!/usr/bin/env python3
"""Turns the JSON lines of scripts/bench-all.sh into the Markdown tables of
BENCHMARKS.md: median and range over repetitions, and ratios against Redis
and NATS measured in the same run.

    python3 scripts/bench-report.py bench-results.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict

BROKERS = ["anteroom", "redis", "nats"]


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def spread(values, fmt):
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def fanout_table(runs):
    sweeps = defaultdict(list)
    for r in runs:
        if r["workload"] == "fanout-sweep":
            sweeps[(r["members"], r["publishers"], r["broker"])].append(r)
    configs = sorted({(m, p) for (m, p, _) in sweeps})
    out = [
        "| S | P | broker | sustainable msg/s | deliveries/s | p99 at that rate (ms) | server peak RSS (MB) | anteroom / this |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m, p in configs:
        ours = [r["sustainable_rate"] for r in sweeps.get((m, p, "anteroom"), []) if r["sustainable_rate"]]
        for broker in BROKERS:
            all_rs = sweeps.get((m, p, broker), [])
            rs = [r for r in all_rs if r["sustainable_rate"]]
            rates = [r["sustainable_rate"] for r in rs]
            if all_rs and not rs:
                start = min(r["start_rate"] for r in all_rs)
                out.append(f"| {m:,} | {p} | {broker} | none at >= {start:,.0f} | – | – | – | – |")
                continue
            held = "" if len(rs) == len(all_rs) else f" in {len(rs)} of {len(all_rs)} runs"
            ratio = "–"
            if broker != "anteroom" and rates and ours:
                ratio = f"{statistics.median(ours) / statistics.median(rates):.2f}x"
            out.append(
                f"| {m:,} | {p} | {broker} | {spread(rates, lambda v: f'{v:,.0f}')}{held} | "
                f"{spread([r['deliveries_per_s'] for r in rs], lambda v: f'{v:,.0f}')} | "
                f"{spread([r['p99_ms'] for r in rs], lambda v: f'{v:.1f}')} | "
                f"{spread([r['server_peak_rss_mb'] for r in rs], lambda v: f'{v:.0f}')} | {ratio} |"
            )
    return "\n".join(out)


def connections_table(runs):
    rows = defaultdict(list)
    for r in runs:
        if r["workload"] == "connections":
            rows[(r["connections"], r["broker"])].append(r)
    out = [
        "| connections | broker | in room / queued | connects/s | server RSS after (MB) | bytes per connection | anteroom / this |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for c in sorted({c for (c, _) in rows}):
        ours = [r["bytes_per_connection"] for r in rows.get((c, "anteroom"), [])]
        for broker in BROKERS:
            rs = rows.get((c, broker), [])
            if not rs:
                continue
            per = [r["bytes_per_connection"] for r in rs]
            ratio = "–" if broker == "anteroom" or not ours else f"{statistics.median(ours) / statistics.median(per):.2f}"
            out.append(
                f"| {c:,} | {broker} | {rs[0]['in_room']:,} / {rs[0]['queued']:,} | "
                f"{spread([r['connect_per_s'] for r in rs], lambda v: f'{v:,.0f}')} | "
                f"{spread([r['server_rss_after_mb'] for r in rs], lambda v: f'{v:.1f}')} | "
                f"{spread(per, lambda v: f'{v:,.0f}')} | {ratio} |"
            )
    return "\n".join(out)


def churn_table(runs):
    rows = defaultdict(list)
    for r in runs:
        if r["workload"] == "churn":
            rows[r["queued"]].append(r)
    out = [
        "| queued | departures/s | departures | position checks | went up | stale > 1 s | promotion p50 / p99 (ms) | server CPU (share of a core) | CPU per departure (µs) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for w in sorted(rows):
        rs = rows[w]
        out.append(
            f"| {w:,} | {rs[0]['departure_rate']:,.0f} | {spread([r['departures'] for r in rs], lambda v: f'{v:,.0f}')} | "
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
    print("### Fan-out: highest sustainable rate (>= 99.9% delivered, p99 <= 50 ms)\n")
    print(fanout_table(runs))
    print("\n### Idle connections\n")
    print(connections_table(runs))
    print("\n### Queue churn (anteroom)\n")
    print(churn_table(runs))


if __name__ == "__main__":
    main()
