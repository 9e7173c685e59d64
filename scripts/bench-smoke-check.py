#!/usr/bin/env python3
"""Reads `anteroom bench` output on standard input, echoes it, and fails if a
smoke run's JSON line shows a broken result: a fan-out that lost messages or
lacks its CPU per delivery (load generator and server, both measured in every
smoke run), a line without its CPU mode, connections not all held, a churn
whose positions went up or never promoted anyone, or a soak that failed its
checks."""

import json
import sys

CPU_FIELDS = ("loadgen_cpu_us_per_delivery", "server_cpu_us_per_delivery")


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
    elif kind == "connections" and run["in_room"] + run["queued"] != run["connections"]:
        failures.append(f"{run['broker']} held {run['in_room'] + run['queued']} of {run['connections']}")
    elif kind == "churn" and (run["position_went_up"] > 0 or run["promotions"] == 0):
        failures.append(f"churn: {run['position_went_up']} positions went up, {run['promotions']} promotions")
    elif kind == "soak" and not run["ok"]:
        failures.append(
            f"soak: {run['violations']} violations, memory flat {run['memory_flat']}, "
            f"back to baseline {run['back_to_baseline']}, {run['server_errors']} server errors"
        )
if failures:
    print("bench smoke check failed:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print("bench smoke check: ok", file=sys.stderr)
