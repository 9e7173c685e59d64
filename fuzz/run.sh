#!/usr/bin/env bash
# Runs each fuzz target for a bounded time, one after the other.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target defaults to $FUZZ_SECONDS, else 20. Without TARGETs,
# every target runs. $FUZZ_ARGS adds libFuzzer options (CI passes
# -verbosity=0, which keeps the final figures and any crash report but not
# a line per new input). Needs cargo-fuzz (cargo install cargo-fuzz --locked).
# It builds on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the
# sanitizer flags cargo-fuzz passes.
#
# Inputs libFuzzer finds go to fuzz/target/corpus/<target>/, kept between
# runs; the committed seeds in fuzz/corpus/<target>/ are only read. A crash
# stops the script with a non-zero status and leaves its input in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-${FUZZ_SECONDS:-20}}"
shift || true
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build
for target in "${targets[@]}"; do
    printf -- '--- %s: %ss\n' "$target" "$seconds"
    mkdir -p "target/corpus/$target"
    # shellcheck disable=SC2086 # FUZZ_ARGS is split into options on purpose.
    cargo fuzz run "$target" "target/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-}
done
