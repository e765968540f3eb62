#!/usr/bin/env bash
# Start a tutti server on its embedded defaults (SQLite + ./tutti-data), installing what it
# needs first.  Extra arguments go to `tutti serve` (e.g. --host 0.0.0.0 --port 8765).
set -euo pipefail
. "$(dirname "$0")/bootstrap.sh" "server"
exec tutti serve "$@"
