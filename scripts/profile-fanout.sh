#!/usr/bin/env bash
# Counts what one fan-out costs the broker, in figures that machine noise
# does not move: instructions, system calls and context switches per
# delivery, read with `perf stat` from the server process while
# `anteroom bench fanout` publishes at a fixed rate. With --record it also
# writes a call-graph profile and prints its top entries (kernel and user
# space apart, then by symbol); the profile is kept for `perf report -i`.
#
#   scripts/profile-fanout.sh BROKER MEMBERS RATE [--record] [-- bench args]
#
# BROKER is anteroom, redis or nats. Needs perf (Debian's linux-perf) and a
# release build with the compare feature; BENCH_BIN names another build of
# the binary (to profile an earlier commit with the same load generator).
set -euo pipefail
cd "$(dirname "$0")/.."
broker="$1" members="$2" rate="$3"
shift 3
record=no
if [ "${1:-}" = "--record" ]; then record=yes; shift; fi
[ "${1:-}" = "--" ] && shift
bench="${BENCH_BIN:-target/release/anteroom}"
window=8
log=$(mktemp)
"$bench" bench fanout --broker "$broker" --members "$members" --rate "$rate" \
    --duration $((window + 6))s "$@" > "$log" 2>/dev/null &
bench_pid=$!
trap 'kill $bench_pid 2>/dev/null || true; rm -f "$log"' EXIT
# The round starts right after this line; the server is the bench's child.
until grep -q '^fanout on' "$log"; do
    kill -0 $bench_pid 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
server=$(pgrep -P $bench_pid | head -1)
sleep 2
events=instructions,task-clock,context-switches,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
if [ $record = yes ]; then
    data=$(mktemp -d)/perf.data
    perf record -q -g -o "$data" -p "$server" -- sleep "$window" 2>/dev/null
else
    perf stat -x, -e "$events" -p "$server" -- sleep "$window" 2> "$log.perf"
fi
wait $bench_pid || true
delivered=$((members * ${rate%.*} * window))
echo "# $broker, $members members, $rate msg/s: per delivery over ${window}s (~$delivered deliveries)"
if [ $record = yes ]; then
    for sort in dso sym; do
        perf report -i "$data" --no-children --sort $sort --percent-limit 1 --stdio 2>/dev/null \
            | grep -E '^ +[0-9.]+%' | head -30
    done
    echo "# profile kept in $data"
else
    awk -F, -v d="$delivered" '$1 ~ /^[0-9.]+$/ { printf "%-36s %14.0f  %10.4f per delivery\n", $3, $1, $1 / d }' "$log.perf"
    rm -f "$log.perf"
fi
grep '^{' "$log" | tail -1
