#!/usr/bin/env bash
# Run the whole tutti test suite, installing what the tests need first: Debian packages
# (JACK with its dummy driver, PortAudio, sox and ffmpeg for the benchmarks' peers, Chromium
# for the web app), the web app's npm packages, a virtual environment and the Python test
# dependencies.  Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "$0")/bootstrap.sh" "test"
apt_install jackd2 libportaudio2 libsndfile1 sox ffmpeg flac
# a singer's install as docs/singers.md tells it (tests/client/test_singer_install.py)
apt_install pipx
# the hosting tests: nginx in front of tutti, and the deploy/ files checked by their tools
apt_install nginx caddy openssl systemd
# the leader's web app and the singer's window are tested in Debian's Chromium driven by
# Playwright (tests/support/browser.py); the web app needs its npm packages
web_install
apt_install chromium
# the singer's window shows "Ann waved 👋": without a colour emoji font the screenshots show a box
apt_install fonts-noto-color-emoji
# the cluster tests: a real Redis and PostgreSQL 15 (initdb + pg_ctl), started by the tests
apt_install redis-server postgresql-15

cd "$ROOT"
if [ "$#" -gt 0 ]; then
    set +e
    python -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        # pytest's 5 = "no tests collected": only a note when the caller selected tests
        # (-k, a path) and the selection matched nothing.
        echo "test.sh: no tests matched the selection: $*" >&2
        exit 0
    fi
    exit "$rc"
fi

# The whole suite in two halves, one after the other: the singer's client, the end-to-end
# choirs and the pages (mostly waiting on real time: audio, browsers), then the server, the
# mix and the DSP (mostly computing).  At once they took 12 minutes on 2 cores, but on a
# slower host the computing half starved the JACK server, the singers' engines and the
# browser even when niced (two fresh-clone runs on 7 Dec: gaps of 277 ms in a recording,
# a calibration that heard no clear beeps); one after the other the audio has the machine.
# Each half has its own temporary folder; the second half's output follows the first's.
WAITING=(tests/client tests/e2e tests/web)
work="$(mktemp -d "${TMPDIR:-/tmp}/tutti-tests.XXXXXX")"
cleanup() {
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM
set +e
# (a script started in the background ignores SIGINT, and the mix's signal tests need it)
env --default-signal=SIGINT,SIGQUIT python -m pytest "${WAITING[@]}" --basetemp "$work/waiting"
waiting_rc=$?
# The computing half alone kept 1.15 cores busy (510 s); on two pytest-xdist workers, 374 s.
env --default-signal=SIGINT,SIGQUIT python -m pytest tests "${WAITING[@]/#/--ignore=}" \
    -n 2 --basetemp "$work/computing" >"$work/computing.log" 2>&1
computing_rc=$?
set -e
echo
echo "==================== the other half: ${WAITING[*]/#/--ignore=} ===================="
cat "$work/computing.log"
for rc in "$waiting_rc" "$computing_rc"; do
    if [ "$rc" -eq 5 ]; then
        echo "test.sh: pytest collected no tests in one half — the suite is missing" >&2
        exit 1
    fi
done
echo "test.sh: singer, end-to-end and pages: exit $waiting_rc; the rest: exit $computing_rc"
[ "$waiting_rc" -eq 0 ] && [ "$computing_rc" -eq 0 ]
