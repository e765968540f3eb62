"""Project files that open the aligned stems in a DAW: REAPER ``.rpp`` and Audacity ``.lof``.

Pure string building: the caller writes the text next to the stems.  Each stem is given by
its file name (relative to the project file), a track name, its position on the timeline in
frames (0 for stems that are already padded so sample 0 is timeline 0) and its length.

- REAPER: a minimal ``.rpp`` (REAPER's plain-text project format): one track per stem, one
  media item at ``POSITION`` seconds, ``SOURCE`` type by file extension.
- Audacity: a ``.lof`` ("list of files") — one ``file "NAME" offset SECONDS`` line per stem;
  opening it in Audacity imports every file into its own track at that offset, named after
  the file: so a stem's file name carries the singer's name and part (:func:`stem_file_name`).

Neither format has an escape.  REAPER quotes a string in the first of ``"``, ``'`` and backtick
it does not contain, and a string that holds all three cannot be written as it is (REAPER
itself turns its backticks into ``'``); Audacity reads the file name up to the next ``"``, and
both read a line break as the end of a line.  So a path for a project must not hold ``"`` or
a control character (:func:`path_problem`); track names are written as closely as they can be.
Tracks are in stem order, the number their file names start with.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from tutti.audio.types import AudioError

__all__ = [
    "Stem",
    "reaper_project",
    "audacity_lof",
    "stem_file_name",
    "safe_name",
    "path_problem",
    "NAME_MAX",
]

#: Longest piece of a name kept in a file name (characters).
NAME_CHARS = 40
#: Longest file name most file systems take (ext4, XFS, Btrfs, APFS: bytes of UTF-8).
NAME_MAX = 255

#: Invisible code points outside category Cf (Unicode's Default_Ignorable_Code_Point, from
#: DerivedCoreProperties.txt): combining grapheme joiner, Hangul fillers, Khmer inherent
#: vowels, Mongolian and other variation selectors, and reserved ranges.
_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
)

_SOURCE_TYPES = {".wav": "WAVE", ".flac": "FLAC", ".ogg": "VORBIS"}


@dataclass(frozen=True)
class Stem:
    """One stem file as a DAW should place it.

    Attributes
    ----------
    file : str
        Path relative to the project file, '/' separators.
    name : str
        Track name (e.g. "Anna (S)").
    position : int
        Timeline position of the stem's first sample, frames.
    frames : int
        Length of the stem, frames.
    pan : float
        Pan position −1 … +1 (REAPER track pan).
    gain_db : float
        Track volume in dB.
    """

    file: str
    name: str
    position: int = 0
    frames: int = 0
    pan: float = 0.0
    gain_db: float = 0.0


def _invisible(c: str) -> bool:
    """A format character (Cf: joiners, direction marks, tags) or another code point that is
    not drawn (a variation selector, a Hangul filler)."""
    if unicodedata.category(c) == "Cf":
        return True
    n = ord(c)
    return any(lo <= n <= hi for lo, hi in _IGNORABLE)


def safe_name(text: str, fallback: str, max_bytes: int = NAME_MAX) -> str:
    """``text`` as a piece of a file name on any system: letters, digits and the marks on them
    of any script kept (NFC), invisible characters (:func:`_invisible`) and marks on nothing
    dropped, every run of anything else (spaces, quotes, slashes, emoji) one ``_``; at most
    :data:`NAME_CHARS` characters and ``max_bytes`` bytes of UTF-8 (cut at a character)."""
    kept: list[str] = []
    for c in unicodedata.normalize("NFC", text):
        if _invisible(c):
            continue
        if unicodedata.category(c)[0] == "M":
            if kept and kept[-1] != "_":  # a mark on a letter or digit kept
                kept.append(c)
        else:
            kept.append(c if c.isalnum() else "_")
    short = re.sub(r"_+", "_", "".join(kept)).strip("_")[:NAME_CHARS]
    return short.encode()[:max_bytes].decode("utf-8", "ignore").strip("_") or fallback


def stem_file_name(index: int, name: str, part: str, ext: str, count: int = 0) -> str:
    """``NN-Name-Part.ext``: the index keeps names apart (two singers may share a name) and
    orders the tracks; the name and part say whose it is.

    ``count``, the number of stems the mix writes, makes ``NN`` as wide as the largest
    index (at least two digits), so the file names sort in stem order.  The whole name stays
    within :data:`NAME_MAX` bytes: the part gets up to half of what the index and extension
    leave, the name the rest.
    """
    width = max(2, len(str(max(index, count - 1))))
    number, suffix = f"{index:0{width}d}-", f".{ext}"
    room = NAME_MAX - len(number.encode()) - len(suffix.encode()) - 1  # "-" between the two
    kept_part = safe_name(part, "part", room // 2)
    kept_name = safe_name(name, "singer", room - len(kept_part.encode()))
    return f"{number}{kept_name}-{kept_part}{suffix}"


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be written into a project file as it is, or None: a ``"`` (an
    Audacity list has no escape for it) or a control character (a line break ends a line in
    both formats, and REAPER's strings hold none)."""
    for c in path:
        if c == '"':
            return 'a double quote ("), which an Audacity .lof cannot hold'
        if unicodedata.category(c) == "Cc":
            return f"a control character (U+{ord(c):04X}), which a project line cannot hold"
    return None


def _quote(text: str) -> str:
    """A string as REAPER reads it: in the first of ``"``, ``'`` and backtick that it does
    not contain (REAPER's own rule; a backtick in a name that holds all three becomes ``'``),
    with no control characters."""
    cleaned = "".join(c for c in text if c == "\t" or (ord(c) >= 32 and c != "\x7f"))
    for q in ('"', "'", "`"):
        if q not in cleaned:
            return f"{q}{cleaned}{q}"
    return "`" + cleaned.replace("`", "'") + "`"


def _in_stem_order(stems: Sequence[Stem]) -> list[Stem]:
    """The stems by the number their file names start with (the stems are written from
    several threads, so they come in any order); any without one after, as given."""

    def number(stem: Stem) -> int:
        found = re.match(r"\d+", PurePosixPath(stem.file).name)
        return int(found.group()) if found else sys.maxsize

    return sorted(stems, key=number)


def _checked(stems: Sequence[Stem]) -> list[Stem]:
    for s in stems:
        problem = path_problem(s.file)
        if problem is not None:
            raise AudioError(f"project: stem file {s.file!r} holds {problem}")
    return _in_stem_order(stems)


def _source_type(file: str) -> str:
    for ext, kind in _SOURCE_TYPES.items():
        if file.lower().endswith(ext):
            return kind
    raise AudioError(
        f"project: stem {file!r} has no known extension; accepted: {sorted(_SOURCE_TYPES)}"
    )


def reaper_project(stems: Sequence[Stem], rate: int, *, title: str = "") -> str:
    """Text of a REAPER project with one track per stem (in stem order), placed on the timeline.

    Parameters
    ----------
    stems : sequence of Stem
    rate : int
        Project sample rate in Hz (also converts frames to seconds).
    title : str
        Written as a project note.
    """
    lines = ['<REAPER_PROJECT 0.1 "6.0" 0', f"  SAMPLERATE {rate} 0 0"]
    if title:
        lines += ["  <NOTES 0 2", f"    |{_quote(title)[1:-1]}", "  >"]
    for stem in _checked(stems):
        kind = _source_type(stem.file)
        volume = 10.0 ** (stem.gain_db / 20.0)
        lines += [
            "  <TRACK",
            f"    NAME {_quote(stem.name)}",
            f"    VOLPAN {volume:.6f} {stem.pan:.6f} -1 -1 1",
            "    <ITEM",
            f"      POSITION {stem.position / rate:.9f}",
            f"      LENGTH {stem.frames / rate:.9f}",
            f"      NAME {_quote(stem.name)}",
            f"      <SOURCE {kind}",
            f"        FILE {_quote(stem.file)}",
            "      >",
            "    >",
            "  >",
        ]
    lines.append(">")
    return "\n".join(lines) + "\n"


def audacity_lof(stems: Sequence[Stem], rate: int) -> str:
    """Text of an Audacity list-of-files that imports every stem (in stem order) at its
    timeline offset."""
    return "".join(f'file "{s.file}" offset {s.position / rate:.9f}\n' for s in _checked(stems))
