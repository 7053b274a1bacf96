#!/usr/bin/env bash
# The factline services on top of the local stack: builds them, creates the topics,
# registers the schemas, starts the write side, the projectors and the read API in the background with
# logs in .dev/logs/ and PID files in .dev/run/, and waits until each reports healthy.
#
#   scripts/services.sh start [--instances N]   build and start what is not running yet
#                                               (also what died), N instances of each projector
#   scripts/services.sh stop                    stop what `start` started
#   scripts/services.sh status                  what runs, where
#
# The projectors are whatever `factline-projector --list` prints (the registry in
# projectors/src/projections/mod.rs), each run as `factline-projector <name>`. N defaults to
# FACTLINE_PROJECTOR_INSTANCES, else to the N of the last start, else 1. The i-th listed
# projector (from 0) listens on FACTLINE_PROJECTOR_BASE_PORT (9101) + i, instance k of it on
# that port + P*(k-1) for P listed projectors; instances are named e.g. order_summary,
# order_summary-2, and each one's health URL is written beside its PID file (NAME.url).
# FACTLINE_DEV_DIR moves the PID files and logs out of .dev/ (a second, isolated copy of the
# services); addresses come from the variables `scripts/stack.sh env` prints,
# WRITE_SIDE_ADDR and READ_API_ADDR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="${FACTLINE_DEV_DIR:-$ROOT/.dev}"
RUN="$DEV/run"
LOGS="$DEV/logs"
mkdir -p "$RUN" "$LOGS"
eval "$("$ROOT/scripts/stack.sh" env)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
export WRITE_SIDE_ADDR="${WRITE_SIDE_ADDR:-127.0.0.1:8080}"
export READ_API_ADDR="${READ_API_ADDR:-127.0.0.1:8090}"
BASE_PORT="${FACTLINE_PROJECTOR_BASE_PORT:-9101}"
INSTANCES_FILE="$RUN/projector-instances"

# name | command | health URL | extra environment, around the projectors
WRITE_SIDE="write-side|factline-write-side|http://$WRITE_SIDE_ADDR/healthz|"
READ_API="read-api|factline-read-api|http://$READ_API_ADDR/healthz|"

log() { printf '[services] %s\n' "$*" >&2; }

# A process runs: it exists and is not a zombie (an init that does not reap its adopted
# children leaves a killed service as a zombie, which `kill -0` still finds).
running() { kill -0 "$1" 2>/dev/null && ! grep -qs '^[0-9]* (.*) Z' "/proc/$1/stat"; }

alive() { [ -f "$RUN/$1.pid" ] && running "$(cat "$RUN/$1.pid")"; }

instances() { # the projector instance count: flag, environment, last start, 1
    local n="${1:-${FACTLINE_PROJECTOR_INSTANCES:-}}"
    if [ -z "$n" ] && [ -f "$INSTANCES_FILE" ]; then n="$(cat "$INSTANCES_FILE")"; fi
    n="${n:-1}"
    case "$n" in
        '' | *[!0-9]* | 0) log "the instance count must be a positive number, not '$n'"; exit 2 ;;
    esac
    echo "$n"
}

# Every process to run, one line each: name|command|health URL|extra environment. The
# projectors are the registered ones (needs the built binary; a failing list fails here).
processes() {
    local n="$1" list names i k
    list="$("$BIN/factline-projector" --list)"
    mapfile -t names < <(cut -f1 <<<"$list")
    echo "$WRITE_SIDE"
    for ((i = 0; i < ${#names[@]}; i++)); do
        for ((k = 1; k <= n; k++)); do
            local port=$((BASE_PORT + i + ${#names[@]} * (k - 1))) instance="${names[$i]}"
            [ "$k" -gt 1 ] && instance="$instance-$k"
            echo "$instance|factline-projector ${names[$i]}|http://127.0.0.1:$port/healthz|PROJECTOR_ADDR=127.0.0.1:$port"
        done
    done
    echo "$READ_API"
}

# Runs `factline-schemas STEP` (idempotent), retrying a few times: a broker or registry that
# is busy or restarting (a loaded machine, a chaos test) must not stop a restart of what died.
init_step() {
    local attempt
    for attempt in 1 2 3 4 5; do
        "$BIN/factline-schemas" "$1" >>"$LOGS/init.log" 2>&1 && return 0
        log "factline-schemas $1 failed (attempt $attempt of 5); see $LOGS/init.log"
        sleep "$attempt"
    done
    tail -n 20 "$LOGS/init.log" >&2
    exit 1
}

start() {
    local n
    n="$(instances "${1:-}")"
    log "building the services"
    (cd "$ROOT" && cargo build -q --workspace --bins)
    log "creating topics and registering schemas"
    init_step create-topics
    init_step register
    echo "$n" >"$INSTANCES_FILE"
    local all name command health extra
    local listed
    listed="$(processes "$n")"
    mapfile -t all <<<"$listed"
    # A further instance of a projector starts once the first holds partitions, as a rolling
    # deploy would: on noida-db, two members joining one group at the same instant were seen
    # to leave the group rebalancing with nobody assigned.
    declare -A first_health=()
    for entry in "${all[@]}"; do
        IFS='|' read -r name command health extra <<<"$entry"
        local base="${name%-[0-9]*}"
        if [ "$base" = "$name" ]; then first_health[$name]="$health"; fi
        if alive "$name"; then continue; fi
        if [ "$base" != "$name" ] && [ -n "${first_health[$base]:-}" ]; then
            local wait_until=$((SECONDS + 60))
            until curl -fsS "${first_health[$base]}" 2>/dev/null | grep -q '"partitions":\[[^]]'; do
                if [ "$SECONDS" -ge "$wait_until" ]; then
                    log "$base holds no partition yet; starting $name anyway"
                    break
                fi
                sleep 0.3
            done
        fi
        log "starting $name"
        # shellcheck disable=SC2086
        env $extra setsid "$BIN/"$command >>"$LOGS/$name.log" 2>&1 </dev/null &
        echo $! >"$RUN/$name.pid"
        echo "$health" >"$RUN/$name.url"
    done
    for entry in "${all[@]}"; do
        IFS='|' read -r name _ health _ <<<"$entry"
        local deadline=$((SECONDS + 60))
        until curl -fsS "$health" >/dev/null 2>&1; do
            if ! alive "$name" || [ "$SECONDS" -ge "$deadline" ]; then
                log "$name did not become healthy at $health; last lines of $LOGS/$name.log:"
                tail -n 20 "$LOGS/$name.log" >&2
                exit 1
            fi
            sleep 0.3
        done
        log "$name healthy ($health)"
    done
}

stop() {
    # What `start` started: every instance has a health URL file beside its PID file (the
    # stack's own PID files, in the same directory, have none).
    local file
    for file in "$RUN"/*.url; do
        file="${file%.url}.pid"
        [ -f "$file" ] || { rm -f "${file%.pid}.url"; continue; }
        local name pid
        name="$(basename "$file" .pid)"
        pid="$(cat "$file")"
        if running "$pid"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do running "$pid" || break; sleep 0.2; done
            running "$pid" && kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$file" "${file%.pid}.url"
    done
    rm -f "$INSTANCES_FILE"
}

status() {
    local all name health
    if [ ! -x "$BIN/factline-projector" ]; then log "not built yet"; return 0; fi
    local listed
    listed="$(processes "$(instances)")"
    mapfile -t all <<<"$listed"
    for entry in "${all[@]}"; do
        IFS='|' read -r name _ health _ <<<"$entry"
        local state=down pid=-
        [ -f "$RUN/$name.pid" ] && pid="$(cat "$RUN/$name.pid")"
        alive "$name" && state=up
        printf '%-20s %-8s %-8s %s\n' "$name" "$state" "$pid" "${health%/healthz}"
    done
}

command="${1:-}"
shift || true
instances_flag=""
while [ $# -gt 0 ]; do
    case "$1" in
        --instances) instances_flag="${2:-}"; shift 2 || { log "--instances needs a number"; exit 2; } ;;
        --instances=*) instances_flag="${1#--instances=}"; shift ;;
        *) log "unknown option '$1'"; exit 2 ;;
    esac
done
case "$command" in
    start) start "$instances_flag" ;;
    stop) stop ;;
    status) status ;;
    *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
