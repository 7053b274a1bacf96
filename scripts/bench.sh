#!/usr/bin/env bash
# `make bench`: builds the services and the bench, makes sure the local stack runs, then runs
# factline-bench, which starts its own service processes (free ports, fresh topic prefix,
# PostgreSQL schema and index prefix), measures every stage against the raw limit of the system
# under it, prints one table and writes target/bench/results.json. Stops only what it started.
#
#   scripts/bench.sh                 full run, services built in release mode
#   BENCH_QUICK=1 scripts/bench.sh   tiny sizes, debug build: checks the harness works (CI)
#   (make bench / make bench QUICK=1 call this.) Sizes: see `factline-bench --help` (BENCH_*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK="${BENCH_QUICK:-${QUICK:-}}"
case "$QUICK" in 1 | true | yes) QUICK=1 ;; *) QUICK=0 ;; esac
if [ "$QUICK" = 1 ]; then PROFILE="${BENCH_PROFILE:-debug}"; else PROFILE="${BENCH_PROFILE:-release}"; fi
case "$PROFILE" in
    release) CARGO_PROFILE_FLAG=(--release) ;;
    debug) CARGO_PROFILE_FLAG=() ;;
    *) echo "[bench] BENCH_PROFILE must be release or debug" >&2; exit 2 ;;
esac
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

STARTED_FILE="$(mktemp)"
export STARTED_FILE
cleanup() {
    mapfile -t started <"$STARTED_FILE"
    if [ ${#started[@]} -gt 0 ]; then
        local reversed=()
        for ((i = ${#started[@]} - 1; i >= 0; i--)); do reversed+=("${started[$i]}"); done
        scripts/stack.sh stop "${reversed[@]}"
    fi
    rm -f "$STARTED_FILE"
}
trap cleanup EXIT

scripts/stack.sh start
eval "$(scripts/stack.sh env)"

echo "[bench] building ($PROFILE): write side, projectors, read API, the factline CLI, bench" >&2
# the whole workspace, as `make up` and `make test` build it: the same features, so the
# debug build of `make test` is reused as it is and each profile is built once
cargo build -q "${CARGO_PROFILE_FLAG[@]}" --workspace --bins

export BENCH_QUICK="$QUICK" BENCH_PROFILE="$PROFILE" BENCH_REPO_ROOT="$ROOT"
export BENCH_BIN_DIR="$TARGET_DIR/$PROFILE"
export BENCH_OUT="${BENCH_OUT:-$TARGET_DIR/bench/results.json}"
"$TARGET_DIR/$PROFILE/factline-bench" "$@"
