"""The headset program: rendered whole (the client) and range by range (the mixer), the same
samples, and the same as the click plus the backing through the headset mix."""

from __future__ import annotations

import numpy as np
import pytest

from tutti.audio.click import backing_start_frame, beat_frames, render_click
from tutti.audio.headset import headset_mix
from tutti.audio.program import ProgramSound, render_program
from tutti.audio.types import AudioArray
from tutti.wire import SessionSettings

RATE = 22050


class _Backing:
    def __init__(self, audio: AudioArray) -> None:
        self.audio = audio

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])

    @property
    def channels(self) -> int:
        return int(self.audio.shape[1])

    def read(self, lo: int, hi: int) -> AudioArray:
        out = np.zeros((hi - lo, self.channels), np.float32)
        part = self.audio[lo:hi]
        out[: len(part)] = part
        return out


def _backing(kind: str) -> AudioArray | None:
    rng = np.random.default_rng(0)
    if kind == "none":
        return None
    if kind == "mono":
        return (0.1 * rng.standard_normal((60000, 1))).astype(np.float32)
    # loud enough that click plus backing passes full scale: the program is soft-limited
    return np.clip(0.6 * rng.standard_normal((60000, 2)), -1, 1).astype(np.float32)


@pytest.mark.parametrize("kind", ["none", "mono", "loud stereo"])
def test_ranges_equal_the_whole_program(kind: str) -> None:
    s = SessionSettings.from_dict({"title": "p", "rate": RATE, "bpm": 113.1, "count_in_bars": 1})
    backing = _backing(kind)
    whole = render_program(s, backing, channels=2).audio
    start = backing_start_frame(s)
    click = render_click(beat_frames(s, RATE, seconds=len(whole) / RATE), RATE, len(whole))
    reference = headset_mix(len(whole), RATE, backing=backing, backing_start=start, click=click)
    assert np.array_equal(whole, reference)
    sound = ProgramSound(s, RATE, _Backing(backing) if backing is not None else None, start)
    sound.scan_peak()
    assert sound.limited == (kind == "loud stereo")
    step = 777  # ranges that cut clicks and the backing anywhere
    parts = [sound.render(a, a + step) for a in range(-step, len(whole) + step, step)]
    joined = np.concatenate(parts)
    assert np.array_equal(joined[step : step + len(whole)], whole)
    assert not joined[:step].any() and not joined[step + len(whole) :].any()
