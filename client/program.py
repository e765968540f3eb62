"""What the singer hears during a take: the headset program on the timeline.

Timeline sample 0 is the first count-in click (DESIGN.md).  The backing starts
``backing_offset_beats`` beats after the end of the count-in; :func:`backing_start_frame` puts
that on the same exact beat grid the click uses (:func:`tutti.audio.click.beat_frames`), so the
backing and the click can never drift apart.  :func:`render_program` mixes click and backing
with :func:`tutti.audio.headset.headset_mix`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tutti.audio.click import backing_start_frame, beat_frames, render_click
from tutti.audio.headset import headset_mix
from tutti.audio.types import AudioArray, as_audio
from tutti.errors import TuttiError
from tutti.wire import SessionSettings

__all__ = ["ProgramError", "Program", "backing_start_frame", "load_backing", "render_program"]

#: Song bars of click rendered when there is no backing track (the take may run longer;
#: the engine plays silence after the program ends while it keeps recording).
CLICK_ONLY_BARS = 64
#: Bars of click after the backing ends.
TAIL_BARS = 1


class ProgramError(TuttiError, ValueError):
    """The headset program cannot be made (unreadable backing, wrong rate); says which."""


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
    """

    audio: AudioArray
    backing_start: int
    count_in_frames: int
    rate: int


def load_backing(path: Path, rate: int) -> AudioArray:
    """Read a backing file as float32 (frames, channels); its rate must equal ``rate``."""
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ProgramError(f"cannot read the backing track {path.name}: {exc}") from exc
    if file_rate != rate:
        raise ProgramError(
            f"the backing track is at {file_rate} Hz but the session runs at {rate} Hz"
        )
    return as_audio(np.clip(data, -1.0, 1.0))


def render_program(
    settings: SessionSettings,
    backing: AudioArray | None,
    *,
    channels: int = 2,
    click_db: float = 0.0,
    backing_db: float = 0.0,
) -> Program:
    """The headset program for one take: click (count-in and song) plus backing."""
    rate = settings.rate
    start = backing_start_frame(settings)
    count_in = beat_frames(settings, rate, n_bars=0)
    count_in_end = (
        settings.count_in_frames
        if not count_in
        else max(settings.count_in_frames, count_in[-1].frame)
    )
    if backing is not None and len(backing):
        bar_frames = int(round(settings.beats_per_bar * 60.0 / settings.bpm * rate))
        frames = max(start, 0) + len(backing) + TAIL_BARS * bar_frames
        frames = max(frames, count_in_end + bar_frames)
    else:
        bar_frames = int(round(settings.beats_per_bar * 60.0 / settings.bpm * rate))
        frames = count_in_end + CLICK_ONLY_BARS * bar_frames
    frames = min(frames, settings.max_take_seconds * rate)
    beats = beat_frames(settings, rate, seconds=frames / rate)
    click = render_click(beats, rate, frames)
    audio = headset_mix(
        frames,
        rate,
        backing=backing,
        backing_start=start,
        click=click,
        backing_db=backing_db,
        click_db=click_db,
        channels=channels,
    )
    return Program(
        audio=audio, backing_start=start, count_in_frames=settings.count_in_frames, rate=rate
    )
