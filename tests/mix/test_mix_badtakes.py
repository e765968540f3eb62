"""Over 500 bad take folders (:mod:`tests.mix.badtakes`) through ``python -m tutti mix`` as real
subprocesses: each must exit with status 2 and one line on stderr naming what is wrong, within
10 s, and leave nothing behind — no new file or folder in or beside the take folder (no
``mix-stems/``, no ``.tutti-mix-*`` scratch, no ``.part``), none in TMPDIR, no file changed.

The subprocesses run a few at a time (each imports numpy, soundfile and, once it reaches the
audio, scipy and numba); the test prints how long the corpus took.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mix.badtakes import Case, cases, write_base

TIMEOUT_S = 10.0
WORKERS = 3  # subprocesses at a time: they wait on imports and the disk as much as on a core

Snapshot = frozenset[tuple[str, str, int, int]]


@dataclass
class Outcome:
    case: Case
    code: int | None
    stderr: str
    seconds: float
    changed: list[str]


def _snapshot(folder: Path) -> Snapshot:
    """Every entry under ``folder`` (links not followed): path, kind, size, mtime of files."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "l" if p.is_symlink() else "d" if p.is_dir() else "f"
            size, mtime = (st.st_size, st.st_mtime_ns) if kind == "f" else (0, 0)
            out.add((str(p.relative_to(folder)), kind, size, mtime))
    return frozenset(out)


def mix_command(take: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "tutti", "mix", str(take), *options]


def mix_env(tmpdir: Path) -> dict[str, str]:
    """The environment of a ``tutti mix`` subprocess: its own TMPDIR, output unbuffered."""
    return {**os.environ, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _run_case(index: int, case: Case, base: Path, root: Path) -> Outcome:
    home = root / f"{index:03d}"  # the case's take folder and what sits beside it
    take = home / "take"
    shutil.copytree(base, take, symlinks=True)
    case.mutate(take)
    tmpdir = root / f"tmp-{index:03d}"
    tmpdir.mkdir()
    before = _snapshot(home)
    start = time.monotonic()
    try:
        done = subprocess.run(
            mix_command(take, *case.options),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            env=mix_env(tmpdir),
            cwd=home,
        )
        code: int | None = done.returncode
        err = done.stderr
    except subprocess.TimeoutExpired as exc:
        code, err = None, str(exc.stderr or "")
    seconds = time.monotonic() - start
    after = _snapshot(home)
    changed = sorted(str(e) for e in before ^ after)
    changed += [f"TMPDIR: {p.name}" for p in tmpdir.iterdir()]
    return Outcome(case, code, err, seconds, changed)


def _problems(o: Outcome) -> list[str]:
    """What is wrong with one outcome (empty: it failed cleanly)."""
    name = o.case.name[:60]
    lines = o.stderr.splitlines()
    out = []
    if o.code is None:
        out.append(f"{name}: no exit within {TIMEOUT_S} s")
    elif o.code != 2:
        out.append(f"{name}: exit status {o.code}, expected 2; stderr: {o.stderr[-300:]!r}")
    if len(lines) != 1 or not lines[0].startswith("tutti mix: error: "):
        out.append(f"{name}: expected one 'tutti mix: error:' line, got {o.stderr[-300:]!r}")
    else:
        missing = [w for w in o.case.expect if w not in lines[0]]
        if missing:
            out.append(f"{name}: the message does not name {missing}: {lines[0][:300]!r}")
    if o.changed:
        out.append(f"{name}: left behind or changed {o.changed[:4]}")
    return out


def _base(tmp_path: Path) -> Path:
    """The valid take every case mutates; it must mix (so each case fails by its mutation)."""
    base = write_base(tmp_path / "base")
    trial = tmp_path / "base-trial"
    shutil.copytree(base, trial, symlinks=True)
    done = subprocess.run(
        mix_command(trial, "--stems", "--project"),
        capture_output=True,
        text=True,
        timeout=120,
        env=mix_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    stems = sorted(p.name for p in (trial / "mix-stems").iterdir())  # two singers, the backing
    assert (trial / "mix.flac").is_file() and len(stems) == 3, stems
    return base


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bad_take_folders_fail_cleanly(tmp_path: Path) -> None:
    base = _base(tmp_path)
    corpus = cases()
    assert len(corpus) >= 500
    root = tmp_path / "cases"
    root.mkdir()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(lambda ic: _run_case(ic[0], ic[1], base, root), enumerate(corpus)))
    wall = time.monotonic() - start
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(
        f"\n{len(outcomes)} bad take folders in {wall:.1f} s ({WORKERS} at a time); "
        f"slowest {slowest.seconds:.2f} s ({slowest.case.name[:40]}), "
        f"mean {sum(o.seconds for o in outcomes) / len(outcomes):.2f} s"
    )
    problems = [p for o in outcomes for p in _problems(o)]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
