"""What the singer hears during a take: the headset program (click and the part's backing) on
the timeline, rendered whole for the singer's client or range by range for the mixer.

Timeline sample 0 is the first count-in click (DESIGN.md).  The backing's sample 0 sits at
``backing_start`` (:func:`tutti.audio.click.backing_start_frame` for the client; the take's
``timeline_start`` for the mixer, which the server wrote from it).  The program ends one bar
after the backing (or 64 song bars after the count-in when there is no backing); a sum above
full scale is soft-limited as :func:`tutti.audio.headset.headset_mix` does.  The client plays
:func:`render_program`; ``tutti mix`` asks :class:`ProgramSound` for the same samples, range by
range, to know what each singer's microphone could pick up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .click import beat_frames, click_events, render_click_range
from .headset import soft_limit
from .types import AudioArray, AudioError

__all__ = [
    "CLICK_ONLY_BARS",
    "TAIL_BARS",
    "Program",
    "ProgramSound",
    "BackingSource",
    "program_frames",
    "render_program",
]

log = logging.getLogger(__name__)

#: Song bars of click rendered when there is no backing track (the take may run longer;
#: the engine plays silence after the program ends while it keeps recording).
CLICK_ONLY_BARS = 64
#: Bars of click after the backing ends.
TAIL_BARS = 1

_BLOCK = 1 << 16  # frames rendered at a time when the whole program is scanned


class BackingSource(Protocol):
    """A backing track readable by range: ``read(lo, hi)`` gives frames ``[lo, hi)`` of
    it, float32 (hi - lo, channels), zeros beyond its end (``lo ≥ 0``)."""

    @property
    def frames(self) -> int: ...

    @property
    def channels(self) -> int: ...

    def read(self, lo: int, hi: int) -> AudioArray: ...


@dataclass(frozen=True)
class _ArrayBacking:
    """A backing held in memory as a :class:`BackingSource`."""

    audio: AudioArray

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])

    @property
    def channels(self) -> int:
        return int(self.audio.shape[1])

    def read(self, lo: int, hi: int) -> AudioArray:
        out = np.zeros((hi - lo, self.audio.shape[1]), np.float32)
        part = self.audio[lo:hi]
        out[: part.shape[0]] = part
        return out


def program_frames(settings: Any, rate: int, backing_frames: int, backing_start: int) -> int:
    """Length of the program in timeline frames: one bar past the backing's end (at least one
    bar past the count-in), or 64 song bars past the count-in without a backing, at most
    ``settings.max_take_seconds``.  Without settings (no tempo, no click) the backing's end."""
    if settings is None:
        return max(0, backing_start + backing_frames) if backing_frames else 0
    count_in = beat_frames(settings, rate, n_bars=0)
    count_in_end = (
        settings.count_in_frames
        if not count_in
        else max(settings.count_in_frames, count_in[-1].frame)
    )
    bar_frames = int(round(settings.beats_per_bar * 60.0 / settings.bpm * rate))
    if backing_frames:
        frames = max(backing_start, 0) + backing_frames + TAIL_BARS * bar_frames
        frames = max(frames, count_in_end + bar_frames)
    else:
        frames = count_in_end + CLICK_ONLY_BARS * bar_frames
    return int(min(frames, settings.max_take_seconds * rate))


class ProgramSound:
    """The headset program of one take and part, rendered range by range.

    Parameters
    ----------
    settings
        The session's settings (:class:`tutti.wire.SessionSettings`, at the timeline's rate),
        or None for a take without a tempo: then there is no click.
    rate : int
        Timeline rate, Hz.
    backing : BackingSource or None
        The part's backing at ``rate``, values in [−1, 1]; None: click only.
    backing_start : int
        Timeline frame of the backing's sample 0 (may be negative).
    channels : int
        1 or 2 (a mono backing goes to both ears; a stereo one is averaged for one).
    click_db, backing_db : float
        Gains in dB, as the client applied them.
    """

    def __init__(
        self,
        settings: Any,
        rate: int,
        backing: BackingSource | None,
        backing_start: int,
        *,
        channels: int = 2,
        click_db: float = 0.0,
        backing_db: float = 0.0,
    ) -> None:
        if channels not in (1, 2):
            raise AudioError(f"program: channels must be 1 or 2, got {channels}")
        for db, what in ((backing_db, "backing_db"), (click_db, "click_db")):
            if not np.isfinite(db) or db > 24:
                raise AudioError(f"program: {what}={db} must be a finite gain of at most +24 dB")
        if backing is not None and backing.channels not in (1, 2):
            raise AudioError(
                f"program: the backing has {backing.channels} channels; accepted: 1 or 2"
            )
        self.rate = rate
        self.channels = channels
        self.backing = backing if backing is not None and backing.frames else None
        self.backing_start = backing_start
        n_backing = self.backing.frames if self.backing is not None else 0
        self.frames = program_frames(settings, rate, n_backing, backing_start)
        beats = (
            beat_frames(settings, rate, seconds=self.frames / rate) if settings is not None else []
        )
        self._clicks = click_events(beats, rate, self.frames)
        self._click_gain = np.float32(10 ** (click_db / 20))
        self._backing_gain = np.float32(10 ** (backing_db / 20))
        #: Whether the whole program peaks above full scale (then every range is soft-limited,
        #: as the client's whole render is); see :meth:`scan_peak`.
        self.limited = False

    @property
    def has_click(self) -> bool:
        return bool(self._clicks)

    def raw(self, lo: int, hi: int) -> AudioArray:
        """Frames ``[lo, hi)`` of backing plus click, before any soft limiting; zeros outside
        the program."""
        out = np.zeros((max(0, hi - lo), self.channels), np.float32)
        a, b = max(lo, 0), min(hi, self.frames)
        if b <= a:
            return out
        if self.backing is not None:
            s0, s1 = max(a, self.backing_start), min(b, self.backing_start + self.backing.frames)
            if s1 > s0:
                src = self.backing.read(s0 - self.backing_start, s1 - self.backing_start)
                if src.shape[1] != self.channels:  # a stereo backing in a mono headset
                    src = src.mean(axis=1, keepdims=True, dtype=np.float32)
                out[s0 - lo : s1 - lo] += self._backing_gain * src
        click = render_click_range(self._clicks, self.rate, a, b)
        out[a - lo : b - lo] += self._click_gain * click
        return out

    def render(self, lo: int, hi: int) -> AudioArray:
        """Frames ``[lo, hi)`` of the program as the singer heard them: float32
        (hi - lo, channels), zeros outside the program."""
        out = self.raw(lo, hi)
        if self.limited:
            soft_limit(out)
        return out

    def scan_peak(
        self, visit: Callable[[AudioArray], object] | None = None, block: int = _BLOCK
    ) -> float:
        """The whole program's peak before limiting (linear); sets :attr:`limited`.  Each
        range of ``block`` frames (before limiting) is also handed to ``visit``, if given."""
        peak = 0.0
        for a in range(0, self.frames, block):
            part = self.raw(a, min(self.frames, a + block))
            peak = max(peak, float(np.abs(part).max(initial=0.0)))
            if visit is not None:
                visit(part)
        self.limited = peak > 1.0
        return peak


@dataclass(frozen=True)
class Program:
    """A rendered headset program.

    Attributes
    ----------
    audio : AudioArray
        float32, shape (frames, channels), timeline sample 0 first.
    backing_start : int
        Timeline frame of the backing's first sample.
    count_in_frames : int
        Timeline frame of the first downbeat after the count-in.
    rate : int
        Hz.
    """

    audio: AudioArray
    backing_start: int
    count_in_frames: int
    rate: int


def render_program(
    settings: Any,
    backing: AudioArray | None,
    *,
    channels: int = 2,
    click_db: float = 0.0,
    backing_db: float = 0.0,
) -> Program:
    """The headset program for one take: click (count-in and song) plus backing, whole.

    ``settings`` is a :class:`tutti.wire.SessionSettings`; ``backing`` the part's track at
    ``settings.rate``, float32 (frames, 1 or 2) in [−1, 1], or None.  A sum above full scale
    is soft-limited (:func:`tutti.audio.headset.soft_limit`) and a warning logged.
    """
    from .click import backing_start_frame

    rate = settings.rate
    start = backing_start_frame(settings)
    sound = ProgramSound(
        settings,
        rate,
        _ArrayBacking(backing) if backing is not None else None,
        start,
        channels=channels,
        click_db=click_db,
        backing_db=backing_db,
    )
    audio = sound.raw(0, sound.frames)
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > 1.0:
        n = soft_limit(audio)
        log.warning(
            "headset mix peaks at %+.1f dBFS: %d samples soft-limited; lower the levels",
            20 * np.log10(peak),
            n,
        )
    return Program(
        audio=audio, backing_start=start, count_in_frames=settings.count_in_frames, rate=rate
    )
