"""Pure DSP on float32 ``(frames, channels)`` arrays: no files, sockets or devices.

The convenience names below are imported lazily (``from tutti.audio import headset_mix``), so
importing one module of this package does not pull in scipy, soxr and pyloudnorm for all.

==============================  ====================================================
module                          what it does
==============================  ====================================================
:mod:`~tutti.audio.types`       the array convention (``AudioArray``) and its validator
:mod:`~tutti.audio.click`       beat positions on the timeline and the click track
:mod:`~tutti.audio.headset`     a singer's headset mix (backing + click + guide)
:mod:`~tutti.audio.latency`     round-trip latency test signal and estimator
:mod:`~tutti.audio.align`       placing recordings on the timeline, markers
:mod:`~tutti.audio.drift`       clock drift from markers or a clock map, and its correction
:mod:`~tutti.audio.gaps`        silence and short fades across dropout gaps
:mod:`~tutti.audio.resample`    the streaming resampler (soxr) every resampling goes through
:mod:`~tutti.audio.analysis`    a recording's loudness, peak and clipping, block by block
:mod:`~tutti.audio.mixdown`     the streaming block mixer
:mod:`~tutti.audio.buses`       what the mixer reads from and sums into (sources, the bus)
:mod:`~tutti.audio.master`      the master stage: gain search to the target, true-peak envelope
:mod:`~tutti.audio.loudness`    BS.1770 loudness, gain to a target
:mod:`~tutti.audio.limiter`     true-peak measurement and limiter
:mod:`~tutti.audio.filters`     high-pass against rumble
:mod:`~tutti.audio.reverb`      generated hall impulse response, convolution reverb
:mod:`~tutti.audio.layout`      default stereo layout by voice part
:mod:`~tutti.audio.daw`         REAPER and Audacity projects for aligned stems
==============================  ====================================================
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "AudioArray": "types",
    "AudioError": "types",
    "as_audio": "types",
    "Beat": "click",
    "beat_frames": "click",
    "render_click": "click",
    "headset_mix": "headset",
    "LatencyError": "latency",
    "LatencyEstimate": "latency",
    "estimate_latency": "latency",
    "place": "align",
    "refine_offset": "align",
    "find_markers": "align",
    "resample": "align",
    "DriftEstimate": "drift",
    "estimate_drift": "drift",
    "correct_drift": "drift",
    "integrated_loudness": "loudness",
    "true_peak_db": "limiter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tutti.audio' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tutti.audio.{module}"), name)
