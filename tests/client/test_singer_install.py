"""A singer's install, as docs/singers.md tells it: ``pipx install`` of tutti without extras
gives a working ``tutti join`` and ``tutti calibrate``, and leaves the mixer's and the server's
libraries out; asking that install to mix says what to install instead of a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: what only the mixer or the server needs; a singer's install must not pull any of it
NOT_FOR_SINGERS = ("numba", "llvmlite", "pyloudnorm", "soxr", "miniaudio", "prometheus_client")


def _pipx_install(home: Path) -> Path:
    env = {**os.environ, "PIPX_HOME": str(home / "pipx"), "PIPX_BIN_DIR": str(home / "bin")}
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    res = subprocess.run(
        ["pipx", "install", str(ROOT)], env=env, capture_output=True, text=True, timeout=840
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    print(f"\nsinger's pipx install: {time.monotonic() - started:.0f} s")
    return home


def _site_packages(home: Path) -> Path:
    found = list((home / "pipx" / "venvs" / "tutti").glob("lib/python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def _run(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(home / "bin" / "tutti"), *argv], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("pipx") is None, reason="no pipx (scripts/test.sh installs it)")
def test_pipx_install_sings_and_leaves_the_mixer_out(tmp_path: Path) -> None:
    home = _pipx_install(tmp_path)
    site = _site_packages(home)
    present = [name for name in NOT_FOR_SINGERS if (site / name).is_dir()]
    assert present == [], f"a singer's install pulled {present}"
    assert (site / "sounddevice.py").is_file() and (site / "scipy").is_dir()

    for command in ("join", "calibrate", "devices"):
        res = _run(home, command, "--help")
        assert res.returncode == 0 and f"tutti {command}" in res.stdout, res.stderr

    mix = _run(home, "mix", str(tmp_path))
    assert mix.returncode == 1, mix.stderr
    assert "pip install 'tutti[mix]'" in mix.stderr and "Traceback" not in mix.stderr
    serve = _run(home, "serve", "--help")
    assert serve.returncode == 1 and "'tutti[server]'" in serve.stderr, serve.stderr
