"""Clock drift and input gaps of a placed recording: the drift measured from the recorder's
clock map (else from clicks near both ends) and corrected by streaming resampling; each input
gap faded to silence in place."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from tutti.audio.resample import StreamResampler
from tutti.audio.types import AudioError
from tutti.mix.decode import READ_BLOCK, Stopped
from tutti.mix.folder import MixError
from tutti.mix.inputs import Input, map_estimate, to_rate
from tutti.mix.report import timeline_time
from tutti.mix.scratch import RawAudio
from tutti.wire import SessionSettings

if TYPE_CHECKING:  # imported in a thread when the mix starts: see tutti.mix.passes
    from tutti.audio.analysis import VoiceAnalyser
    from tutti.audio.drift import DriftEstimate

__all__ = ["dedrift", "fade_gaps"]


def _markers(item: Input, frames: int, rate: int, settings: SessionSettings | None) -> list[int]:
    """Expected recording frames of clicks near the start and end (first and last 20 s)."""
    from tutti.audio.click import beat_frames

    end = item.timeline_start + frames
    beats = beat_frames(settings, rate, seconds=end / rate + 1.0)
    wanted = []
    for b in beats:
        f = b.frame - item.timeline_start
        if 0 <= f < frames and (f < _EDGE_S * rate or f > frames - _EDGE_S * rate):
            wanted.append(f)
    return wanted


_EDGE_S = 20  # seconds at each end searched for drift markers


def _find_markers(raw: RawAudio, rate: int, expected: list[int], window: int) -> list[float | None]:
    """:func:`align.find_markers` on the first and last seconds of ``raw`` only."""
    from tutti.audio import align

    n = raw.frames
    pad = max(64, round(0.005 * rate))  # find_markers' own context
    margin = window + 2 * pad + 16
    head_hi, tail_lo = min(n, _EDGE_S * rate + margin), max(0, n - _EDGE_S * rate - margin)
    found: list[float | None]
    if tail_lo <= head_hi:  # a short recording: the two ends overlap
        found = align.find_markers(raw.read(0, n), rate, expected, window=window)
        return found
    head = [e for e in expected if e < head_hi - margin]
    tail = [e for e in expected if e >= head_hi - margin]
    # near the start the clock has had no time to drift: a sound as far off as the whole
    # recording's drift could carry a click is no click (a backing's pluck after the beat)
    near = min(window, _window(head_hi, rate))
    found = align.find_markers(raw.read(0, head_hi), rate, head, window=near)
    late: list[float | None] = align.find_markers(
        raw.read(tail_lo, n), rate, [e - tail_lo for e in tail], window=window
    )
    return found + [None if f is None else f + tail_lo for f in late]


def _window(frames: int, rate: int) -> int:
    """Half-width of the search for a marker ``frames`` into a recording: 50 ms of placement
    error and 300 ppm of drift."""
    return int(0.05 * rate + 300e-6 * frames)


def _marker_drift(
    item: Input, raw: RawAudio, rate: int, settings: SessionSettings | None
) -> DriftEstimate | None:
    """The drift from count-in clicks (or claps) at both ends; None (and a warning) if not."""
    from tutti.audio import drift

    if settings is None:
        item.warnings.append("drift not checked (no tempo in take.json)")
        return None
    expected = _markers(item, raw.frames, rate, settings)
    window = _window(raw.frames, rate)
    found = _find_markers(raw, rate, expected, window)
    pairs = [(float(e), f) for e, f in zip(expected, found, strict=True) if f is not None]
    try:
        est = drift.estimate_drift(pairs, min_span=10.0 * rate)
    except AudioError as exc:
        item.warnings.append(f"drift not measured: {exc}")
        return None
    if abs(est.offset_frames) > _window(_EDGE_S * rate, rate):  # markers at one end only
        item.warnings.append(
            f"drift not measured: the markers put the recording's start "
            f"{1000 * est.offset_frames / rate:+.0f} ms off, more than its placement and a "
            "clock can be; they are not clicks"
        )
        return None
    return est


def _map_drift(item: Input, rate: int) -> DriftEstimate | None:
    """The drift from the clock map the recorder measured (no marker needed); None (and a
    warning) if the map is unusable."""
    from tutti.audio import drift

    try:
        est = map_estimate(item, rate)
    except AudioError as exc:
        item.warnings.append(f"{exc}; placed without it")
        return None
    item.drift_from = "map"
    if est.residual_frames > drift.MAP_BEND_S * rate:
        item.warnings.append(
            f"clock map bends {1000 * est.residual_frames / rate:.2f} ms off a straight line; "
            "placed on its best line"
        )
    return est


def dedrift(
    item: Input,
    raw: RawAudio,
    rate: int,
    settings: SessionSettings | None,
    what: str,
    stop: threading.Event,
    sensed: DriftEstimate | None = None,
    *,
    measure: bool = True,
) -> tuple[RawAudio, VoiceAnalyser | None]:
    """Measure the clock drift (from the clock map, else as ``sensed`` from the rest of the
    take by :mod:`tutti.mix.driftsense`, else from markers at both ends); if there is any,
    resample ``raw`` (streaming) into a new raw file, measured on the way when ``measure``
    (not when bleed removal measures it after).  Returns the file to mix (``raw`` when it
    was left as it was) and its new analyser (None if ``raw`` is returned or not measured)."""
    from tutti.audio import drift
    from tutti.audio.analysis import VoiceAnalyser

    if item.rec.clock_map:
        est = _map_drift(item, rate)
    elif sensed is not None:
        est = sensed
    else:
        est = _marker_drift(item, raw, rate, settings)
    if est is None:
        return raw, None
    item.drift_ppm = est.ppm
    item.timeline_start = est.corrected_timeline_start(item.timeline_start)
    if est.ppm == 0.0:
        return raw, None
    if not abs(est.ppm) <= drift.MAX_PPM:
        raise MixError(f"{what}: drift {est.ppm:+.0f} ppm; accepted: within ±{drift.MAX_PPM:.0f}")
    out = RawAudio(raw.path.with_suffix(".dedrift.f32"), raw.channels)
    analyser = VoiceAnalyser(rate, raw.channels) if measure else None
    resample = StreamResampler(drift.clock_rate(rate, est.ppm), float(rate), raw.channels)
    try:
        for a in range(0, raw.frames, READ_BLOCK):
            if stop.is_set():
                raise Stopped
            block = resample(raw.read(a, min(raw.frames, a + READ_BLOCK)))
            if analyser is not None:
                analyser.feed(block)
            out.append(block)
        tail = resample.flush()
        if analyser is not None:
            analyser.feed(tail)
        out.append(tail)
    except BaseException:
        out.close()  # the scratch folder's removal deletes the file
        raise
    raw.close()
    raw.path.unlink()
    return out, analyser


#: A gap whose recording holds more than this (−50 dBFS) is not where the take says: left alone.
_GAP_SILENCE = 10 ** (-50 / 20)


def _silent_in(raw: RawAudio, at: int, frames: int, margin: int, item: Input, rate: int) -> bool:
    """Whether ``raw`` is silent inside the gap (``margin`` frames in from each edge, where a
    resampler rings); if not, the gap is not where the take says and a warning says so (the
    audio is then kept: better an unfaded edge than a voice cut)."""
    lo, hi = max(0, at + margin), min(raw.frames, at + frames - margin)
    loudest = 0.0
    for a in range(lo, hi, READ_BLOCK):
        block = raw.read(a, min(hi, a + READ_BLOCK))
        loudest = max(loudest, float(np.abs(block).max(initial=0.0)))
    if loudest <= _GAP_SILENCE:
        return True
    when = timeline_time(item.timeline_start + at, rate)
    item.warnings.append(f"gap at {when} not silent in the file: left unfaded")
    return False


def fade_gaps(item: Input, raw: RawAudio, rate: int) -> None:
    """Silence each input gap of the recording in ``raw`` (placed and de-drifted: its frame
    ``j`` sits at timeline ``item.timeline_start + j``) with fades of a few ms at its edges,
    in place, so cutting to silence and back does not click."""
    from tutti.audio.gaps import FADE_S, gap_envelope, gap_regions

    rec = item.rec
    gaps = [
        (to_rate(g.at, rec.rate, rate) - item.timeline_start, to_rate(g.frames, rec.rate, rate))
        for g in rec.gaps
    ]
    ramp = max(1, round(FADE_S * rate))
    gaps = [(at, max(1, n)) for at, n in gaps if _silent_in(raw, at, max(1, n), ramp, item, rate)]
    for lo, hi in gap_regions(gaps, ramp, raw.frames):
        for a in range(lo, hi, READ_BLOCK):
            b = min(hi, a + READ_BLOCK)
            block = raw.read(a, b) * gap_envelope(a, b, gaps, ramp)[:, None]
            if raw.dtype == np.int16:
                block = np.clip(np.round(block * 32768.0), -32768, 32767).astype(np.int16)
            raw.write(a, block)
