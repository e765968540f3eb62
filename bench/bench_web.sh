#!/usr/bin/env bash
# The leader page under 1,000 singers: how long one batched `levels` update of all 1,000 roster
# rows takes in headless Chromium (script, DOM writes, style and layout, measured by the page
# with performance.now()).  Runs the test that drives it and shows its printed figures; repeat
# with RUNS, e.g. `bash bench/bench_web.sh 3`.  The goal is a median under 16 ms (one frame).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
for i in $(seq "$runs"); do
    echo "== run $i/$runs (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    .venv/bin/python -m pytest -s -q -p no:cacheprovider \
        tests/web/test_web.py::test_roster_of_1000_updates_within_a_frame 2>&1 \
        | grep -E "1,000-row level update" || true
done
