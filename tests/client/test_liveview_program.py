"""The live view (plain and rich) and the headset program's beat placement."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from tutti.audio.click import beat_frames
from tutti.client.liveview import LiveState, LiveView, meter
from tutti.client.program import backing_start_frame, render_program
from tutti.wire import SessionSettings


def test_plain_lines_print_changes_once() -> None:
    st = LiveState(server="http://x", name="Ada", part="S", connection="connected")
    out = io.StringIO()
    view = LiveView(st, stream=out)
    assert not view.tty
    view.flush_plain()
    view.flush_plain()  # nothing changed: nothing new
    st.clock_error_ms = 0.02
    st.take_id, st.take_state = "t1", "recording"
    st.note("take t1 started")
    view.flush_plain()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[connected] take=- waiting"
    assert lines[1] == "[connected] clock ±0.02 ms take=t1 recording"
    assert lines[2] == "take t1 started"
    assert len(lines) == 3


def test_rich_view_shows_countdown_meter_and_clip_warning() -> None:
    now = 100.0
    st = LiveState(
        server="http://x",
        name="Ada",
        part="S",
        connection="reconnecting",
        clock_error_ms=0.3,
        clock_rtt_ms=1.0,
        take_id="t1",
        take_state="count-in",
        t0_local=102.5,
        peak_db=-0.1,
        clipped_until=101.0,
        upload="retrying (2)",
    )
    view = LiveView(st, stream=io.StringIO(), now=lambda: now)
    con = Console(file=io.StringIO(), width=100)
    con.print(view.render())
    text = con.file.getvalue()  # type: ignore[attr-defined]
    assert "reconnecting" in text and "±0.30 ms" in text
    assert "starts in  2.5 s" in text
    assert "CLIP" in text and "retrying (2)" in text
    assert meter(-60.0, 10) == "·" * 10 and meter(0.0, 10) == "█" * 10
    assert meter(-30.0, 10) == "█" * 5 + "·" * 5


@pytest.mark.parametrize(
    ("offset", "expected_beats"),
    [(0.0, 4.0), (2.0, 6.0), (1.5, 5.5), (-1.0, 3.0)],
)
def test_backing_starts_on_the_click_grid(offset: float, expected_beats: float) -> None:
    s = SessionSettings(
        title="t",
        rate=48000,
        bpm=100.0,
        beats_per_bar=4,
        count_in_bars=1,
        backing_offset_beats=offset,
    )
    # 100 bpm: 28800 frames per beat; the count-in is 4 beats
    assert backing_start_frame(s) == round(expected_beats * 28800)
    grid = [b.frame for b in beat_frames(s, 48000, n_bars=4)]
    if offset == int(offset) and offset >= 0:
        assert backing_start_frame(s) in grid


def test_program_places_backing_and_click() -> None:
    s = SessionSettings(title="t", rate=48000, bpm=120.0, beats_per_bar=4, count_in_bars=1)
    backing = np.full((48000, 1), 0.25, np.float32)
    p = render_program(s, backing, channels=2)
    assert p.audio.dtype == np.float32 and p.audio.shape[1] == 2
    assert p.backing_start == 96000  # 4 beats at 120 bpm
    assert p.audio[0, 0] != 0.0  # the first count-in click starts at timeline sample 0
    assert np.all(p.audio[10000:24000] == 0.0)  # silence between clicks in the count-in
    # backing present from its start (beyond the click's decay)
    assert np.allclose(p.audio[96000 + 5000 : 96000 + 20000], 0.25, atol=1e-6)
    assert len(p.audio) >= 96000 + 48000


def test_words_show_while_singing_and_print_once_per_line() -> None:
    st = LiveState(server="http://x", name="Ada", part="S", connection="connected")
    st.take_id, st.take_state = "t1", "recording"
    st.words, st.words_next = "Down to the river", "to pray"
    view = LiveView(st, stream=io.StringIO())
    con = Console(file=io.StringIO(), width=100)
    con.print(view.render())
    text = con.file.getvalue()  # type: ignore[attr-defined]
    assert "words" in text and "Down to the river" in text and "to pray" in text
    out = io.StringIO()
    view = LiveView(st, stream=out)
    view.flush_plain()
    view.flush_plain()
    st.words, st.words_next = "to pray", ""
    view.flush_plain()
    st.take_state = "uploading"  # the take is over: no more words
    view.flush_plain()
    sung = [line for line in out.getvalue().splitlines() if line.startswith("♪")]
    assert sung == ["♪ Down to the river", "♪ to pray"]
