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
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # pytest's 5 = "no tests collected": a failure for the whole suite, but only a note
    # when the caller selected tests (-k, a path) and the selection matched nothing.
    if [ "$#" -eq 0 ]; then
        echo "test.sh: pytest collected no tests — the suite is missing" >&2
        exit 1
    fi
    echo "test.sh: no tests matched the selection: $*" >&2
    exit 0
fi
exit "$rc"
