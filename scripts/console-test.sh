#!/usr/bin/env bash
# Runs a browser test of the read API's web console: a Python Playwright script driving
# Debian's Chromium headless. Installs what is missing first, idempotently: the `chromium`
# Debian package (apt) and the `playwright` Python package into .dev/venv. Playwright's own
# browser download is never used (it cannot work without internet); the script launches
# $CHROMIUM (default /usr/bin/chromium). Exits with the script's status.
#
#   scripts/console-test.sh --install              install only
#   scripts/console-test.sh <script.py> [args...]  install if needed, then run the script
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.dev/venv"
PLAYWRIGHT_VERSION="1.65.2"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

log() { printf '[console-test] %s\n' "$*" >&2; }

if [ $# -lt 1 ] || [[ "$1" == -* && "$1" != "--install" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

installed() {
    [ -x "$CHROMIUM" ] && "$VENV/bin/python" -c 'import playwright' >/dev/null 2>&1
}

# Install once; concurrent runs wait for each other instead of racing apt or pip.
if ! installed; then
    mkdir -p "$ROOT/.dev"
    (
        flock 9
        if [ ! -x "$CHROMIUM" ]; then
            log "installing Debian's chromium"
            sudo=""
            [ "$(id -u)" -eq 0 ] || sudo="sudo"
            $sudo apt-get update -qq || exit 1
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null || exit 1
        fi
        if ! "$VENV/bin/python" -c 'import playwright' >/dev/null 2>&1; then
            [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || exit 1
            log "installing playwright $PLAYWRIGHT_VERSION into $VENV (its browser download is not used)"
            "$VENV/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION" || exit 1
        fi
    ) 9>"$ROOT/.dev/console-test.install.lock" || { log "cannot install chromium or playwright"; exit 1; }
    installed || { log "chromium or playwright still missing after installing"; exit 1; }
fi

[ "$1" = "--install" ] && exit 0
exec "$VENV/bin/python" "$@"
