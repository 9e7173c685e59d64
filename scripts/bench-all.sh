#!/usr/bin/env bash
# The side-by-side benchmark behind BENCHMARKS.md: anteroom, Redis Pub/Sub and
# NATS core, measured one after the other on this machine by `anteroom bench`,
# whose lean clients cost the load generator about the same per delivery on
# all three. Needs redis-server and nats-server (Debian packages), taskset
# (util-linux) and two CPUs for the pinned mode, and a hard descriptor limit
# of at least 19,256. Writes every run's JSON line to the results file.
#
#   scripts/bench-all.sh [results.jsonl] [repetitions]
#
# Each repetition runs, in both CPU modes (unpinned, and --pin: the server on
# one CPU, the load generator on another):
#   - fan-out sweeps for S = 100, 1000, 5000 and P = 1, 10, all brokers;
#   - fan-out at fixed rates (S = 1000 at 1000 msg/s, S = 5000 at 200 msg/s),
#     all brokers: the server's CPU per delivery at the same offered load;
#   - anteroom over each transport (TCP, TLS, QUIC, WebSocket): a fan-out sweep at
#     S = 1000, P = 1, and a fixed-rate run at S = 1000, 200 msg/s. TCP's
#     sweep is the one above when S = 1000 is among the sizes, so it is not
#     run twice;
# and, unpinned, the connections and churn runs, and the handshake rate:
# 1000 connections opened at once, to `welcome`, over each transport in one
# run. The sweeps take most of the time, and run once per CPU mode.
#
# Environment, for a shorter run (the defaults are the published set):
#   BENCH_REPS             repetitions, when not given as the second argument (3)
#   BENCH_DURATION         how long each rate of a sweep is offered (3s)
#   BENCH_FIXED_DURATION   how long each fixed-rate run lasts (5s)
#   BENCH_SIZES            room sizes of the sweeps ("100 1000 5000")
#   BENCH_MAX_RATE         stop each sweep at this rate, and start it no higher (no limit)
#   BENCH_FIXED            fixed-rate runs as S:rate ("1000:1000 5000:200")
#   BENCH_MODES            CPU modes ("unpinned pinned")
#   BENCH_CONNECTIONS      connection counts ("10000 19000"; "" skips them)
#   BENCH_QUEUED           churn queue lengths ("1000 5000 18000"; "" skips them)
#   BENCH_CHURN_DURATION   how long each churn run lasts (30s)
#   BENCH_TRANSPORTS       transports anteroom is compared over ("tcp tls quic ws"; "" skips
#                          the transport sweeps, fixed-rate runs and handshake rates)
#   BENCH_TRANSPORT_MEMBERS  room size of the transport sweeps (1000)
#   BENCH_TRANSPORT_START  starting rate of the transport sweeps (200)
#   BENCH_TRANSPORT_FIXED  fixed-rate runs per transport as S:rate ("1000:200"; "" skips them)
#   BENCH_HANDSHAKES       connections opened at once for the handshake rates (1000; "" skips them)
# e.g. a pass of a few minutes:
#   BENCH_REPS=1 BENCH_DURATION=1s BENCH_FIXED_DURATION=2s BENCH_SIZES=1000 \
#       BENCH_CONNECTIONS=10000 BENCH_QUEUED=1000 BENCH_CHURN_DURATION=5s \
#       scripts/bench-all.sh quick.jsonl
# or only the transports, unpinned:
#   BENCH_REPS=1 BENCH_SIZES= BENCH_FIXED= BENCH_MODES=unpinned BENCH_CONNECTIONS= \
#       BENCH_QUEUED= scripts/bench-all.sh transports.jsonl
#
# Then: python3 scripts/bench-report.py results.jsonl (tables), and the charts
# drawn into benchmarks/ (deliveries/s and p99 against the offered rate).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results.jsonl}"
reps="${2:-${BENCH_REPS:-3}}"
duration="${BENCH_DURATION:-3s}"
fixed_duration="${BENCH_FIXED_DURATION:-5s}"
sizes="${BENCH_SIZES-100 1000 5000}"
max_rate=()
[ -n "${BENCH_MAX_RATE:-}" ] && max_rate=(--max-rate "$BENCH_MAX_RATE")
fixed="${BENCH_FIXED-1000:1000 5000:200}"
modes="${BENCH_MODES-unpinned pinned}"
connection_counts="${BENCH_CONNECTIONS-10000 19000}"
queue_lengths="${BENCH_QUEUED-1000 5000 18000}"
churn_duration="${BENCH_CHURN_DURATION:-30s}"
transports="${BENCH_TRANSPORTS-tcp tls quic ws}"
transport_members="${BENCH_TRANSPORT_MEMBERS:-1000}"
transport_start="${BENCH_TRANSPORT_START:-200}"
transport_fixed="${BENCH_TRANSPORT_FIXED-1000:200}"
handshakes="${BENCH_HANDSHAKES-1000}"
for transport in $transports; do
    case $transport in
        tcp | tls | quic | ws) ;;
        *) echo "BENCH_TRANSPORTS: unknown transport $transport (tcp, tls, quic or ws)" >&2; exit 2 ;;
    esac
done
if [ -n "${BENCH_MAX_RATE:-}" ] && [ "$transport_start" -gt "${BENCH_MAX_RATE%.*}" ]; then
    transport_start="${BENCH_MAX_RATE%.*}"
fi
# Whether word $1 is in the list $2.
in_list() { case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

cargo build --release --locked -p anteroom --features compare
bench="${CARGO_TARGET_DIR:-target}/release/anteroom"
: > "$out"
run() { "$bench" bench "$@" | tee /dev/stderr | grep '^{' >> "$out"; }

for rep in $(seq "$reps"); do
    echo "== repetition $rep of $reps" >&2
    for mode in $modes; do
        case $mode in
            unpinned) pin=() ;;
            pinned) pin=(--pin) ;;
            *) echo "BENCH_MODES: unknown mode $mode" >&2; exit 2 ;;
        esac
        for members in $sizes; do
            case $members in
                100) start=2000 ;;
                1000) start=500 ;;
                5000) start=50 ;;
                *) start=$((250000 / members > 0 ? 250000 / members : 1)) ;;  # ~250k deliveries/s
            esac
            if [ -n "${BENCH_MAX_RATE:-}" ] && [ "$start" -gt "${BENCH_MAX_RATE%.*}" ]; then
                start="${BENCH_MAX_RATE%.*}"
            fi
            for publishers in 1 10; do
                run fanout --broker all --members "$members" --publishers "$publishers" \
                    --payload 128 --rate "$start" --duration "$duration" --sweep "${max_rate[@]}" "${pin[@]}"
            done
        done
        for pair in $fixed; do
            run fanout --broker all --members "${pair%%:*}" --publishers 1 \
                --payload 128 --rate "${pair##*:}" --duration "$fixed_duration" "${pin[@]}"
        done
        for transport in $transports; do
            # Anteroom over TCP at this S and P = 1 was swept above.
            if [ "$transport" = tcp ] && in_list "$transport_members" "$sizes"; then
                continue
            fi
            run fanout --transport "$transport" --members "$transport_members" --publishers 1 \
                --payload 128 --rate "$transport_start" --duration "$duration" --sweep "${max_rate[@]}" "${pin[@]}"
        done
        for pair in $transport_fixed; do
            for transport in $transports; do
                if [ "$transport" = tcp ] && in_list "$pair" "$fixed"; then
                    continue
                fi
                run fanout --transport "$transport" --members "${pair%%:*}" --publishers 1 \
                    --payload 128 --rate "${pair##*:}" --duration "$fixed_duration" "${pin[@]}"
            done
        done
    done
    for connections in $connection_counts; do
        run connections --broker all --connections "$connections" --max-active 1000 --hold 2s
    done
    if [ -n "$handshakes" ] && [ -n "$transports" ]; then
        # All at once, to `welcome`, each transport on a server of its own.
        run connections --transport "$(echo $transports | tr ' ' ,)" --connections "$handshakes" \
            --concurrency "$handshakes" --max-active "$handshakes" --hold 1s
    fi
    for queued in $queue_lengths; do
        run churn --members 1000 --queued "$queued" --departures 1000 --duration "$churn_duration"
    done
done
"$bench" bench plot --input "$out" --output benchmarks
