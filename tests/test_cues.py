"""Timed words (tutti.cues): LRC and bar:beat cue files read at the edge, with clear errors,
and placed on the take's timeline with the click's own numbering."""

from __future__ import annotations

import pytest

from tutti.audio.click import backing_start_frame, beat_frames
from tutti.cues import MAX_LYRICS_BYTES, cue_frames, parse_lyrics
from tutti.wire import Cue, SessionSettings, TempoSection, WireError

RATE = 48000


def test_lrc_lines_repeats_offset_tags_and_word_times() -> None:
    text = (
        "[ti:Down to the river]\n[ar:Trad.]\n[offset:+500]\n"
        "[00:12.50]As I went <00:13.10>down\n"
        "[00:20.00][01:05.25]Chorus, all\n"
        "[00:30]\n"
    )
    cues = parse_lyrics(text.encode())
    assert cues == (
        Cue("As I went down", seconds=12.0),
        Cue("Chorus, all", seconds=19.5),
        Cue("", seconds=29.5),
        Cue("Chorus, all", seconds=64.75),
    )


def test_bar_beat_cues_with_count_in_and_comments_sorted() -> None:
    cues = parse_lyrics(b"# verse 1\n2:3 and\n1:1 Sing\nin 1:4 ready\n")
    assert cues == (
        Cue("ready", bar=1, beat=4, count_in=True),
        Cue("Sing", bar=1, beat=1),
        Cue("and", bar=2, beat=3),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[00:10.00] fine\nno time here\n", "lyrics line 2: 'no time here' has no time"),
        (b"[00:75.00] seventy-five\n", "lyrics line 1: [00:75.00] has 75 seconds"),
        (b"1:1 ok\nverse two\n", "lyrics line 2: 'verse two' is neither"),
        (b"0:1 zero\n", "bars and beats start at 1"),
        (b"\xff\xfe[00:01.00]", "not UTF-8"),
        (b"# only a comment\n\n", "the file has no lines"),
        (b"[ti:Title only]\n", "no timed lines"),
        (b"[00:01.00]" + b"la " * 100, "at most 200 per line"),
        (b"1:1 x\n" * 2001, "at most 2000 are accepted"),
        (b"x" * (MAX_LYRICS_BYTES + 1), f"at most {MAX_LYRICS_BYTES}"),
    ],
)
def test_bad_files_say_which_line_and_what_is_accepted(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_lyrics(data)


def test_cues_land_on_the_timeline_like_the_click_and_the_backing() -> None:
    settings = SessionSettings(
        title="t", rate=RATE, bpm=120, count_in_bars=2, backing_offset_beats=1,
        tempo_map=(TempoSection(bar=4, bpm=60, beats_per_bar=3),),
    )  # fmt: skip
    length = 60 * RATE
    grid = beat_frames(settings, RATE, seconds=60)
    click = {(b.bar, b.beat): b.frame for b in grid}
    cues = (
        Cue("count-in two", bar=2, beat=1, count_in=True),
        Cue("song starts", bar=1, beat=1),
        Cue("after the tempo change", bar=5, beat=3),
        Cue("no beat 4 in 3/4", bar=5, beat=4),
        Cue("LRC 1.5 s", seconds=1.5),
        Cue("past the end", seconds=500.0),
    )
    placed = cue_frames(cues, settings, length)
    assert placed == sorted(
        [
            (click[(-1, 0)], "count-in two"),
            (click[(0, 0)], "song starts"),
            (click[(4, 2)], "after the tempo change"),
            (backing_start_frame(settings) + round(1.5 * RATE), "LRC 1.5 s"),
        ]
    )
    # the count-in is 2 bars of 4 at 120 bpm; the backing starts one beat after it
    assert click[(0, 0)] == 8 * RATE // 2 and backing_start_frame(settings) == 9 * RATE // 2
