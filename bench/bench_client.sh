#!/usr/bin/env bash
# The singer client's figures: clock-offset error (loopback and through a 20 ± 10 ms jitter
# proxy) and start skew across 2 and 8 `tutti join` processes on one JACK dummy server.
# They are measured by the tests that assert the issue's bounds; this runs those tests with
# their printed figures shown.  Repeat with --count (pytest-repeat is not needed: the loop is
# here) to collect several runs, e.g. `bash bench/bench_client.sh 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
for i in $(seq "$runs"); do
    echo "== run $i/$runs"
    .venv/bin/python -m pytest -s -q -p no:cacheprovider \
        tests/client/test_clock.py::test_loopback_offset_error_p99_below_50_us \
        tests/client/test_clock.py::test_jitter_proxy_offset_error_below_1_ms \
        "tests/client/test_join_jack.py::test_choir_starts_together" 2>&1 \
        | grep -Ei "µs|us |frames|spread|p50|p99" || true
done
