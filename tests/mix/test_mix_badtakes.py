"""Over 500 bad take folders (:mod:`tests.mix.badtakes`) through ``tutti mix``, each in a process
of its own: each must exit with status 2 and one line on stderr naming what is wrong, within
10 s, and leave nothing behind — no new file or folder in or beside the take folder (no
``mix-stems/``, no ``.tutti-mix-*`` scratch, no ``.part``), none in TMPDIR, no file changed.

The first and last case of each kind run as real ``python -m tutti mix`` subprocesses; the rest
run in children forked from warm interpreters (:mod:`tests.support.forkrun`), which spares each
case Python's imports (numpy, soundfile, scipy, numba) but not a fresh process, its own
TMPDIR, working folder, exit status and stderr.  A few run at a time; the test prints how long
the corpus took.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mix.badtakes import Case, kinds, write_base
from tests.support.forkrun import ForkRunner

TIMEOUT_S = 10.0
WORKERS = 3  # subprocesses at a time: they wait on imports and the disk as much as on a core

Snapshot = frozenset[tuple[str, str, int, int]]


@dataclass
class Outcome:
    case: Case
    forked: bool
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


def _run_case(
    index: int, case: Case, base: Path, root: Path, runners: queue.Queue[ForkRunner] | None
) -> Outcome:
    """One case in a real subprocess (``runners`` None) or a child of a warm interpreter."""
    home = root / f"{index:03d}"  # the case's take folder and what sits beside it
    take = home / "take"
    shutil.copytree(base, take, symlinks=True)
    case.mutate(take)
    tmpdir = root / f"tmp-{index:03d}"
    tmpdir.mkdir()
    before = _snapshot(home)
    if runners is None:
        code, err, seconds = _subprocess(take, case, home, tmpdir)
    else:
        runner = runners.get()
        try:
            ran = runner.run(["mix", str(take), *case.options], cwd=home, env=mix_env(tmpdir),
                             timeout=TIMEOUT_S, spool=root / f"spool-{index:03d}")  # fmt: skip
        finally:
            runners.put(runner)
        code, err, seconds = ran.code, ran.stderr, ran.seconds
    after = _snapshot(home)
    changed = sorted(str(e) for e in before ^ after)
    changed += [f"TMPDIR: {p.name}" for p in tmpdir.iterdir()]
    return Outcome(case, runners is not None, code, err, seconds, changed)


def _subprocess(take: Path, case: Case, home: Path, tmpdir: Path) -> tuple[int | None, str, float]:
    """``python -m tutti mix`` on one case: exit status (None: timed out), stderr, seconds."""
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
    return code, err, time.monotonic() - start


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


def _in_subprocess(corpus: dict[str, list[Case]]) -> set[str]:
    """The cases that run as real ``python -m tutti mix``: the first and last of each kind."""
    return {c.name for group in corpus.values() for c in (group[0], group[-1])}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_bad_take_folders_fail_cleanly(tmp_path: Path) -> None:
    base = _base(tmp_path)
    by_kind = kinds()
    corpus = [c for group in by_kind.values() for c in group]
    assert len(corpus) >= 500
    real = _in_subprocess(by_kind)
    root = tmp_path / "cases"
    root.mkdir()
    runners: queue.Queue[ForkRunner] = queue.Queue()
    for _ in range(WORKERS):
        runners.put(ForkRunner())
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            outcomes = list(pool.map(
                lambda ic: _run_case(ic[0], ic[1], base, root,
                                     None if ic[1].name in real else runners),
                enumerate(corpus),
            ))  # fmt: skip
    finally:
        for _ in range(WORKERS):
            runners.get().close()
    wall = time.monotonic() - start
    slowest = max(outcomes, key=lambda o: o.seconds)
    forked = sum(o.forked for o in outcomes)
    print(
        f"\n{len(outcomes)} bad take folders in {wall:.1f} s ({WORKERS} at a time, "
        f"{len(outcomes) - forked} as python -m tutti, {forked} forked warm); "
        f"slowest {slowest.seconds:.2f} s ({slowest.case.name[:40]}), "
        f"mean {sum(o.seconds for o in outcomes) / len(outcomes):.2f} s"
    )
    assert len(outcomes) - forked >= 2 * len(by_kind)
    problems = [p for o in outcomes for p in _problems(o)]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
