#!/usr/bin/env python3
"""Reads `anteroom bench` output on standard input, echoes it, and fails if a
smoke run's JSON line shows a broken result: a fan-out that lost messages or
lacks its CPU per delivery (load generator and server, both measured in every
smoke run), a line without its CPU mode or its transport, connections not
all held or without their timing and the load generator's CPU per
connection, a churn whose positions went up or never promoted anyone, or a
soak that failed its checks.

    ... | python3 scripts/bench-smoke-check.py [--expect-transports tcp,tls,quic,ws]

With --expect-transports, each transport named must also have shown up in
at least one fan-out line and one connections line."""

import json
import sys

CPU_FIELDS = ("loadgen_cpu_us_per_delivery", "server_cpu_us_per_delivery")
TRANSPORTS = ("tcp", "tls", "quic", "ws")
# The workloads whose lines say which transport they ran over.
OVER_A_TRANSPORT = ("fanout", "fanout-sweep", "connections")

expected_transports = []
if len(sys.argv) == 3 and sys.argv[1] == "--expect-transports":
    expected_transports = [t for t in sys.argv[2].split(",") if t]
elif len(sys.argv) != 1:
    print("usage: bench-smoke-check.py [--expect-transports tcp,tls,quic,ws]", file=sys.stderr)
    sys.exit(2)
seen = {kind: set() for kind in ("fanout", "connections")}


def missing_cpu(run):
    """The CPU-per-delivery fields absent, null or not positive."""
    return [f for f in CPU_FIELDS if not isinstance(run.get(f), (int, float)) or run[f] <= 0]


failures = []
for line in sys.stdin:
    sys.stdout.write(line)
    if not line.startswith("{"):
        continue
    run = json.loads(line)
    kind = run.get("workload")
    if kind in ("fanout", "fanout-sweep", "connections", "churn") and not isinstance(run.get("pinned"), bool):
        failures.append(f"{run.get('broker')} {kind}: no \"pinned\" field")
    if kind in OVER_A_TRANSPORT:
        if run.get("transport") not in TRANSPORTS:
            failures.append(f"{run.get('broker')} {kind}: transport {run.get('transport')!r} not one of {TRANSPORTS}")
        elif run.get("broker") != "anteroom" and run["transport"] != "tcp":
            failures.append(f"{run['broker']} {kind} over {run['transport']}: only anteroom has TLS and QUIC")
        seen["connections" if kind == "connections" else "fanout"].add(run.get("transport"))
    if kind == "connections":
        for field in ("connect_per_s", "connect_p99_ms", "loadgen_cpu_us_per_connection"):
            if not isinstance(run.get(field), (int, float)) or run[field] <= 0:
                failures.append(f"{run['broker']} connections over {run.get('transport')}: {field} missing or not positive")
    if kind == "fanout" and missing_cpu(run):
        failures.append(f"{run['broker']} fanout at {run['offered_rate']:.0f} msg/s: {', '.join(missing_cpu(run))} missing or not positive")
    elif kind == "fanout-sweep" and run["sustainable_rate"] is not None and missing_cpu(run):
        failures.append(f"{run['broker']} sweep: {', '.join(missing_cpu(run))} missing or not positive")
    if kind == "fanout" and run["delivered_ratio"] < 0.999:
        failures.append(f"{run['broker']} fanout delivered {run['delivered_ratio']:.4f}")
    elif kind == "fanout-sweep" and run["sustainable_rate"] is None:
        failures.append(f"{run['broker']} sweep found no sustainable rate")
    elif kind == "fanout-sweep" and (run.get("capacity_rate") or 0) < run["sustainable_rate"]:
        failures.append(f"{run['broker']} sweep: capacity {run.get('capacity_rate')} below the sustainable rate")
    elif kind == "connections" and (run["in_room"] + run["queued"] != run["connections"] or run.get("failed", 0) > 0):
        failures.append(
            f"{run['broker']} over {run.get('transport')} held {run['in_room'] + run['queued']} of {run['connections']}"
            f" ({run.get('failed', 0)} failed)"
        )
    elif kind == "churn" and (run["position_went_up"] > 0 or run["promotions"] == 0):
        failures.append(f"churn: {run['position_went_up']} positions went up, {run['promotions']} promotions")
    elif kind == "soak" and not run["ok"]:
        failures.append(
            f"soak: {run['violations']} violations, memory flat {run['memory_flat']}, "
            f"back to baseline {run['back_to_baseline']}, {run['server_errors']} server errors"
        )
for kind, transports in seen.items():
    for t in expected_transports:
        if t not in transports:
            failures.append(f"no {kind} run over {t}")
if failures:
    print("bench smoke check failed:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print("bench smoke check: ok", file=sys.stderr)
