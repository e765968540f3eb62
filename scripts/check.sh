#!/usr/bin/env bash
# Static checks over the whole tree: ruff (lint and format) and mypy --strict.
# mypy cannot follow the editable install's import hook that maps server/, client/, audio/ ...
# to tutti.server, tutti.client, tutti.audio (every cross-package import would be Any), so it
# checks a tree of symbolic links laid out as the installed package, built from pyproject.toml.
set -euo pipefail
. "$(dirname "$0")/bootstrap.sh" "test"

cd "$ROOT"
ruff check .
ruff format --check .

TREE="$ROOT/build/typecheck"
rm -rf "$TREE"
mkdir -p "$TREE/tutti"
for entry in tutti/*; do
    [ "$(basename "$entry")" = "__pycache__" ] || ln -s "$ROOT/$entry" "$TREE/tutti/"
done
python - "$ROOT" "$TREE" <<'PY'
import pathlib
import sys
import tomllib

root, tree = map(pathlib.Path, sys.argv[1:])
folders = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
for name, folder in folders.items():
    if name.startswith("tutti."):
        (tree / name.replace(".", "/")).symlink_to(root / folder)
PY
ln -s "$ROOT/tests" "$TREE/tests"
cd "$TREE"
mypy --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/build/mypy-cache" -p tutti -p tests
