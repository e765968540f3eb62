"""Round-trip latency calibration — ``tutti calibrate`` — and the stored result.

The measurement runs through the same engine and the same timeline numbers as a take: the
test signal (:func:`tutti.audio.latency.test_signal`) is scheduled like a program, the
recording comes back with its ``start_offset = r0 - o0``, and the estimator's delay ``d`` of
the played signal inside the recording gives ``L = d + start_offset`` (DESIGN.md: a sample
output at frame ``n`` returns at input frame ``n + L``).

The result is stored in the user config, section ``"calibration"``, under
``"<device key>|<rate>|<blocksize>"``: the round trip depends on the device, the rate *and*
the callback blocksize (PortAudio adds a buffer when it adapts to a fixed blocksize), so a
value is only reused with all three equal.  :func:`latency_for` is what ``tutti join`` asks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tutti.audio.latency import LatencyError, LatencyEstimate, estimate_latency, test_signal
from tutti.client import config
from tutti.client.devices import DeviceError
from tutti.client.engine import DuplexEngine, EngineError
from tutti.errors import TuttiError

__all__ = [
    "CalibrationError",
    "Calibration",
    "LatencyChoice",
    "calibration_key",
    "measure",
    "wait_for_loopback",
    "store",
    "stored",
    "latency_for",
    "add_arguments",
    "run",
]

SECTION = "calibration"


class CalibrationError(TuttiError):
    """The latency could not be measured reliably; the message says why and what to try."""


@dataclass(frozen=True)
class Calibration:
    """A round-trip measurement.

    Attributes
    ----------
    frames : int
        Round-trip latency L in frames (the median of the runs).
    runs : list of float
        Each run's L with its fractional part, frames.
    confidence, snr_db : float
        Worst peak-to-sidelobe ratio and SNR over the runs.
    rate, blocksize : int
        Stream parameters it holds for.
    device : str
        Device key (host API and name).
    reported : int
        What the host API reports for the same stream, frames (for comparison).
    xruns : int
        Input overflows + output underflows during the runs (a run disturbed by one may
        disagree with the others; then more runs are made).
    """

    frames: int
    runs: list[float]
    confidence: float
    snr_db: float
    rate: int
    blocksize: int
    device: str
    reported: int
    xruns: int = 0

    @property
    def ms(self) -> float:
        return 1000.0 * self.frames / self.rate


@dataclass(frozen=True)
class LatencyChoice:
    """The latency a take will use: ``frames``, where it came from, and a warning if any."""

    frames: int
    source: str  # "measured" | "reported"
    warning: str | None = None


def calibration_key(device: str, rate: int, blocksize: int) -> str:
    """Config key for a device key, rate (Hz) and blocksize (frames, 0 = host's choice)."""
    return f"{device}|{rate}|{blocksize}"


def _one_run(
    engine: DuplexEngine, signal: np.ndarray[Any, Any], max_latency_s: float
) -> tuple[float, LatencyEstimate, int]:
    program = np.repeat(signal, engine.out_channels, axis=1)
    take = engine.schedule(program, time.monotonic() + 0.15, record=True, tail=0.0)
    if not take.wait(10.0 + program.shape[0] / engine.rate):
        engine.stop_take()
        raise CalibrationError("the audio device stopped delivering audio during the measurement")
    if take.error:
        raise CalibrationError(f"the measurement take failed: {take.error}")
    rec = take.audio()[:, :1]
    est = estimate_latency(signal, rec, engine.rate, max_latency_s=max_latency_s)
    return est.subsample + take.start_offset, est, take.overflows + take.underflows


def wait_for_loopback(engine: DuplexEngine, seconds: float, *, level_db: float = -20.0) -> bool:
    """Play short tone bursts until one comes back (the ear cup meets the mic), ≤ ``seconds``.

    Returns True as soon as a burst is heard above -60 dBFS, False when time runs out.
    """
    rate = engine.rate
    t = np.arange(int(0.05 * rate)) / rate
    burst = (10 ** (level_db / 20) * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    program = np.repeat(burst[:, None], engine.out_channels, axis=1)
    deadline = time.monotonic() + seconds
    while True:
        take = engine.schedule(program, time.monotonic() + 0.08, record=True, tail=0.25)
        take.wait(5.0)
        rec = take.audio() if take.error is None else np.zeros((0, 1), np.float32)
        if rec.size and float(np.max(np.abs(rec))) > 1e-3:
            return True
        if time.monotonic() >= deadline:
            return False


def measure(
    engine: DuplexEngine,
    *,
    repeats: int = 3,
    max_latency_s: float = 0.5,
    level_db: float = -12.0,
    sweep_s: float = 0.5,
    progress: Any = None,
) -> Calibration:
    """Measure the round trip through a started engine.

    Runs ``repeats`` measurements; if they spread by more than one frame, runs ``repeats``
    more and requires the last ``repeats`` to agree within one frame.

    Parameters
    ----------
    engine : DuplexEngine
        Started; its output must reach its input (loopback).
    repeats : int
        Runs that must agree (≥ 1).
    max_latency_s : float
        Largest round trip searched, seconds.
    level_db : float
        Test-signal peak level, dBFS.
    progress : callable(str) or None
        Called with a line per run.

    Raises
    ------
    LatencyError
        A run found no clear echo (silence, clipping, noise).
    CalibrationError
        The runs disagree, or the engine failed.
    """
    if repeats < 1:
        raise CalibrationError(f"repeats must be ≥ 1, not {repeats}")
    signal = test_signal(
        engine.rate, duration_s=sweep_s, lead_s=0.05, tail_s=max_latency_s, level_db=level_db
    )
    runs: list[float] = []
    ests: list[LatencyEstimate] = []
    xruns = 0
    failures: list[str] = []
    for attempt in range(2 * repeats + repeats):
        if len(runs) >= 2 * repeats:
            break
        try:
            value, est, xr = _one_run(engine, signal, max_latency_s)
        except (LatencyError, CalibrationError) as exc:
            # One run lost to a dropout or a noise burst is retried; a loopback that never
            # answers fails every run and is reported after ``repeats`` misses.
            failures.append(str(exc))
            if progress is not None:
                progress(f"run {attempt + 1}: no measurement ({exc}); retrying")
            if len(failures) >= repeats:
                raise
            continue
        xruns += xr
        runs.append(value)
        ests.append(est)
        if progress is not None:
            progress(
                f"run {attempt + 1}: {value:.2f} frames = {1000 * value / engine.rate:.3f} ms "
                f"(confidence {est.confidence:.0f}, SNR {est.snr_db:.0f} dB)"
            )
        last = runs[-repeats:]
        if len(runs) >= repeats and max(last) - min(last) <= 1.0:
            break
    if not (len(runs) >= repeats and max(runs[-repeats:]) - min(runs[-repeats:]) <= 1.0):
        raise CalibrationError(
            "the round trip is unstable: runs gave "
            + ", ".join(f"{r:.1f}" for r in runs)
            + " frames; check the loopback (ear cup firmly on the mic), close other audio "
            "programs, or use a larger --blocksize"
        )
    last = runs[-repeats:]
    return Calibration(
        frames=int(round(statistics.median(last))),
        runs=runs,
        confidence=min(e.confidence for e in ests[-repeats:]),
        snr_db=min(e.snr_db for e in ests[-repeats:]),
        rate=engine.rate,
        blocksize=engine.blocksize,
        device=engine.device_key,
        reported=engine.reported_latency,
        xruns=xruns,
    )


def store(cal: Calibration) -> str:
    """Save a measurement in the user config; returns its key."""
    key = calibration_key(cal.device, cal.rate, cal.blocksize)
    value = asdict(cal)
    value.update(
        latency_source="measured",
        ms=cal.ms,
        measured_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    config.update_section(SECTION, key, value)
    return key


def stored(device: str, rate: int, blocksize: int) -> dict[str, Any] | None:
    """The stored entry for this device, rate and blocksize, or None."""
    sec = config.load().get(SECTION, {})
    entry = sec.get(calibration_key(device, rate, blocksize)) if isinstance(sec, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("frames"), int) and entry["frames"] >= 0:
        return entry
    return None


def latency_for(engine: DuplexEngine) -> LatencyChoice:
    """The latency a take on this (started) engine should record.

    The stored measurement when there is one; otherwise the host API's reported round trip,
    with a warning to show the singer (the take then records ``latency_source="reported"``).
    """
    entry = stored(engine.device_key, engine.rate, engine.blocksize)
    if entry is not None and entry.get("latency_source") == "measured":
        return LatencyChoice(int(entry["frames"]), "measured")
    reported = engine.reported_latency
    return LatencyChoice(
        reported,
        "reported",
        f"WARNING: no measured latency for {engine.device_key!r} at {engine.rate} Hz "
        f"(blocksize {engine.blocksize}); using the device's reported {reported} frames "
        f"({1000 * reported / engine.rate:.1f} ms), which may be wrong — run `tutti calibrate`",
    )


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tutti calibrate``."""
    parser.add_argument("--device", help="device number or part of its name (see `tutti devices`)")
    parser.add_argument("--rate", type=int, default=48000, help="sample rate in Hz (48000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs that must agree (3)")
    parser.add_argument(
        "--blocksize", type=int, default=0, help="frames per callback; 0 = device's choice"
    )
    parser.add_argument(
        "--max-latency", type=float, default=0.5, help="largest round trip searched, s (0.5)"
    )
    parser.add_argument("--level", type=float, default=-12.0, help="test signal level, dBFS")
    parser.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the sound to come back before measuring (10)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _fallback(engine: DuplexEngine, why: str) -> int:
    print(f"tutti calibrate: could not measure the latency: {why}", file=sys.stderr)
    existing = stored(engine.device_key, engine.rate, engine.blocksize)
    if existing is not None and existing.get("latency_source") == "measured":
        print(
            f"keeping the earlier measurement ({existing['frames']} frames) for "
            f"{engine.device_key!r} at {engine.rate} Hz",
            file=sys.stderr,
        )
        return 1
    reported = engine.reported_latency
    config.update_section(
        SECTION,
        calibration_key(engine.device_key, engine.rate, engine.blocksize),
        {
            "frames": reported,
            "ms": 1000 * reported / engine.rate,
            "latency_source": "reported",
            "rate": engine.rate,
            "blocksize": engine.blocksize,
            "device": engine.device_key,
            "reported": reported,
            "error": why,
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    print(
        f"WARNING: falling back to the latency the device REPORTS: {reported} frames "
        f"({1000 * reported / engine.rate:.1f} ms). It is often wrong; takes will record "
        "latency_source='reported'. Hold the headset's ear cup to the mic and run "
        "`tutti calibrate` again.",
        file=sys.stderr,
    )
    return 1


def run(args: argparse.Namespace) -> int:
    """``tutti calibrate``: measure, print frames and ms, store; exit ≠ 0 on failure."""
    if args.repeats < 1 or args.repeats > 20:
        print("tutti calibrate: --repeats must be 1–20", file=sys.stderr)
        return 2
    if not 0.0 <= args.wait <= 600.0:
        print("tutti calibrate: --wait must be 0–600 seconds", file=sys.stderr)
        return 2
    if not 0.01 <= args.max_latency <= 2.0:
        print("tutti calibrate: --max-latency must be 0.01–2.0 seconds", file=sys.stderr)
        return 2
    try:
        engine = DuplexEngine(
            rate=args.rate, device=args.device, blocksize=args.blocksize, out_channels=2
        )
        engine.start()
    except (DeviceError, EngineError) as exc:
        print(f"tutti calibrate: {exc}", file=sys.stderr)
        return 2
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    try:
        say(
            f"Measuring the round trip of {engine.device_key!r} at {engine.rate} Hz: hold the "
            "headset's ear cup against its microphone (or connect a loopback cable)."
        )
        if not wait_for_loopback(engine, args.wait):
            return _fallback(
                engine,
                f"no sound came back within {args.wait:g} s (is the ear cup on the mic, the "
                "input level up, the right --device chosen?)",
            )
        try:
            cal = measure(
                engine,
                repeats=args.repeats,
                max_latency_s=args.max_latency,
                level_db=args.level,
                progress=say,
            )
        except (LatencyError, CalibrationError, EngineError) as exc:
            return _fallback(engine, str(exc))
    finally:
        engine.close()
    key = store(cal)
    if args.json:
        print(json.dumps({"key": key, "ms": cal.ms, **asdict(cal)}, indent=2))
    else:
        print(
            f"round-trip latency: {cal.frames} frames = {cal.ms:.3f} ms at {cal.rate} Hz "
            f"(device reports {cal.reported} frames); saved to {config.config_dir()}"
        )
    return 0
