"""The take format: a folder with ``take.json`` and the audio files it names.

Pure: this module turns the manifest's JSON object into typed records and back, and checks
it; reading and writing the folder happens in the callers (the server's take download, the
client's crash-safe take store, ``tutti mix``).  See ``docs/take-format.md``.

The timeline model (DESIGN.md): timeline sample 0 is the first sample of the count-in.
Sample ``j`` of a recording sits at timeline position ``j + start_offset - latency``, where
``start_offset = r0 - o0`` (the input frame of the recording's first sample minus the output
frame of timeline sample 0, both in the singer's full-duplex stream) and ``latency`` is the
measured round trip ``L`` in frames.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = [
    "FORMAT",
    "VERSION",
    "MANIFEST_NAME",
    "TakeFormatError",
    "Recording",
    "Backing",
    "TakeManifest",
    "parse_manifest",
    "parse_recording",
    "check_relpath",
]

FORMAT: Final = "tutti-take"
VERSION: Final = 1
MANIFEST_NAME: Final = "take.json"


class TakeFormatError(ValueError):
    """The manifest is not a valid take manifest; the message names the field."""


def check_relpath(path: Any, what: str) -> str:
    """A file name inside the take folder: relative, POSIX separators, no ``..``."""
    if not isinstance(path, str) or not path or len(path) > 255 or "\x00" in path:
        raise TakeFormatError(f"{what}: must be a non-empty relative path")
    if "\\" in path or path.startswith("/") or posixpath.isabs(path):
        raise TakeFormatError(f"{what}: {path!r} must be relative, with '/' separators")
    norm = posixpath.normpath(path)
    if norm.startswith("..") or "/../" in f"/{norm}/" or norm == ".":
        raise TakeFormatError(f"{what}: {path!r} leaves the take folder")
    return norm


def _get(d: dict[str, Any], key: str, what: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise TakeFormatError(f"{what}: missing field {key!r}")
    v = d[key]
    if isinstance(v, bool) and typ is not bool:
        raise TakeFormatError(f"{what}: field {key!r} has the wrong type")
    if not isinstance(v, typ):
        raise TakeFormatError(f"{what}: field {key!r} has the wrong type ({type(v).__name__})")
    if isinstance(v, float) and not math.isfinite(v):
        raise TakeFormatError(f"{what}: field {key!r} must be finite")
    return v


@dataclass(frozen=True)
class Recording:
    """One singer's recording of a take, with its timeline numbers.

    Attributes
    ----------
    file : str
        Path inside the take folder (WAV or FLAC).
    start_offset : int
        ``r0 - o0`` in frames (may be negative).
    latency : int
        Round-trip latency ``L`` in frames; ``latency_source`` says whether it was measured
        ("measured") or taken from the device's report ("reported").
    frames, rate, channels : int
        Length in frames, sample rate (Hz) and channel count of the file.
    """

    file: str
    singer: str
    part: str
    rate: int
    channels: int
    frames: int
    start_offset: int
    latency: int
    latency_source: str = "measured"
    participant_id: str = ""
    sha256: str = ""
    overflows: int = 0
    underflows: int = 0
    shared_clock: bool = True
    device: dict[str, Any] = field(default_factory=dict)

    @property
    def timeline_start(self) -> int:
        """Timeline position (frames) of the recording's first sample."""
        return self.start_offset - self.latency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Backing:
    """A backing track for one voice part; sample 0 sits at ``timeline_start``."""

    part: str
    file: str
    sha256: str = ""
    timeline_start: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TakeManifest:
    """The whole ``take.json``."""

    take_id: str
    rate: int
    recordings: tuple[Recording, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # wire.SessionSettings.to_dict()
    backing: tuple[Backing, ...] = ()
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "take_id": self.take_id,
            "title": self.title,
            "rate": self.rate,
            "settings": dict(self.settings),
            "backing": [b.to_dict() for b in self.backing],
            "recordings": [r.to_dict() for r in self.recordings],
        }


def parse_recording(d: Any, what: str = "recording") -> Recording:
    """Check one recording entry."""
    if not isinstance(d, dict):
        raise TakeFormatError(f"{what}: expected an object")
    rate = _get(d, "rate", what, int)
    channels = _get(d, "channels", what, int)
    frames = _get(d, "frames", what, int)
    if not 8000 <= rate <= 192000:
        raise TakeFormatError(f"{what}: rate {rate} outside 8000–192000 Hz")
    if not 1 <= channels <= 8:
        raise TakeFormatError(f"{what}: channels {channels} outside 1–8")
    if frames < 0:
        raise TakeFormatError(f"{what}: frames must be ≥ 0")
    latency = _get(d, "latency", what, int)
    if latency < 0:
        raise TakeFormatError(f"{what}: latency must be ≥ 0 frames")
    source = d.get("latency_source", "measured")
    if source not in ("measured", "reported"):
        raise TakeFormatError(f"{what}: latency_source must be 'measured' or 'reported'")
    device = d.get("device", {})
    if not isinstance(device, dict):
        raise TakeFormatError(f"{what}: device must be an object")
    shared = d.get("shared_clock", True)
    if not isinstance(shared, bool):
        raise TakeFormatError(f"{what}: shared_clock must be true or false")
    return Recording(
        file=check_relpath(d.get("file"), f"{what}.file"),
        singer=_get(d, "singer", what, str),
        part=_get(d, "part", what, str),
        rate=rate,
        channels=channels,
        frames=frames,
        start_offset=_get(d, "start_offset", what, int),
        latency=latency,
        latency_source=source,
        participant_id=str(d.get("participant_id", "")),
        sha256=str(d.get("sha256", "")),
        overflows=int(d.get("overflows", 0) or 0),
        underflows=int(d.get("underflows", 0) or 0),
        shared_clock=shared,
        device=device,
    )


def parse_manifest(d: Any) -> TakeManifest:
    """Check a whole manifest object (as loaded from ``take.json``)."""
    what = MANIFEST_NAME
    if not isinstance(d, dict):
        raise TakeFormatError(f"{what}: expected a JSON object")
    if d.get("format") != FORMAT:
        raise TakeFormatError(f"{what}: field 'format' must be {FORMAT!r}")
    version = d.get("version")
    if version != VERSION:
        raise TakeFormatError(
            f"{what}: version {version!r} not supported (this tutti reads {VERSION})"
        )
    rate = _get(d, "rate", what, int)
    recs_raw = _get(d, "recordings", what, list)
    recs = tuple(parse_recording(r, f"{what}: recordings[{i}]") for i, r in enumerate(recs_raw))
    files = [r.file for r in recs]
    if len(set(files)) != len(files):
        raise TakeFormatError(f"{what}: two recordings name the same file")
    backing_raw = d.get("backing", [])
    if not isinstance(backing_raw, list):
        raise TakeFormatError(f"{what}: backing must be a list")
    backing = []
    for i, b in enumerate(backing_raw):
        bw = f"{what}: backing[{i}]"
        if not isinstance(b, dict):
            raise TakeFormatError(f"{bw}: expected an object")
        backing.append(
            Backing(
                part=_get(b, "part", bw, str),
                file=check_relpath(b.get("file"), f"{bw}.file"),
                sha256=str(b.get("sha256", "")),
                timeline_start=int(b.get("timeline_start", 0)),
            )
        )
    settings = d.get("settings", {})
    if not isinstance(settings, dict):
        raise TakeFormatError(f"{what}: settings must be an object")
    return TakeManifest(
        take_id=str(d.get("take_id", "")),
        rate=rate,
        recordings=recs,
        settings=settings,
        backing=tuple(backing),
        title=str(d.get("title", "")),
    )
