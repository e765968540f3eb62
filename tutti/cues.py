"""The words of a song, timed: what a leader uploads per part, read once at the server's edge.

Two formats, told apart by their lines:

- **LRC** (what lyrics sites and karaoke editors write): ``[mm:ss.xx] words``, times counted
  from the start of the backing track; several times on one line repeat it; ``[offset:±ms]``
  shifts every line (positive = earlier, as in the LRC convention); other tags (``[ti:…]``)
  and word timings (``<mm:ss.xx>``) are ignored.
- **Bar and beat cues** (what a choir leader can write by hand from the score):
  ``12:1 words`` is bar 12, beat 1 of the song (bars and beats counted from 1, bar 1 is the first
  bar after the count-in, the tempo map applies); ``in 1:1 words`` is in the count-in.
  ``#`` starts a comment.

A line with no words clears the line shown.  :func:`cue_frames` places the cues on a take's
timeline (the numbering of :mod:`tutti.audio.click`), where the singer's client shows them.
"""

from __future__ import annotations

import re
from typing import Any, Final

from tutti.wire import Cue, WireError

__all__ = ["MAX_LYRICS_BYTES", "parse_lyrics", "cue_frames"]

#: The largest lyrics file a leader may upload (a long song is a few kB).
MAX_LYRICS_BYTES: Final = 64 * 1024
MAX_CUES: Final = 2000

_LRC_TIME = re.compile(r"\[(\d{1,3}):(\d{1,2}(?:[.:]\d{1,3})?)\]")
_LRC_OFFSET = re.compile(r"^\[offset:\s*([+-]?\d{1,7})\s*\]\s*$", re.I)
_LRC_TAG = re.compile(r"^\[[a-z#]+:.*\]\s*$", re.I)
_WORD_TIME = re.compile(r"<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")
_BEAT_CUE = re.compile(r"^(in\s+)?(\d{1,5}):(\d{1,2})(?:\s+(.*))?$", re.I)


def parse_lyrics(data: bytes) -> tuple[Cue, ...]:
    """The cues of an uploaded lyrics file (LRC or bar:beat cues), in the order of the file's
    times.  Raises :class:`WireError` saying which line is wrong and what is accepted."""
    if len(data) > MAX_LYRICS_BYTES:
        raise WireError(f"lyrics: {len(data)} bytes; at most {MAX_LYRICS_BYTES} are accepted")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WireError(
            f"lyrics: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise WireError("lyrics: the file has no lines")
    lrc = any(_LRC_TIME.match(line) or _LRC_TAG.match(line) for _, line in lines)
    cues = _parse_lrc(lines) if lrc else _parse_beat_cues(lines)
    if not cues:
        raise WireError("lyrics: no timed lines found (e.g. '[00:12.50] words' or '1:1 words')")
    if len(cues) > MAX_CUES:
        raise WireError(f"lyrics: {len(cues)} timed lines; at most {MAX_CUES} are accepted")
    return cues


def _words(n: int, text: str) -> str:
    words = _WORD_TIME.sub("", text).strip()
    if len(words) > 200:
        raise WireError(f"lyrics line {n}: {len(words)} characters; at most 200 per line")
    return words


def _parse_lrc(lines: list[tuple[int, str]]) -> tuple[Cue, ...]:
    offset_s = 0.0
    timed: list[tuple[float, int, str]] = []
    for n, line in lines:
        m = _LRC_OFFSET.match(line)
        if m:
            offset_s = int(m.group(1)) / 1000.0
            continue
        times, rest = [], line
        while (t := _LRC_TIME.match(rest)) is not None:
            minutes, seconds = int(t.group(1)), float(t.group(2).replace(":", "."))
            if seconds >= 60:
                raise WireError(f"lyrics line {n}: {t.group(0)} has {seconds:g} seconds")
            times.append(60.0 * minutes + seconds)
            rest = rest[t.end() :]
        if not times:
            if _LRC_TAG.match(line):
                continue
            raise WireError(
                f"lyrics line {n}: {line[:40]!r} has no time; LRC lines start with [mm:ss.xx]"
            )
        words = _words(n, rest)
        timed.extend((t, n, words) for t in times)
    timed.sort()
    return tuple(Cue(words, seconds=round(max(0.0, t - offset_s), 3)) for t, _, words in timed)


def _parse_beat_cues(lines: list[tuple[int, str]]) -> tuple[Cue, ...]:
    cues: list[tuple[tuple[int, int, int], Cue]] = []
    for n, line in lines:
        m = _BEAT_CUE.match(line)
        if m is None:
            raise WireError(
                f"lyrics line {n}: {line[:40]!r} is neither '[mm:ss.xx] words' (LRC) nor "
                "'BAR:BEAT words' (e.g. '12:1 Sing' or 'in 1:1' for the count-in)"
            )
        count_in, bar, beat = bool(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= bar <= 10000 and 1 <= beat <= 32):
            raise WireError(f"lyrics line {n}: bar {bar} beat {beat}; bars and beats start at 1")
        cue = Cue(_words(n, m.group(4) or ""), bar=bar, beat=beat, count_in=count_in)
        cues.append(((0 if count_in else 1, bar, beat), cue))
    cues.sort(key=lambda c: c[0])
    return tuple(c for _, c in cues)


def cue_frames(cues: tuple[Cue, ...], settings: Any, length: int) -> list[tuple[int, str]]:
    """``(timeline frame, words)`` of each cue that falls in a take of ``length`` frames with
    ``settings`` (a :class:`tutti.wire.SessionSettings`), in timeline order.

    LRC times count from the backing's start (:func:`tutti.audio.click.backing_start_frame`);
    bar:beat cues sit on the click of that beat (a beat past its bar's meter, or outside the
    take, is left out)."""
    from tutti.audio.click import backing_start_frame, beat_frames

    rate = settings.rate
    placed: list[tuple[int, str]] = []
    if any(c.seconds is not None for c in cues):
        start = backing_start_frame(settings)
        placed += [(start + round(c.seconds * rate), c.text) for c in cues if c.seconds is not None]
    if any(c.bar is not None for c in cues):
        grid = beat_frames(settings, rate, seconds=length / rate)
        where = {(b.bar, b.beat): b.frame for b in grid}
        for c in cues:
            if c.bar is None or c.beat is None:
                continue
            bar = c.bar - 1 - (settings.count_in_bars if c.count_in else 0)
            frame = where.get((bar, c.beat - 1))
            if frame is not None:
                placed.append((frame, c.text))
    return sorted(p for p in placed if 0 <= p[0] < length)
