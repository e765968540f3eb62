"""The tree passes its own static checks: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ruff_and_mypy_are_clean() -> None:
    env = {**os.environ, "TUTTI_VENV": str(Path(sys.prefix))}
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
