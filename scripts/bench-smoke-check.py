#!/usr/bin/env python3
"""Reads `anteroom bench` output on standard input, echoes it, and fails if a
smoke run's JSON line shows a broken result: a fan-out that lost messages,
connections not all held, a churn whose positions went up or never
promoted anyone, or a soak that failed its checks."""

import json
import sys

failures = []
for line in sys.stdin:
    sys.stdout.write(line)
    if not line.startswith("{"):
        continue
    run = json.loads(line)
    kind = run.get("workload")
    if kind == "fanout" and run["delivered_ratio"] < 0.999:
        failures.append(f"{run['broker']} fanout delivered {run['delivered_ratio']:.4f}")
    elif kind == "fanout-sweep" and run["sustainable_rate"] is None:
        failures.append(f"{run['broker']} sweep found no sustainable rate")
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
