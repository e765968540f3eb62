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
    "Gap",
    "ClockPoint",
    "Backing",
    "TakeManifest",
    "parse_manifest",
    "parse_recording",
    "parse_gaps",
    "parse_clock_map",
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
class Gap:
    """A stretch of the timeline where a recording or a headset lost frames.

    For a recording (``gaps``) the file holds ``frames`` of silence there, so every later
    sample keeps its timeline place; for the headset (``slips``) the program jumped ahead by
    ``frames`` at that point (the singer heard a skip, not a shift).

    Attributes
    ----------
    at : int
        Timeline frame where the loss starts.
    frames : int
        Length of the loss in frames (> 0).
    """

    at: int
    frames: int

    def to_dict(self) -> dict[str, int]:
        return {"at": self.at, "frames": self.frames}


@dataclass(frozen=True)
class ClockPoint:
    """One point of a recording's clock map: file frame ``frame`` sits at timeline frame
    ``timeline`` (input and output ran on separate clocks; the mixer interpolates)."""

    frame: int
    timeline: int

    def to_dict(self) -> dict[str, int]:
        return {"frame": self.frame, "timeline": self.timeline}


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
    shared_clock : bool
        Whether input and output ran on one clock, as measured by the recorder.
    gaps : tuple[Gap, ...]
        Input frames the recorder lost (overflow, stalled process); silence in the file.
    slips : tuple[Gap, ...]
        Where the singer's headset program skipped ahead to stay on the timeline.
    clock_map : tuple[ClockPoint, ...]
        File frame ↔ timeline frame every few seconds, for a recording whose input clock
        is not the output's; empty when ``shared_clock``.
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
    gaps: tuple[Gap, ...] = ()
    slips: tuple[Gap, ...] = ()
    clock_map: tuple[ClockPoint, ...] = ()

    @property
    def timeline_start(self) -> int:
        """Timeline position (frames) of the recording's first sample."""
        return self.start_offset - self.latency

    @property
    def lost_frames(self) -> int:
        """Input frames this recorder lost in all (each replaced by silence)."""
        return sum(g.frames for g in self.gaps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # nested records become dicts; JSON wants lists
        for key in ("gaps", "slips", "clock_map"):
            d[key] = list(d[key])
        return d


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


#: Most entries a gap, slip or clock-map list may hold (hours of a take, far beyond a song).
MAX_EVENTS: Final = 100_000
#: Largest frame number accepted in a gap, slip or clock map (a day at 192 kHz).
MAX_FRAME: Final = 192_000 * 86_400


def _frame(v: Any, what: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_FRAME:
        raise TakeFormatError(f"{what}: must be a whole number of frames in {lo}…{MAX_FRAME}")
    return v


def _entries(d: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    raw = d.get(key, [])
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        raise TakeFormatError(f"{what}: {key} must be a list of at most {MAX_EVENTS} objects")
    if not all(isinstance(e, dict) for e in raw):
        raise TakeFormatError(f"{what}: every entry of {key} must be an object")
    return raw


def parse_gaps(d: dict[str, Any], key: str, what: str) -> tuple[Gap, ...]:
    """``gaps`` or ``slips`` of a recording entry: objects ``{"at": frame, "frames": n}``."""
    gaps = tuple(
        Gap(
            at=_frame(e.get("at"), f"{what}: {key}[{i}].at", -MAX_FRAME),
            frames=_frame(e.get("frames"), f"{what}: {key}[{i}].frames", 1),
        )
        for i, e in enumerate(_entries(d, key, what))
    )
    if any(b.at < a.at for a, b in zip(gaps, gaps[1:], strict=False)):
        raise TakeFormatError(f"{what}: {key} must be in timeline order")
    return gaps


def parse_clock_map(d: dict[str, Any], what: str) -> tuple[ClockPoint, ...]:
    """A recording's ``clock_map``: ``{"frame": file frame, "timeline": timeline frame}``,
    file frames strictly increasing."""
    pts = tuple(
        ClockPoint(
            frame=_frame(e.get("frame"), f"{what}: clock_map[{i}].frame", 0),
            timeline=_frame(e.get("timeline"), f"{what}: clock_map[{i}].timeline", -MAX_FRAME),
        )
        for i, e in enumerate(_entries(d, "clock_map", what))
    )
    if any(b.frame <= a.frame for a, b in zip(pts, pts[1:], strict=False)):
        raise TakeFormatError(f"{what}: clock_map frames must increase")
    if len(pts) == 1:
        raise TakeFormatError(f"{what}: clock_map needs at least two points (or none)")
    return pts


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
        gaps=parse_gaps(d, "gaps", what),
        slips=parse_gaps(d, "slips", what),
        clock_map=parse_clock_map(d, what),
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
