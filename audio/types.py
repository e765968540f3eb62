"""The one array convention of tutti, and its validator.

Every audio array in tutti is ``float32`` with shape ``(frames, channels)`` and values in
``[-1, 1]``, like soundfile and sounddevice.  Audio is checked where it enters (a file was
read, a device delivered a block, a caller handed us an array) with :func:`as_audio`; code
behind that boundary may rely on the convention.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["AudioArray", "AudioError", "as_audio"]

#: float32 array of shape (frames, channels), values in [-1, 1].
AudioArray: TypeAlias = npt.NDArray[np.float32]


class AudioError(ValueError):
    """Base of the audio package's errors: the input audio or a parameter is unusable."""


def as_audio(
    data: npt.ArrayLike,
    *,
    channels: int | None = None,
    name: str = "audio",
    clip_ok: bool = True,
) -> AudioArray:
    """Check and convert ``data`` to the tutti convention.

    Parameters
    ----------
    data
        1-D (frames,) or 2-D (frames, channels) array-like of real numbers.  1-D input is
        taken as mono and returned with shape (frames, 1).
    channels
        If given, the number of channels required.
    name
        How to call the array in error messages (e.g. a file name).
    clip_ok
        If False, values outside [-1, 1] are an error; otherwise they are allowed through
        (callers that must not clip check peaks themselves).

    Returns
    -------
    AudioArray
        float32, C-contiguous, shape (frames, channels).

    Raises
    ------
    AudioError
        Wrong dimensionality, zero channels, non-finite values, wrong channel count, or
        (with ``clip_ok=False``) values outside [-1, 1].
    """
    arr = np.asarray(data)
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise AudioError(f"{name}: expected shape (frames, channels), got {arr.shape}")
    if arr.shape[1] == 0:
        raise AudioError(f"{name}: has zero channels")
    if channels is not None and arr.shape[1] != channels:
        raise AudioError(f"{name}: expected {channels} channel(s), got {arr.shape[1]}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if out.size and not np.isfinite(out).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    if not clip_ok and out.size and float(np.max(np.abs(out))) > 1.0:
        raise AudioError(f"{name}: samples outside [-1, 1]")
    return out
