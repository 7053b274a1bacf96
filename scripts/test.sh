#!/usr/bin/env bash
# `make test`: installs what is missing, starts the infrastructure the tests need if it is
# not running (PostgreSQL, noida-db for Kafka and Elasticsearch or, with BROKER=nisshi, nisshi
# for Kafka and noida-db for Elasticsearch, the object store, the schema registry), runs
# the checks and every test with the addresses in the environment, stops what it started,
# and exits with the tests' status.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STARTED_FILE="$(mktemp)"
export STARTED_FILE

cleanup() {
    mapfile -t started <"$STARTED_FILE"
    if [ ${#started[@]} -gt 0 ]; then
        # Stop in reverse start order, only what this run started.
        local reversed=()
        for ((i = ${#started[@]} - 1; i >= 0; i--)); do reversed+=("${started[$i]}"); done
        scripts/stack.sh stop "${reversed[@]}"
    fi
    rm -f "$STARTED_FILE"
}
trap cleanup EXIT

scripts/stack.sh install || exit 1
scripts/stack.sh start || exit 1
eval "$(scripts/stack.sh env)"

echo "== compose file and README checks"
[ -x .dev/venv/bin/python ] && .dev/venv/bin/pip install -q pyyaml jsonschema schemathesis oteltap "confluent-kafka[avro]" >/dev/null
# the web console's browser test: Debian's chromium and the playwright Python package
scripts/console-test.sh --install || exit 1
.dev/venv/bin/python scripts/check-compose.py || exit 1

echo "== leftover test topics and indices"
mkdir -p .dev/run
exec 9>.dev/run/test.lock
if flock -n 9; then
    # held until this run ends (fd 9 is closed for the commands that may start servers, so
    # none keeps it): a second `make test` meanwhile cleans nothing of this one's
    .dev/venv/bin/python scripts/clean-test-data.py || echo "[test] could not clean leftovers; going on" >&2
else
    echo "[test] another make test is running: leftovers are left for later"
fi

if [ "${CI:-}" = "true" ]; then
    echo "== formatting and lints"
    cargo fmt --all -- --check || exit 1
    cargo clippy -q --workspace --all-targets -- -D warnings || exit 1
fi

echo "== building every binary (the chaos suite runs the services through scripts/services.sh, as make up does)"
# `--workspace`, as every script builds: one feature set, so this build is reused as it is by
# the tests, the services and the quick bench
cargo build -q --workspace --bins || exit 1

echo "== schema compatibility of the working tree against the registry"
"${CARGO_TARGET_DIR:-$ROOT/target}/debug/factline-schemas" check || exit 1
scripts/compose.sh --check || exit 1

echo "== tests"
cargo test --workspace --no-fail-fast 9>&-
status=$?

echo "== benchmark harness, quick run (checks that it works; figures are not judged here)"
BENCH_QUICK=1 BENCH_OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench/quick.json" scripts/bench.sh \
    >"${TMPDIR:-/tmp}/factline-bench-quick.log" 2>&1 9>&- || {
    echo "quick benchmark run failed; last lines of its log:" >&2
    tail -n 40 "${TMPDIR:-/tmp}/factline-bench-quick.log" >&2
    status=1
}
exit $status
