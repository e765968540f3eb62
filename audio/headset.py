"""What the singer hears: their part's backing, the click and an optional guide, on the timeline.

The headset mix is rendered before the take starts; the audio engine's callback only copies
slices of it.  Sample ``k`` of the result is timeline sample ``k``.  Nothing wraps: a sum that
would exceed full scale is soft-limited (a smooth knee, so peaks bend instead of clipping) and
a warning is logged with the peak that was found.
"""

from __future__ import annotations

import logging

import numpy as np

from .types import AudioArray, AudioError, as_audio

__all__ = ["headset_mix", "soft_limit", "SOFT_KNEE"]

log = logging.getLogger(__name__)

_BLOCK = 1 << 16  # frames added at a time

#: Linear level above which :func:`soft_limit` starts to bend (≈ −0.9 dBFS).
SOFT_KNEE = 0.9


def soft_limit(x: AudioArray, knee: float = SOFT_KNEE) -> int:
    """Bend samples above ``knee`` smoothly towards ±1, in place.

    ``|y| = knee + (1 − knee) · tanh((|x| − knee) / (1 − knee))`` for ``|x| > knee``: continuous
    with slope 1 at the knee, never above 1 (in float32 it reaches 1.0 only for |x| ≳ 2);
    samples at or below the knee are untouched.

    Parameters
    ----------
    x : AudioArray
        float32 (frames, channels); modified in place.
    knee : float
        Linear level in (0, 1).

    Returns
    -------
    int
        Number of samples that were bent.
    """
    if not 0 < knee < 1:
        raise AudioError(f"soft_limit: knee must be in (0, 1), got {knee}")
    over = (x > knee) | (x < -knee)
    n = int(np.count_nonzero(over))
    if n:
        v = x[over]
        width = 1.0 - knee
        bent = knee + width * np.tanh((np.abs(v) - knee) / width)
        x[over] = (np.sign(v) * bent).astype(np.float32)
    return n


def _fit_channels(a: AudioArray, channels: int, name: str) -> AudioArray:
    if a.shape[1] == channels:
        return a
    if a.shape[1] == 1:
        return a  # broadcasts to every channel when added
    if channels == 1:
        mono: AudioArray = a.mean(axis=1, keepdims=True, dtype=np.float32)
        return mono
    raise AudioError(
        f"headset: {name} has {a.shape[1]} channels; accepted: 1 or {channels} "
        f"(or any count for a mono headset)"
    )


def _add_at(out: AudioArray, src: AudioArray | None, start: int, db: float, name: str) -> None:
    """Add ``src`` (gain ``db``) so that its sample 0 lands on timeline ``start``."""
    if src is None:
        return
    a = as_audio(src, name=name)
    a = _fit_channels(a, out.shape[1], name)
    lo = max(0, start)
    hi = min(out.shape[0], start + a.shape[0])
    if hi <= lo:
        return
    gain = np.float32(10 ** (db / 20))
    for b in range(lo, hi, _BLOCK):  # in blocks: no full-length temporaries
        e = min(hi, b + _BLOCK)
        out[b:e] += gain * a[b - start : e - start]


def headset_mix(
    frames: int,
    rate: int,
    *,
    backing: AudioArray | None,
    backing_start: int,
    click: AudioArray | None,
    guide: AudioArray | None = None,
    backing_db: float = 0.0,
    click_db: float = 0.0,
    guide_db: float = 0.0,
    channels: int = 2,
    guide_start: int = 0,
) -> AudioArray:
    """The singer's headset signal, timeline sample 0 first.

    Parameters
    ----------
    frames : int
        Length of the result (timeline frames).
    rate : int
        Hz; every input must already be at this rate (resample first).
    backing : AudioArray or None
        The part's backing track, float32 (n, 1 or ``channels``); its sample 0 lands on
        timeline frame ``backing_start`` (may be negative: the start is cut).
    click : AudioArray or None
        The click track on the timeline (sample 0 = timeline 0), e.g. from
        :func:`tutti.audio.click.render_click`.
    guide : AudioArray or None
        An optional guide (the part sung or played alone), placed at ``guide_start``.
    backing_db, click_db, guide_db : float
        Gains in dB.
    channels : int
        1 or 2 (mono inputs are copied to both ears; stereo inputs are averaged for mono).

    Returns
    -------
    AudioArray
        float32, shape (frames, channels), |x| ≤ 1.  If the sum would exceed full scale,
        every sample above :data:`SOFT_KNEE` is soft-limited and a warning is logged;
        otherwise the result is the exact sum.

    Raises
    ------
    AudioError
        Bad length, rate or channel count, or an input that is not valid audio.
    """
    if frames < 0:
        raise AudioError(f"headset: frames must be ≥ 0, got {frames}")
    if rate <= 0:
        raise AudioError(f"headset: rate must be positive, got {rate}")
    if channels not in (1, 2):
        raise AudioError(f"headset: channels must be 1 or 2, got {channels}")
    for db, what in ((backing_db, "backing_db"), (click_db, "click_db"), (guide_db, "guide_db")):
        if not np.isfinite(db) or db > 24:
            raise AudioError(f"headset: {what}={db} must be a finite gain of at most +24 dB")
    out = np.zeros((frames, channels), np.float32)
    _add_at(out, backing, backing_start, backing_db, "backing")
    _add_at(out, click, 0, click_db, "click")
    _add_at(out, guide, guide_start, guide_db, "guide")
    peak = max(float(out.max()), -float(out.min())) if out.size else 0.0
    if peak > 1.0:
        n = soft_limit(out)
        log.warning(
            "headset mix peaks at %+.1f dBFS: %d samples soft-limited; lower the levels",
            20 * np.log10(peak),
            n,
        )
    return out
