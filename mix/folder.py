"""The take folder as ``tutti mix`` reads it: ``take.json`` and the audio files it names, all
checked before anything is written.

Everything here is input from outside (a folder downloaded, copied or assembled by hand), so
it is read once, with limits: ``take.json`` at most :data:`MAX_MANIFEST_BYTES`, parsed by
:func:`tutti.takeformat.parse_manifest` (types and ranges of every field); every file it names
must stay inside the folder after symbolic links are followed, be a regular file, and be audio
whose header agrees with the manifest, at a rate and of a length within the take format's
limits.  A FLAC file whose header leaves its length out (streaming encoders write STREAMINFO
total 0) is decoded once to count its frames.  Every failure is a :class:`MixError` whose
message names the file or field and what is accepted.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from tutti import takeformat
from tutti.mix.read import UNKNOWN_LENGTH, count_flac_frames
from tutti.takeformat import TakeFormatError, TakeManifest

__all__ = [
    "MAX_MANIFEST_BYTES",
    "AudioFile",
    "DamagedAudio",
    "MixError",
    "check_path_text",
    "inside",
    "load_manifest",
    "probe",
]

#: a take.json for a thousand singers is about 400 kB
MAX_MANIFEST_BYTES = 16 << 20


class MixError(Exception):
    """The take folder or the options cannot be mixed; the message says what and where."""


class DamagedAudio(MixError):
    """An audio file's samples cannot all be decoded (cut off, damaged in the middle, or not
    numbers), though its header could be read: ``path`` is the file.  The server refuses
    the recording's upload when its pass 1 meets this, and mixes the others."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message, path)  # both in args: it crosses a process pool pickled
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class AudioFile:
    """An audio file of the take folder, its header read once.

    Attributes
    ----------
    path : Path
        Inside the take folder, symbolic links resolved.
    info : soundfile info
        ``format``, ``subtype``, ``channels``, ``samplerate`` as libsndfile reads them.
    frames : int
        Length in frames: from the header, or counted (``counted``) where the header has none.
    """

    path: Path
    info: Any
    frames: int
    counted: bool = False

    @property
    def channels(self) -> int:
        return int(self.info.channels)

    @property
    def rate(self) -> int:
        return int(self.info.samplerate)


def check_path_text(path: Path, what: str) -> None:
    """Refuse a path that is not UTF-8 text (bytes the file system allows, but libsndfile
    and dr_flac cannot be given): a clear message instead of an encoding error."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = ascii(str(path))[1:-1]
        raise MixError(f"{what}: {shown} is not a UTF-8 name; rename it") from None


def inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` with symbolic links resolved, refused if that leaves ``root`` (resolved).

    The take format says names may not leave the folder; a link is a way out too.
    """
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise MixError(f"{what}: {rel} cannot be resolved ({exc})") from None
    if not path.is_relative_to(root):
        raise MixError(
            f"{what}: {rel} is a symbolic link to {path}, outside the take folder; "
            "accepted: files inside the folder (copy the file in)"
        )
    return path


def _regular(path: Path, rel: str, what: str, accepted: str) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MixError(f"{what}: file {rel} is missing") from None
    except OSError as exc:
        raise MixError(f"{what}: {rel} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise MixError(f"{what}: {rel} is not a regular file; accepted: {accepted}")
    return st


def load_manifest(take_dir: Path) -> tuple[Path, TakeManifest]:
    """The take folder (resolved) and its checked ``take.json``."""
    if not take_dir.is_dir():
        raise MixError(f"{take_dir}: not a folder; give the take folder that holds take.json")
    root = take_dir.resolve()
    check_path_text(root, "the take folder")
    name = takeformat.MANIFEST_NAME
    if not (take_dir / name).exists() and not (take_dir / name).is_symlink():
        content = "it is empty" if not any(take_dir.iterdir()) else "there is no take.json in it"
        raise MixError(f"{take_dir}: not a take folder ({content}); see docs/take-format.md")
    path = inside(root, name, str(take_dir / name))
    if _regular(path, name, str(take_dir), "a JSON file").st_size > MAX_MANIFEST_BYTES:
        raise MixError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a take.json")
    raw = _read_json(path)
    try:
        manifest = takeformat.parse_manifest(raw)
    except TakeFormatError as exc:
        raise MixError(f"{path}: {str(exc).removeprefix(name + ': ')}") from None
    if not manifest.recordings:
        raise MixError(f"{path}: lists no recordings; nothing to mix")
    return root, manifest


def _read_json(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MixError(f"{path}: not valid JSON (not UTF-8 text: {exc.reason})") from None
    except OSError as exc:
        raise MixError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise MixError(f"{path}: not a take manifest (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        raise MixError(f"{path}: not valid JSON ({exc})") from None
    except ValueError:  # Python's limit on integer digits (sys.get_int_max_str_digits)
        raise MixError(
            f"{path}: not a take manifest (a number of more than "
            f"{sys.get_int_max_str_digits()} digits)"
        ) from None


def probe(root: Path, rel: str, what: str) -> AudioFile:
    """Read the header of audio file ``rel`` of the take folder ``root`` (resolved)."""
    path = inside(root, rel, what)
    _regular(path, rel, what, "a WAV, FLAC or OGG file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise MixError(
            f"{what}: {rel} is not readable audio ({exc}); accepted: WAV, FLAC, OGG"
        ) from None
    rate = int(info.samplerate)
    if not takeformat.RATE_MIN <= rate <= takeformat.RATE_MAX:
        raise MixError(
            f"{what}: {rel} is at {rate} Hz; accepted: "
            f"{takeformat.RATE_MIN} to {takeformat.RATE_MAX} Hz"
        )
    limit = takeformat.MAX_RECORDING_SECONDS * rate
    frames, counted = int(info.frames), False
    if info.format == "FLAC" and frames == UNKNOWN_LENGTH:
        try:
            frames, counted = count_flac_frames(path, info.channels, limit), True
        except RuntimeError as exc:
            raise MixError(f"{what}: reading {rel} failed ({exc})") from None
    if frames == 0:
        raise MixError(f"{what}: {rel} holds no audio (0 frames)")
    if frames > limit:
        raise MixError(
            f"{what}: {rel} is longer than {takeformat.MAX_RECORDING_SECONDS // 3600} hours "
            f"(its header says {frames} frames at {rate} Hz)"
        )
    return AudioFile(path, info, frames, counted)
