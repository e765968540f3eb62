"""A singer-side process for the engine tests (run as ``python -m tests.client.engine_child``).

``play``: start a DuplexEngine on the JACK "system" device (client name from
``TUTTI_JACK_CLIENT_NAME``), print ``READY``, play a program whose first sample is a
marker at local monotonic time ``--t0`` (or, without it, at the time the parent then writes
to stdin), print the take's numbers as JSON, exit.

``record``: wire the engine's own output to its input (digital loopback), measure L, record
a long program through a crash-safe :class:`TakeWriter` into ``--store``; prints
``RECORDING <json>`` once the take runs, then waits to be killed.

``loop``: the same loopback and calibration, then a ``--seconds`` noise program recorded in
memory; prints ``RECORDING <json>`` once the take runs (the parent may stop this process
meanwhile) and, when it ends, saves the recording to ``--out`` (``.npy``) and prints
``DONE <json>`` with the take's numbers, gaps and slips.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from tests.support.jack import isolate_ports, jack_connect, new_ports
from tutti.audio.types import AudioArray
from tutti.client.calibrate import measure
from tutti.client.engine import DuplexEngine
from tutti.client.takestore import TakeStore


def marker_program(frames: int, channels: int = 2) -> AudioArray:
    """Sample 0 = 0.8 (the marker), then reproducible noise (~-20 dBFS) from frame 48 on,
    so the program's position can also be found by cross-correlation."""
    prog = np.zeros((frames, channels), np.float32)
    prog[48:] = noise_program(frames - 48, 5, channels)
    prog[0] = 0.8
    return prog


def noise_program(frames: int, seed: int, channels: int = 2) -> AudioArray:
    """Reproducible noise at about -20 dBFS."""
    rng = np.random.default_rng(seed)
    mono = (0.1 * rng.standard_normal(frames)).clip(-0.9, 0.9).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def _play(a: argparse.Namespace) -> int:
    eng = DuplexEngine(rate=48000, device="system", blocksize=a.blocksize)
    eng.start()
    print("READY", flush=True)
    t0 = a.t0 if a.t0 is not None else float(sys.stdin.readline())
    prog = marker_program(int(a.seconds * 48000))
    take = eng.schedule(prog, t0, record=False, tail=0.0)
    take.wait(a.seconds + (t0 - time.monotonic()) + 10)
    assert eng.clock is not None and take.first_dac_time is not None
    print(
        json.dumps(
            {
                "o0": take.o0,
                "error": take.error,
                "late_frames": take.late_frames,
                "frame_at_end": eng.frame,
                "clock_uncertainty_us": eng.clock.uncertainty * 1e6,
                "dac_error_us": (take.first_dac_time - t0) * 1e6,
                "first_dac_time": take.first_dac_time,
                "underflows": take.underflows,
            }
        ),
        flush=True,
    )
    eng.close()
    return 0


def _loopback_engine() -> tuple[DuplexEngine, int]:
    """A started engine whose output is wired to its own input, and its measured round trip."""
    with new_ports() as ports:
        eng = DuplexEngine(rate=48000, device="system", blocksize=256)
        eng.start()
    isolate_ports(ports)
    jack_connect(ports[1], ports[0])  # out_0 -> in_0
    return eng, measure(eng, repeats=1).frames


def _record(a: argparse.Namespace) -> int:
    eng, latency = _loopback_engine()
    store = TakeStore(a.store)
    writer = store.begin(
        "take-kill",
        rate=48000,
        channels=1,
        singer="kill-test",
        part="A",
        latency=latency,
        device=eng.device_info,
    )
    prog = noise_program(int(a.seconds * 48000), a.seed)
    t0 = time.monotonic() + 0.5
    take = eng.schedule(prog, t0, record=True, writer=writer, tail=0.0)
    while take.r0 is None and take.error is None:
        time.sleep(0.01)
    info = {"t0": t0, "latency": latency, "start_offset": take.start_offset, "pid": os.getpid()}
    print("RECORDING " + json.dumps(info), flush=True)
    take.wait()
    writer.finish()
    eng.close()
    return 0


def _loop(a: argparse.Namespace) -> int:
    eng, latency = _loopback_engine()
    prog = noise_program(int(a.seconds * 48000), a.seed)
    t0 = time.monotonic() + 0.5
    take = eng.schedule(prog, t0, record=True, tail=0.0)
    while take.r0 is None and take.error is None:
        time.sleep(0.01)
    print("RECORDING " + json.dumps({"t0": t0, "pid": os.getpid()}), flush=True)
    take.wait()
    np.save(a.out, take.audio())
    info = {
        "latency": latency,
        "start_offset": take.start_offset,
        "error": take.error,
        "gaps": take.gaps,
        "slips": take.slips,
        "lost_in": eng.input_account.lost,
        "lost_out": eng.output_account.lost,
    }
    print("DONE " + json.dumps(info), flush=True)
    eng.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("play")
    p.add_argument("--t0", type=float, help="local monotonic time; default: read from stdin")
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--blocksize", type=int, default=0)
    r = sub.add_parser("record")
    r.add_argument("--store", required=True)
    r.add_argument("--seconds", type=float, default=60.0)
    r.add_argument("--seed", type=int, default=7)
    lp = sub.add_parser("loop")
    lp.add_argument("--out", required=True)
    lp.add_argument("--seconds", type=float, default=6.0)
    lp.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    return {"play": _play, "record": _record, "loop": _loop}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
