"""Lossy masters on target: encode, measure what came out, correct the gain, encode again.

A lossy codec moves loudness by a few hundredths to tenths of an LU and adds true-peak
overshoot, so a master brought to −16 LUFS / −1 dBTP in float may measure −16.2 LUFS and
−0.6 dBTP once encoded.  The master pass writes float to scratch; this module encodes it
(Vorbis or Opus in Ogg; Opus at 48 kHz, resampled when the take runs at another rate),
decodes the result, measures it as an outside meter would (BS.1770 integrated loudness, 4×
oversampled true peak), and encodes again with the gain that lands it within
:data:`TOLERANCE_LU` of the target and under the ceiling (a codec's loudness follows the gain
almost linearly: one correction is usually enough).  A hot master's peaks sit at the ceiling,
so what the codec took away cannot come back as a gain after the limiter; the master is then
made again, its limiter aiming higher by what was missing (:func:`remastered_on_target`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

from tutti.audio.limiter import true_peak_db
from tutti.audio.loudness import LoudnessMeter
from tutti.audio.resample import StreamResampler
from tutti.audio.types import AudioArray
from tutti.mix.decode import READ_BLOCK, Stopped
from tutti.mix.outputs import LOSSY
from tutti.mix.scratch import RawAudio

__all__ = [
    "LOSSY",
    "OPUS_RATE",
    "TOLERANCE_LU",
    "Encoded",
    "encode_on_target",
    "measure",
    "remastered_on_target",
]

#: Opus runs at 48 kHz (its other rates are below a choir's bandwidth).
OPUS_RATE = 48000
#: How close to the target the encoded file must measure, LU.
TOLERANCE_LU = 0.05
#: Encodings tried before settling for the closest.
MAX_ROUNDS = 4
#: Kept below the ceiling after encoding, dB (the true-peak estimate's own spread).
PEAK_MARGIN_DB = 0.05
#: Masters made again, aiming higher, before settling for the closest encoding.
MAX_REMASTERS = 3

Report = TypeVar("Report")


@dataclass(frozen=True)
class Encoded:
    """What the encoded master measures, the gain that got it there and how many tries."""

    lufs: float
    true_peak_dbtp: float
    gain_db: float
    rounds: int
    warning: str = ""


def _encode(
    master: RawAudio, out: Path, fmt: str, rate: int, gain_db: float, stop: threading.Event
) -> None:
    container, codec = LOSSY[fmt]
    out_rate = OPUS_RATE if fmt == "opus" else rate
    resample = StreamResampler(rate, out_rate, master.channels) if out_rate != rate else None
    gain = np.float32(10.0 ** (gain_db / 20.0))
    with sf.SoundFile(str(out), "w", out_rate, master.channels, codec, format=container) as f:
        for a in range(0, master.frames, READ_BLOCK):
            if stop.is_set():
                raise Stopped
            block: AudioArray = master.read(a, min(master.frames, a + READ_BLOCK)) * gain
            last = a + READ_BLOCK >= master.frames
            f.write(block if resample is None else resample(block, last=last))


def measure(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) of an audio file, read in blocks."""
    peak = -math.inf
    with sf.SoundFile(str(path)) as f:
        meter = LoudnessMeter(f.samplerate, f.channels)
        for block in f.blocks(READ_BLOCK, dtype="float32", always_2d=True):
            meter.feed(block)
            peak = max(peak, true_peak_db(block))
        return meter.integrated(), peak


def encode_on_target(
    master: RawAudio,
    out: Path,
    fmt: str,
    rate: int,
    target_lufs: float,
    ceiling_dbtp: float,
    stop: threading.Event,
) -> Encoded:
    """Encode ``master`` (float, already on target) into ``out`` so that the file itself
    measures ``target_lufs`` ± :data:`TOLERANCE_LU` with its true peak ≤ ``ceiling_dbtp``."""
    gain = 0.0
    tried: list[Encoded] = []
    for rounds in range(1, MAX_ROUNDS + 1):
        _encode(master, out, fmt, rate, gain, stop)
        lufs, peak = measure(out)
        tried.append(Encoded(lufs, peak, gain, rounds))
        if not math.isfinite(lufs):
            return tried[-1]  # silence: nothing to bring anywhere
        wanted = target_lufs - lufs
        room = ceiling_dbtp - PEAK_MARGIN_DB - peak
        if abs(wanted) <= TOLERANCE_LU and peak <= ceiling_dbtp:
            return tried[-1]
        step = min(wanted, room)  # never past the ceiling
        if abs(step) < 0.005:
            break  # held at the ceiling: louder would clip
        gain += step
    best = min(
        tried,
        key=lambda e: (e.true_peak_dbtp > ceiling_dbtp, abs(e.lufs - target_lufs)),
    )
    if best is not tried[-1]:
        _encode(master, out, fmt, rate, best.gain_db, stop)
    why = (
        f"the encoded master measures {best.lufs:.2f} LUFS, true peak {best.true_peak_dbtp:.2f}"
        f" dBTP: {target_lufs:g} LUFS would pass the {ceiling_dbtp:g} dBTP ceiling once encoded"
    )
    return Encoded(best.lufs, best.true_peak_dbtp, best.gain_db, len(tried), why)


def remastered_on_target(
    encode: Callable[[Path], Encoded],
    out: Path,
    spare: Path,
    target_lufs: float,
    ceiling_dbtp: float,
    remaster: Callable[[float], Report] | None,
) -> tuple[Encoded, Report | None]:
    """``encode(out)`` (:func:`encode_on_target` of the master); where the encoded file stays
    short of the target, held at the ceiling, ``remaster(aim)`` rewrites the master with its
    limiter aiming ``aim`` LUFS, as much above the last aim as the codec took away, and that
    is encoded (into ``spare``, moved onto ``out`` when it comes closer).  Returns the
    encoding in ``out`` and the report of the master it came from (None: the first one).
    Without ``remaster`` (a master that did not reach the target by itself is as loud as its
    limiter makes it), only the first."""
    enc = encode(out)
    report: Report | None = None
    if remaster is None:
        return enc, report
    aim = target_lufs
    try:
        for _ in range(MAX_REMASTERS):
            short = target_lufs - enc.lufs
            if not enc.warning or not short > TOLERANCE_LU:
                break
            aim += short
            again = remaster(aim)
            tried = encode(spare)
            closer = abs(tried.lufs - target_lufs) < abs(short) - TOLERANCE_LU / 2
            if not (closer and tried.true_peak_dbtp <= ceiling_dbtp):
                break  # the limiter gives no more: keep what is in ``out``
            os.replace(spare, out)
            enc, report = tried, again
    finally:
        spare.unlink(missing_ok=True)
    return enc, report
