#!/usr/bin/env bash
# The factline services on top of the local stack: builds them, creates the topics,
# registers the schemas, starts the write side, the projectors and the read API in the background with
# logs in .dev/logs/ and PID files in .dev/run/, and waits until each reports healthy.
#
#   scripts/services.sh start     build and start what is not running yet
#   scripts/services.sh stop      stop what `start` started
#   scripts/services.sh status    what runs, where
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.dev/run"
LOGS="$ROOT/.dev/logs"
mkdir -p "$RUN" "$LOGS"
eval "$("$ROOT/scripts/stack.sh" env)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
export WRITE_SIDE_ADDR="${WRITE_SIDE_ADDR:-127.0.0.1:8080}"
export READ_API_ADDR="${READ_API_ADDR:-127.0.0.1:8090}"
export READ_API_DECLARATIVE_DIR="${READ_API_DECLARATIVE_DIR:-$ROOT/projectors/config}"

# name | binary | health URL | extra environment
SERVICES=(
    "write-side|factline-write-side|http://$WRITE_SIDE_ADDR/healthz|"
    "order-summary|order-summary|http://127.0.0.1:9101/healthz|PROJECTOR_ADDR=127.0.0.1:9101"
    "customer-stats|customer-stats|http://127.0.0.1:9102/healthz|PROJECTOR_ADDR=127.0.0.1:9102"
    "order-search|order-search|http://127.0.0.1:9103/healthz|PROJECTOR_ADDR=127.0.0.1:9103"
    "event-index|event-index|http://127.0.0.1:9104/healthz|PROJECTOR_ADDR=127.0.0.1:9104"
    "customer-directory|declarative-projector --config $ROOT/projectors/config/customer_directory.toml|http://127.0.0.1:9105/healthz|PROJECTOR_ADDR=127.0.0.1:9105"
    "read-api|factline-read-api|http://$READ_API_ADDR/healthz|"
)

log() { printf '[services] %s\n' "$*" >&2; }

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {
    log "building the services"
    (cd "$ROOT" && cargo build -q -p factline-schemas -p factline-write-side -p factline-projectors -p factline-read-api --bins)
    log "creating topics and registering schemas"
    "$BIN/factline-schemas" create-topics >>"$LOGS/init.log" 2>&1 || { tail -n 20 "$LOGS/init.log" >&2; exit 1; }
    "$BIN/factline-schemas" register >>"$LOGS/init.log" 2>&1 || { tail -n 20 "$LOGS/init.log" >&2; exit 1; }
    for entry in "${SERVICES[@]}"; do
        IFS='|' read -r name command health extra <<<"$entry"
        if alive "$name"; then continue; fi
        log "starting $name"
        # shellcheck disable=SC2086
        env $extra setsid "$BIN/"$command >>"$LOGS/$name.log" 2>&1 </dev/null &
        echo $! >"$RUN/$name.pid"
    done
    for entry in "${SERVICES[@]}"; do
        IFS='|' read -r name _ health _ <<<"$entry"
        local deadline=$((SECONDS + 60))
        until curl -fsS "$health" >/dev/null 2>&1; do
            if ! alive "$name" || [ "$SECONDS" -ge "$deadline" ]; then
                log "$name did not become healthy at $health; last lines of .dev/logs/$name.log:"
                tail -n 20 "$LOGS/$name.log" >&2
                exit 1
            fi
            sleep 0.3
        done
        log "$name healthy ($health)"
    done
}

stop() {
    for entry in "${SERVICES[@]}"; do
        IFS='|' read -r name _ <<<"$entry"
        if alive "$name"; then
            local pid
            pid="$(cat "$RUN/$name.pid")"
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$RUN/$name.pid"
    done
}

status() {
    for entry in "${SERVICES[@]}"; do
        IFS='|' read -r name _ health _ <<<"$entry"
        local state=down pid=-
        [ -f "$RUN/$name.pid" ] && pid="$(cat "$RUN/$name.pid")"
        alive "$name" && state=up
        printf '%-20s %-8s %-8s %s\n' "$name" "$state" "$pid" "${health%/healthz}"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
