"""What the singer hears during a take: the headset program on the timeline, and the backing
read from its file.

The program itself (click plus backing, :func:`render_program`) is pure DSP and lives in
:mod:`tutti.audio.program`, where ``tutti mix`` renders the same samples to remove what leaked
into each singer's microphone; this module adds reading the backing file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from tutti.audio.click import backing_start_frame
from tutti.audio.program import CLICK_ONLY_BARS, TAIL_BARS, Program, render_program
from tutti.audio.types import AudioArray, as_audio
from tutti.errors import TuttiError

__all__ = [
    "ProgramError",
    "Program",
    "CLICK_ONLY_BARS",
    "TAIL_BARS",
    "backing_start_frame",
    "load_backing",
    "render_program",
]


class ProgramError(TuttiError, ValueError):
    """The headset program cannot be made (unreadable backing, wrong rate); says which."""


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
