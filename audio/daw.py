"""Project files that open the aligned stems in a DAW: REAPER ``.rpp`` and Audacity ``.lof``.

Pure string building: the caller writes the text next to the stems.  Each stem is given by
its file name (relative to the project file), a track name, its position on the timeline in
frames (0 for stems that are already padded so sample 0 is timeline 0) and its length.

- REAPER: a minimal ``.rpp`` (REAPER's plain-text project format): one track per stem, one
  media item at ``POSITION`` seconds, ``SOURCE`` type by file extension.
- Audacity: a ``.lof`` ("list of files") — one ``file "NAME" offset SECONDS`` line per stem;
  opening it in Audacity imports every file into its own track at that offset, named after
  the file: so a stem's file name carries the singer's name and part (:func:`stem_file_name`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from tutti.audio.types import AudioError

__all__ = ["Stem", "reaper_project", "audacity_lof", "stem_file_name", "safe_name"]

#: Longest piece of a name kept in a file name (characters).
NAME_CHARS = 40

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


def safe_name(text: str, fallback: str) -> str:
    """``text`` as a piece of a file name on any system: letters, digits and their marks of
    any script kept (NFC), every run of anything else (spaces, quotes, slashes, emoji) one
    ``_``."""
    text = unicodedata.normalize("NFC", text)
    kept = "".join(c if c.isalnum() or unicodedata.category(c)[0] == "M" else "_" for c in text)
    return re.sub(r"_+", "_", kept).strip("_")[:NAME_CHARS].strip("_") or fallback


def stem_file_name(index: int, name: str, part: str, ext: str) -> str:
    """``NN-Name-Part.ext``: the index keeps names apart (two singers may share a name) and
    orders the tracks; the name and part say whose it is."""
    return f"{index:02d}-{safe_name(name, 'singer')}-{safe_name(part, 'part')}.{ext}"


def _quote(text: str) -> str:
    """A string as REAPER reads it: in the first of ``"``, ``'`` and backtick that it does
    not contain (REAPER's own rule; a backtick in a name that holds all three becomes ``'``),
    with no control characters."""
    cleaned = "".join(c for c in text if c == "\t" or (ord(c) >= 32 and c != "\x7f"))
    for q in ('"', "'", "`"):
        if q not in cleaned:
            return f"{q}{cleaned}{q}"
    return "`" + cleaned.replace("`", "'") + "`"


def _source_type(file: str) -> str:
    for ext, kind in _SOURCE_TYPES.items():
        if file.lower().endswith(ext):
            return kind
    raise AudioError(
        f"project: stem {file!r} has no known extension; accepted: {sorted(_SOURCE_TYPES)}"
    )


def reaper_project(stems: Sequence[Stem], rate: int, *, title: str = "") -> str:
    """Text of a REAPER project with one track per stem, placed on the timeline.

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
    for stem in stems:
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
    """Text of an Audacity list-of-files that imports every stem at its timeline offset."""
    for s in stems:
        if '"' in s.file or "\n" in s.file:
            raise AudioError(f"project: stem file {s.file!r} cannot be named in an Audacity list")
    return "".join(f'file "{s.file}" offset {s.position / rate:.9f}\n' for s in stems)
