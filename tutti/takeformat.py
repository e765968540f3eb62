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
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from tutti.wire import SessionSettings, WireError, parse_settings

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


#: sample rates a take and its recordings may have, Hz
RATE_MIN: Final = 8000
RATE_MAX: Final = 192000
MAX_CHANNELS: Final = 8
#: longest recording or backing track, seconds (of its own rate)
MAX_RECORDING_SECONDS: Final = 24 * 3600
#: farthest a recording or backing track may start from timeline 0, seconds either way (a take
#: lasts at most an hour, and a singer who joins late starts recording within it)
MAX_OFFSET_SECONDS: Final = 2 * 3600
#: largest round-trip latency, seconds (Bluetooth headsets measure ≈ 0.3 s)
MAX_LATENCY_SECONDS: Final = 10
#: largest dropped-block count a recorder may report
MAX_COUNT: Final = 10**9
MAX_RECORDINGS: Final = 1000
#: characters in a name, part, title or id
MAX_TEXT: Final = 200
#: nesting depth of the free-form objects (``device``, ``settings``)
MAX_DEPTH: Final = 8


class TakeFormatError(ValueError):
    """The manifest is not a valid take manifest; the message names the field."""


def show(v: Any) -> str:
    """A value for an error message: short and on one line (a huge integer is not printed)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of about {round(v.bit_length() * math.log10(2))} digits"
    text = ascii(v)
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_text(v: Any, what: str, *, maxlen: int = MAX_TEXT) -> str:
    """Text that can be shown on one line and written as UTF-8: a string of at most
    ``maxlen`` characters, without control characters or lone surrogates."""
    if not isinstance(v, str) or len(v) > maxlen:
        raise TakeFormatError(
            f"{what} must be a string of at most {maxlen} characters, got {show(v)}"
        )
    if not v.isprintable() and any(unicodedata.category(c) == "Cc" for c in v):
        raise TakeFormatError(f"{what}: {show(v)} contains a control character")
    _check_unicode(v, what)
    return v


def _check_unicode(v: str, what: str) -> None:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise TakeFormatError(
            f"{what}: {show(v)} is not valid Unicode text (a lone surrogate)"
        ) from None


def check_relpath(path: Any, what: str) -> str:
    """A file name inside the take folder: relative, POSIX separators, no ``..``."""
    if not isinstance(path, str) or not path:
        raise TakeFormatError(f"{what}: must be a non-empty relative path")
    check_text(path, what, maxlen=255)  # also refuses NUL, as a control character
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
        raise TakeFormatError(f"{what}: field {key!r} has the wrong type (bool)")
    if not isinstance(v, typ):
        raise TakeFormatError(f"{what}: field {key!r} has the wrong type ({type(v).__name__})")
    if isinstance(v, float) and not math.isfinite(v):
        raise TakeFormatError(f"{what}: field {key!r} must be finite")
    return v


def _int_in(
    d: dict[str, Any], key: str, lo: int, hi: int, what: str, *, default: int | None = None
) -> int:
    """Field ``key`` of ``d``: an integer (a bool is not one) from ``lo`` to ``hi``.

    A missing or null field gives ``default``; without a default it is an error.
    """
    v = d.get(key)
    if v is None:
        if default is None:
            raise TakeFormatError(f"{what}: missing field {key!r}")
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise TakeFormatError(
            f"{what}: field {key!r} must be an integer from {lo} to {hi}, got {show(v)}"
        )
    if not lo <= v <= hi:
        raise TakeFormatError(f"{what}: field {key!r} is {show(v)}; accepted: {lo} to {hi}")
    return v


def _text_in(d: dict[str, Any], key: str, what: str, *, default: str | None = None) -> str:
    """Field ``key`` of ``d``: text (:func:`check_text`); missing or null gives ``default``."""
    v = d.get(key)
    if v is None:
        if default is None:
            raise TakeFormatError(f"{what}: missing field {key!r}")
        return default
    return check_text(v, f"{what}: field {key!r}")


def _object_in(d: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """Field ``key`` of ``d``: a free-form JSON object (missing or null: empty), at most
    :data:`MAX_DEPTH` deep, all its text valid Unicode.  Walked without recursion."""
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise TakeFormatError(f"{what}: field {key!r} must be an object, got {show(v)}")
    todo: list[tuple[Any, int]] = [(v, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise TakeFormatError(f"{what}: field {key!r} nests deeper than {MAX_DEPTH} levels")
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        for item in items:
            if isinstance(item, str):
                _check_unicode(item, f"{what}: field {key!r}")
            elif isinstance(item, dict | list):
                todo.append((item, depth + 1))
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
    settings: SessionSettings | None = None  # the session's, when the take was armed
    backing: tuple[Backing, ...] = ()
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "take_id": self.take_id,
            "title": self.title,
            "rate": self.rate,
            "settings": {} if self.settings is None else self.settings.to_dict(),
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


def _sha256_in(d: dict[str, Any], key: str, what: str) -> str:
    v = _text_in(d, key, what, default="")
    if v and not (len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v)):
        raise TakeFormatError(f"{what}: field {key!r} must be 64 hex digits, got {show(v)}")
    return v


def parse_recording(d: Any, what: str = "recording") -> Recording:
    """Check one recording entry: every field typed and in range (the message names it)."""
    if not isinstance(d, dict):
        raise TakeFormatError(f"{what}: expected an object")
    rate = _int_in(d, "rate", RATE_MIN, RATE_MAX, what)
    channels = _int_in(d, "channels", 1, MAX_CHANNELS, what)
    frames = _int_in(d, "frames", 0, MAX_RECORDING_SECONDS * rate, what)
    reach = MAX_OFFSET_SECONDS * rate
    start_offset = _int_in(d, "start_offset", -reach, reach, what)
    latency = _int_in(d, "latency", 0, MAX_LATENCY_SECONDS * rate, what)
    source = d.get("latency_source", "measured")
    if source not in ("measured", "reported"):
        raise TakeFormatError(f"{what}: latency_source must be 'measured' or 'reported'")
    shared = d.get("shared_clock", True)
    if not isinstance(shared, bool):
        raise TakeFormatError(f"{what}: shared_clock must be true or false")
    return Recording(
        file=check_relpath(d.get("file"), f"{what}.file"),
        singer=_text_in(d, "singer", what),
        part=_text_in(d, "part", what),
        rate=rate,
        channels=channels,
        frames=frames,
        start_offset=start_offset,
        latency=latency,
        latency_source=source,
        participant_id=_text_in(d, "participant_id", what, default=""),
        sha256=_sha256_in(d, "sha256", what),
        overflows=_int_in(d, "overflows", 0, MAX_COUNT, what, default=0),
        underflows=_int_in(d, "underflows", 0, MAX_COUNT, what, default=0),
        shared_clock=shared,
        device=_object_in(d, "device", what),
        gaps=parse_gaps(d, "gaps", what),
        slips=parse_gaps(d, "slips", what),
        clock_map=parse_clock_map(d, what),
    )


def _parse_backing(b: Any, rate: int, what: str) -> Backing:
    if not isinstance(b, dict):
        raise TakeFormatError(f"{what}: expected an object")
    reach = MAX_OFFSET_SECONDS * rate
    return Backing(
        part=_text_in(b, "part", what),
        file=check_relpath(b.get("file"), f"{what}.file"),
        sha256=_sha256_in(b, "sha256", what),
        timeline_start=_int_in(b, "timeline_start", -reach, reach, what, default=0),
    )


def parse_manifest(d: Any) -> TakeManifest:
    """Check a whole manifest object (as loaded from ``take.json``)."""
    what = MANIFEST_NAME
    if not isinstance(d, dict):
        raise TakeFormatError(f"{what}: expected a JSON object")
    if d.get("format") != FORMAT:
        raise TakeFormatError(f"{what}: field 'format' must be {FORMAT!r}")
    version = d.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise TakeFormatError(
            f"{what}: version {show(version)} not supported (this tutti reads {VERSION})"
        )
    rate = _int_in(d, "rate", RATE_MIN, RATE_MAX, what)
    recs_raw = _get(d, "recordings", what, list)
    if len(recs_raw) > MAX_RECORDINGS:
        raise TakeFormatError(f"{what}: {len(recs_raw)} recordings; accepted: {MAX_RECORDINGS}")
    recs = tuple(parse_recording(r, f"{what}: recordings[{i}]") for i, r in enumerate(recs_raw))
    files = [r.file for r in recs]
    if len(set(files)) != len(files):
        raise TakeFormatError(f"{what}: two recordings name the same file")
    backing_raw = d.get("backing", [])
    if backing_raw is None:
        backing_raw = []
    if not isinstance(backing_raw, list) or len(backing_raw) > MAX_RECORDINGS:
        raise TakeFormatError(f"{what}: backing must be a list of at most {MAX_RECORDINGS}")
    backing = [_parse_backing(b, rate, f"{what}: backing[{i}]") for i, b in enumerate(backing_raw)]
    title = _text_in(d, "title", what, default="")
    return TakeManifest(
        take_id=_text_in(d, "take_id", what, default=""),
        rate=rate,
        recordings=recs,
        settings=_settings(_object_in(d, "settings", what), title, what),
        backing=tuple(backing),
        title=title,
    )


def _settings(raw: dict[str, Any], title: str, what: str) -> SessionSettings | None:
    """The session's settings of a take (None: the manifest has none).  Fields tutti does
    not know are left out (another tool may add its own); the title defaults to the take's."""
    if not raw:
        return None
    known = {k: v for k, v in raw.items() if k in SessionSettings.__dataclass_fields__}
    if not known.get("title"):
        known["title"] = title or "take"
    try:
        return parse_settings(known)
    except WireError as exc:
        raise TakeFormatError(f"{what}: {exc}") from None
