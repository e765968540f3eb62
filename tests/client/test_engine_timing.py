"""Two singer processes scheduled at the same local t0 start together (harness-measured)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.jack import JackServer, Recorder, RecorderProcess, first_nonzero

pytestmark = pytest.mark.jack
ROOT = Path(__file__).resolve().parents[2]
RATE = 48000


def _spawn(jack: JackServer, name: str, t0: float, blocksize: int) -> subprocess.Popen[str]:
    env = jack.env
    env["TUTTI_JACK_CLIENT_NAME"] = name
    cmd = [sys.executable, "-m", "tests.client.engine_child", "play", "--t0", repr(t0)]
    cmd += ["--blocksize", str(blocksize), "--seconds", "0.5"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _ready(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "READY":
        _, err = p.communicate(timeout=10)
        raise AssertionError(f"child did not start: {line!r} {err}")


@pytest.mark.parametrize("blocksizes", [(0, 0), (256, 0)], ids=["same", "mixed-blocksize"])
def test_two_processes_first_samples_within_48_frames(
    jack: JackServer, blocksizes: tuple[int, int]
) -> None:
    rec = Recorder(channels=2, seconds=12.0).start()
    names = [f"singer{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    t0 = time.monotonic() + 6.0  # one broadcast start time for both (shared CLOCK_MONOTONIC)
    procs = [_spawn(jack, n, t0, bs) for n, bs in zip(names, blocksizes, strict=True)]
    try:
        for p in procs:
            _ready(p)
        for i, n in enumerate(names):
            rec.add_source(i, f"{n}:out_0")
        assert time.monotonic() < t0 - 0.5, "machine too slow to set up before t0"
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        audio = rec.stop()
    first = first_nonzero(audio, 0.5)
    assert None not in first, first
    skew = abs(first[0] - first[1])  # type: ignore[operator]
    for r in results:
        assert r["error"] is None
    print(
        f"\nblocksizes {blocksizes}: first samples at harness frames {first}, skew {skew} "
        f"frames ({skew / RATE * 1000:.3f} ms); clock uncertainty "
        f"{[round(r['clock_uncertainty_us'], 1) for r in results]} µs"
    )
    assert skew <= 48


def test_recorder_process_harness_records_ports(jack: JackServer, tmp_path: Path) -> None:
    """The out-of-process harness (for `tutti join` tests) records what a singer plays."""
    name = f"solo-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic() + 5.0
    p = _spawn(jack, name, t0, 0)
    try:
        _ready(p)
        harness = RecorderProcess(jack, [f"{name}:out_0"], tmp_path / "h.npy", seconds=7.0)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        audio = harness.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert audio.shape[1] == 1
    (i,) = first_nonzero(audio, 0.5)
    assert i is not None and abs(float(audio[i, 0]) - 0.8) < 1e-6
