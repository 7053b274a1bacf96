#!/usr/bin/env bash
# Checks a running service against its own OpenAPI document with schemathesis, every check on
# (valid requests accepted, invalid ones refused with a 4xx, no 5xx, answers as documented),
# bounded in examples and wall-clock time, deterministic for a given seed. Installs schemathesis
# into .dev/venv when it is missing. Exits non-zero on any failure.
#
#   scripts/openapi-fuzz.sh <base-url> [extra `schemathesis run` arguments]
#
# The document is read from <base-url>/openapi.json. Environment (all optional):
#   OPENAPI_FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   OPENAPI_FUZZ_SEED          the generator's seed (default 14)
#   OPENAPI_FUZZ_TIMEOUT_SECS  wall-clock cap of the whole run (default 300)
#   OPENAPI_FUZZ_CONFIG        a schemathesis.toml with service-specific settings
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.dev/venv"

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
BASE="${1%/}"
shift
MAX_EXAMPLES="${OPENAPI_FUZZ_MAX_EXAMPLES:-100}"
SEED="${OPENAPI_FUZZ_SEED:-14}"
TIMEOUT_SECS="${OPENAPI_FUZZ_TIMEOUT_SECS:-300}"

log() { printf '[openapi-fuzz] %s\n' "$*" >&2; }

# Install once; concurrent runs wait for each other instead of racing pip.
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    mkdir -p "$ROOT/.dev"
    (
        flock 9
        if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
            [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || exit 1
            log "installing schemathesis into $VENV"
            "$VENV/bin/pip" install -q schemathesis || exit 1
        fi
    ) 9>"$ROOT/.dev/openapi-fuzz.install.lock" || { log "cannot install schemathesis"; exit 1; }
fi

config=()
if [ -n "${OPENAPI_FUZZ_CONFIG:-}" ]; then
    [ -f "$OPENAPI_FUZZ_CONFIG" ] || { log "no such file: $OPENAPI_FUZZ_CONFIG"; exit 2; }
    config=(--config-file "$(cd "$(dirname "$OPENAPI_FUZZ_CONFIG")" && pwd)/$(basename "$OPENAPI_FUZZ_CONFIG")")
fi

# Run in a scratch directory so nothing (reports, example databases) lands in the checkout.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1

log "fuzzing $BASE/openapi.json: all checks, $MAX_EXAMPLES examples per operation, seed $SEED, at most ${TIMEOUT_SECS}s"
timeout --kill-after=10 "$TIMEOUT_SECS" \
    "$VENV/bin/schemathesis" "${config[@]}" run "$BASE/openapi.json" \
    --url "$BASE" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --generation-database none \
    --no-color \
    "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    log "stopped: the run took longer than ${TIMEOUT_SECS}s"
fi
exit "$status"
