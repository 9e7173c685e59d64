#!/usr/bin/env bash
# The side-by-side benchmark behind BENCHMARKS.md: anteroom, Redis Pub/Sub and
# NATS core, measured one after the other on this machine by `anteroom bench`.
# Needs redis-server and nats-server (Debian packages) and a build with the
# compare feature. Writes every run's JSON line to the results file.
#
#   scripts/bench-all.sh [results.jsonl] [repetitions]
#
# Then: python3 scripts/bench-report.py results.jsonl (tables) and the charts
# it draws into benchmarks/ (deliveries/s and p99 against the offered rate).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results.jsonl}"
reps="${2:-3}"
cargo build --release --locked -p anteroom --features compare
bench=target/release/anteroom
: > "$out"
run() { "$bench" bench "$@" | tee /dev/stderr | grep '^{' >> "$out"; }

for rep in $(seq "$reps"); do
    echo "== repetition $rep of $reps" >&2
    for members in 100 1000 5000; do
        case $members in
            100) start=2000 ;;
            1000) start=250 ;;
            5000) start=50 ;;
        esac
        for publishers in 1 10; do
            run fanout --broker all --members "$members" --publishers "$publishers" \
                --payload 128 --rate "$start" --duration 3s --sweep
        done
    done
    for connections in 10000 19000; do
        run connections --broker all --connections "$connections" --max-active 1000 --hold 2s
    done
    for queued in 1000 5000 18000; do
        run churn --members 1000 --queued "$queued" --departures 1000 --duration 30s
    done
done
"$bench" bench plot --input "$out" --output benchmarks
