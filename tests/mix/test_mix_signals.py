"""``tutti mix`` stopped by SIGINT, SIGTERM or SIGHUP halfway — while it decodes the
recordings, and while it writes the master with the stems already in its scratch folder —
exits with 128 + the signal number and one line on stderr, within 10 s, and leaves nothing
behind: no mix, no ``mix-stems/``, no ``.tutti-mix-*`` scratch folder, nothing in TMPDIR."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.mix.test_mix_badtakes import _snapshot, mix_command, mix_env
from tutti.mix.outputs import SCRATCH_PREFIX, Interrupted, SignalGuard
from tutti.mix.passes import _Pipeline, _run_jobs

RATE = 48000
SINGERS = 8
SECONDS = 90  # long enough that the mix is still running when the signal arrives


@pytest.fixture(scope="module")
def long_take(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid take of eight 90-second 16-bit recordings."""
    folder = tmp_path_factory.mktemp("signals") / "take"
    folder.mkdir()
    rng = np.random.default_rng(3)
    recs = []
    n = SECONDS * RATE
    for i in range(SINGERS):
        x = (0.05 * rng.standard_normal(n)).astype(np.float32)
        sf.write(folder / f"s{i}.wav", x, RATE, subtype="PCM_16")
        recs.append(
            {"file": f"s{i}.wav", "singer": f"s{i}", "part": "SATB"[i % 4], "rate": RATE,
             "channels": 1, "frames": n, "start_offset": 100 * i, "latency": 0}
        )  # fmt: skip
    manifest = {"format": "tutti-take", "version": 1, "rate": RATE, "recordings": recs}
    import json

    (folder / "take.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _default_signals() -> None:
    """In the child: the signals' default actions, even when this run was started under
    ``nohup`` (the mix keeps an ignored SIGHUP ignored, as it should)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "stage"),
    [
        (signal.SIGINT, "reading and analysing: "),
        (signal.SIGTERM, "reading and analysing: "),
        (signal.SIGINT, "mastering and writing: "),
        (signal.SIGTERM, "mastering and writing: "),
        (signal.SIGHUP, "mastering and writing: "),
    ],
)
def test_signal_midway_leaves_nothing(
    long_take: Path, tmp_path: Path, sig: signal.Signals, stage: str
) -> None:
    before = _snapshot(long_take.parent)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(
        mix_command(long_take, "--stems", "--project", "--jobs", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=mix_env(tmpdir),
        preexec_fn=_default_signals,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # wait for the stage to begin
            if line.startswith(stage):
                break
        else:
            pytest.fail(f"the mix ended before {stage!r}: {proc.wait()} {proc.stderr}")
        assert list(long_take.glob(f"{SCRATCH_PREFIX}*")), "the mix should be under way"
        start = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        seconds = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert err.splitlines() == [f"tutti mix: interrupted by {sig.name}; no output written"]
    assert seconds < 10.0
    assert _snapshot(long_take.parent) == before  # no mix, no stems, no scratch
    assert list(tmpdir.iterdir()) == []


def test_signal_while_the_pool_starts_a_thread_stops_that_thread_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal that lands inside ``Thread.start`` (the main thread waits there for the new
    thread) must not leave a job running that the pool does not know: it would write into
    the scratch folder after its removal (seen once in CI: a ``0000.raw`` left behind)."""
    stop = threading.Event()
    ended = threading.Event()
    real_start = threading.Thread.start

    def start_then_signal(thread: threading.Thread) -> None:
        real_start(thread)
        if thread.name.startswith("ThreadPoolExecutor"):
            signal.raise_signal(signal.SIGTERM)  # as if it came during the wait in start()

    def job() -> str:
        stop.wait(10)  # a pass-1 job runs until it ends or is stopped
        ended.set()
        return "job"

    monkeypatch.setattr(threading.Thread, "start", start_then_signal)
    try:
        with SignalGuard() as guard, pytest.raises(Interrupted):
            _run_jobs(contextlib.nullcontext(lambda _: None), [job], 1, stop,
                      _Pipeline(lambda: pytest.fail("no mixdown here")), guard.hold)  # fmt: skip
        assert stop.is_set(), "the jobs were not told to stop"
        assert ended.is_set(), "a job still runs after pass 1 ended"
    finally:
        stop.set()
