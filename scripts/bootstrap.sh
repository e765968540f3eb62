# Sourced by scripts/serve.sh and scripts/test.sh: make sure a Python ≥ 3.11 virtual
# environment with tutti installed exists at .venv (or $TUTTI_VENV).
# Usage: . scripts/bootstrap.sh [EXTRAS]   e.g. ". scripts/bootstrap.sh test"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TUTTI_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "bootstrap: need root to run: $*" >&2; return 1; fi
}

apt_install() {
    # apt_install PKG... — install the Debian packages that are missing.
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        echo "bootstrap: please install these packages: ${missing[*]}" >&2; return 1
    fi
    echo "bootstrap: installing ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    apt_install python3 python3-venv python3-pip
    PY=python3
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: tutti needs Python ≥ 3.11; $("$PY" --version) found" >&2; exit 1; }
# soundfile bundles libsndfile in its wheel; sounddevice needs the system's PortAudio.
apt_install libportaudio2 libsndfile1

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
# Re-install only when pyproject.toml changed since the last install.
STAMP="$VENV/.tutti-installed-$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$SPEC" >&2
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"

web_install() {
    # web_install — the leader's web app's npm packages into web/node_modules (npm ci from
    # the lockfile, only when it changed); the server serves them from there, never a CDN.
    command -v npm >/dev/null || apt_install nodejs npm
    local stamp="$ROOT/web/node_modules/.tutti-installed"
    if [ ! -f "$stamp" ] || [ "$ROOT/web/package-lock.json" -nt "$stamp" ]; then
        echo "bootstrap: installing the web app's packages (npm ci in web/)" >&2
        (cd "$ROOT/web" && npm ci --no-audit --no-fund --loglevel=error >&2)
        touch "$stamp"
    fi
}
