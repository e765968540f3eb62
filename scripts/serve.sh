#!/usr/bin/env bash
# Start a tutti server on its embedded defaults (SQLite + ./tutti-data), installing what it
# needs first (the Python packages, and the npm packages of the leader's web app).  Extra
# arguments go to `tutti serve` (e.g. --host 0.0.0.0 --port 8765).
set -euo pipefail
. "$(dirname "$0")/bootstrap.sh" "server"
# Without its packages the web app's page says what to run; the server starts all the same.
web_install || echo "serve.sh: the web app's packages could not be installed; see above" >&2
exec tutti serve "$@"
