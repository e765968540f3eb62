"""Event names, session settings, and what clients send on Socket.IO (with ``take.start``).

Pure: no I/O.  Payloads travel as JSON objects; each record's ``from_dict`` (and the
``parse_*`` shorthands) checks one and returns a typed record or raises :class:`WireError`
with a message that says which field was wrong and what is accepted.

Versioning: :data:`PROTOCOL_VERSION` is sent by every client in the Socket.IO ``auth``
object; the server refuses a connection whose version it does not speak.  Event names are
never reused: a retired name stays in :data:`RETIRED_EVENTS` with the version that retired it.

Times on the wire are seconds.  ``server time`` means the server's ``time.monotonic()``;
``client time`` the client's own ``time.monotonic()``.  Sample counts are frames at the
session rate ``fs``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Final, Self

from tutti.wire.record import Record, WireError, spec
from tutti.wire.record import obj as _obj

__all__ = [
    "PROTOCOL_VERSION",
    "WireError",
    "Ev",
    "RETIRED_EVENTS",
    "SessionSettings",
    "TempoSection",
    "ClockReply",
    "ClockReport",
    "LevelReport",
    "TakeStart",
    "ClockProbe",
    "ConnectAuth",
    "TakeState",
    "CalibrationReport",
    "Wave",
    "TAKE_STATES",
    "TAKE_UPLOAD_STATES",
    "MIX_STATES",
    "SAMPLE_RATES",
    "parse_settings",
    "parse_clock_probe",
    "parse_clock_report",
    "parse_level_report",
    "parse_take_state",
    "parse_calibration",
    "check_name",
    "check_part",
    "MAX_EVENT_BYTES",
    "CLOCK_BANDS_S",
    "clock_band",
    "MIN_START_LEAD_S",
    "MAX_START_LEAD_S",
    "DEFAULT_START_LEAD_S",
]

#: Version of this contract.  Bump on any incompatible change.
PROTOCOL_VERSION: Final = 2

#: Largest Socket.IO message the server accepts (bytes); larger ones are refused.
MAX_EVENT_BYTES: Final = 64 * 1024

#: A singer's clock error bound as a leader's view grades it (seconds): good below the first,
#: fair below the second, poor above.
CLOCK_BANDS_S: Final = (0.002, 0.010)


def clock_band(error_bound: float) -> int:
    """0 good, 1 fair, 2 poor: where ``error_bound`` falls in :data:`CLOCK_BANDS_S`."""
    return sum(error_bound >= edge for edge in CLOCK_BANDS_S)


#: A take's T0 is scheduled at least this far ahead of "now" (seconds), so the broadcast
#: reaches every singer before the first sample must leave their DAC.
MIN_START_LEAD_S: Final = 1.0
#: The latest a leader may schedule it, and where it goes when the leader does not say.
MAX_START_LEAD_S: Final = 30.0
DEFAULT_START_LEAD_S: Final = 2.0

SAMPLE_RATES: Final = (22050, 32000, 44100, 48000, 88200, 96000)


class Ev:
    """Socket.IO event names.  Direction: C→S client to server, S→C server to clients."""

    # C→S (any member)
    CLOCK_PROBE: Final = "clock.probe"  # ack: ClockReply
    CLOCK_REPORT: Final = "clock.report"  # the client's estimate and its error bound
    LEVEL: Final = "level"  # input level and losses, as often as `level.rate` says
    CALIBRATION: Final = "calibration"  # measured round-trip latency
    TAKE_STATE: Final = "take.state"  # the singer's progress on one take
    WAVE: Final = "wave"  # a singer waves to the waiting room (rate-limited)
    # S→C
    WELCOME: Final = "welcome"  # to the connecting socket: who you are, the session
    ROSTER: Final = "roster"  # to the leader room: the whole roster
    PARTICIPANT: Final = "participant"  # to the leader room: one participant changed
    LEVELS: Final = "levels"  # to the leader room: batched live levels
    CLOCKS: Final = "clocks"  # to the leader room: batched clock estimates the view should show
    LEVEL_RATE: Final = "level.rate"  # to a singer: how often to send `level` (0: not at all)
    SESSION: Final = "session"  # to the session room: settings or tracks changed
    TAKE_ARMED: Final = "take.armed"  # to the session room
    TAKE_START: Final = "take.start"  # to the session room: TakeStart
    TAKE_STOP: Final = "take.stop"  # to the session room
    TAKE_UPDATES: Final = "take.updates"  # to the leader room: singers' upload states (batched)
    TAKE_MIX: Final = "take.mix"  # to the leader room and the take's singers: the server's mix
    LOBBY: Final = "lobby"  # to the singers: who is here and the leader's note (coalesced)
    WAVES: Final = "waves"  # to the singers: who waved since the last (coalesced)
    SESSION_CLOSED: Final = "session.closed"
    ERROR: Final = "error.report"  # to one socket: a refused event, with the reason


#: Event names no longer in use, with the protocol version that retired them.  Never reuse.
RETIRED_EVENTS: Final[dict[str, int]] = {"take.update": 2}  # one message per singer

#: Lifecycle of a take as the server sees it.
TAKE_STATES: Final = ("armed", "running", "stopped")

#: Per-singer upload states of a take, in order of progress.
TAKE_UPLOAD_STATES: Final = (
    "expected",  # the singer was in the session when the take was armed (or joined it since)
    "recording",
    "recorded",  # stopped; the file is safe on the singer's disk
    "uploading",
    "uploaded",  # complete on the server, sha256 verified
    "failed",
    "missed",  # set by the server at the stop: the singer never recorded this take
)

#: States of a take's mix on the server (``take.mix``, ``GET …/mix``).
MIX_STATES: Final = ("waiting", "mixing", "ready", "failed")

_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,64}$")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,31}$")


def _num(
    d: dict[str, Any], key: str, what: str, *, lo: float, hi: float, default: float | None = None
) -> float:
    if key not in d:
        if default is None:
            raise WireError(f"{what}: missing field {key!r}")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise WireError(f"{what}: field {key!r} must be a finite number, got {v!r}")
    if not lo <= v <= hi:
        raise WireError(f"{what}: field {key!r}={v} is outside [{lo}, {hi}]")
    return float(v)


def _int(
    d: dict[str, Any], key: str, what: str, *, lo: int, hi: int, default: int | None = None
) -> int:
    if key not in d:
        if default is None:
            raise WireError(f"{what}: missing field {key!r}")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise WireError(f"{what}: field {key!r} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise WireError(f"{what}: field {key!r}={v} is outside [{lo}, {hi}]")
    return v


def _str(
    d: dict[str, Any], key: str, what: str, *, maxlen: int = 200, default: str | None = None
) -> str:
    if key not in d:
        if default is None:
            raise WireError(f"{what}: missing field {key!r}")
        return default
    v = d[key]
    if not isinstance(v, str) or len(v) > maxlen:
        raise WireError(f"{what}: field {key!r} must be a string of at most {maxlen} characters")
    return v


def check_name(name: Any) -> str:
    """A singer's display name: 1–64 characters, no control characters or slashes."""
    if not isinstance(name, str) or not _NAME_RE.match(name.strip() or "\x00"):
        raise WireError("name: 1–64 printable characters, no slashes")
    return name.strip()


def check_part(part: Any, parts: tuple[str, ...] | None = None) -> str:
    """A voice part: letters, digits, space, ``_.-``, up to 32; one of ``parts`` if given."""
    if not isinstance(part, str) or not _PART_RE.match(part):
        raise WireError("part: 1–32 characters of letters, digits, space, '_', '.', '-'")
    if parts is not None and part not in parts:
        raise WireError(f"part: {part!r} is not one of this session's parts {list(parts)}")
    return part


@dataclass(frozen=True)
class TempoSection(Record):
    """A section of a tempo map: from ``bar`` (0-based, after the count-in) on."""

    bar: int = spec(lo=0, hi=100000)
    bpm: float = spec(lo=20, hi=400)
    beats_per_bar: int = spec(lo=1, hi=32)
    beat_unit: int = spec(one_of=(1, 2, 4, 8, 16, 32), default=4)


@dataclass(frozen=True)
class SessionSettings(Record):
    """What the leader sets for a session; snapshotted into every take.

    ``backing_offset_beats``: where the backing starts on the timeline, in beats after the
    end of the count-in (0 = on the first downbeat after the count-in).
    """

    STRICT = True

    title: str = spec(maxlen=120)
    rate: int = spec(one_of=SAMPLE_RATES, default=48000)
    bpm: float = spec(lo=20, hi=400, default=100.0)
    beats_per_bar: int = spec(lo=1, hi=32, default=4)
    beat_unit: int = spec(one_of=(1, 2, 4, 8, 16, 32), default=4)
    count_in_bars: int = spec(lo=0, hi=8, default=1)
    parts: tuple[str, ...] = spec(maxlen=16, default=("S", "A", "T", "B"))
    tempo_map: tuple[TempoSection, ...] = spec(maxlen=256, default=())
    backing_offset_beats: float = spec(lo=-64, hi=4096, default=0.0)
    max_take_seconds: int = spec(lo=5, hi=3600, default=900)

    @classmethod
    def from_dict(cls, payload: Any, what: str | None = None) -> Self:
        """The settings' own checks (parts distinct, bars increasing) run too."""
        settings = parse_settings(payload)
        assert isinstance(settings, cls)
        return settings

    @property
    def count_in_frames(self) -> int:
        """Length of the count-in in frames at ``rate`` (exact rounding of its ideal end)."""
        beats = self.count_in_bars * self.beats_per_bar
        return round(beats * 60.0 / self.bpm * self.rate)


def parse_settings(payload: Any, base: SessionSettings | None = None) -> SessionSettings:
    """Check a session-settings object.  With ``base``, missing fields keep base's values."""
    what = "settings"
    d = _obj(payload, what)
    known = set(SessionSettings.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise WireError(f"{what}: unknown field(s) {sorted(unknown)}; accepted: {sorted(known)}")
    b = base or SessionSettings(title="")
    title = _str(d, "title", what, maxlen=120, default=b.title if base else None).strip()
    if not title or any(ord(c) < 32 for c in title):
        raise WireError(f"{what}: title must be 1–120 printable characters")
    rate = _int(d, "rate", what, lo=8000, hi=192000, default=b.rate)
    if rate not in SAMPLE_RATES:
        raise WireError(f"{what}: rate {rate} not supported; accepted: {list(SAMPLE_RATES)}")
    bpm = _num(d, "bpm", what, lo=20, hi=400, default=b.bpm)
    bpb = _int(d, "beats_per_bar", what, lo=1, hi=32, default=b.beats_per_bar)
    unit = _int(d, "beat_unit", what, lo=1, hi=32, default=b.beat_unit)
    if unit not in (1, 2, 4, 8, 16, 32):
        raise WireError(f"{what}: beat_unit must be a power of two from 1 to 32")
    count_in = _int(d, "count_in_bars", what, lo=0, hi=8, default=b.count_in_bars)
    parts_raw = d.get("parts", list(b.parts))
    if not isinstance(parts_raw, (list, tuple)) or not 1 <= len(parts_raw) <= 16:
        raise WireError(f"{what}: parts must be a list of 1–16 voice part names")
    parts = tuple(check_part(p) for p in parts_raw)
    if len(set(parts)) != len(parts):
        raise WireError(f"{what}: parts must be distinct")
    tmap_raw = d.get("tempo_map", [asdict(s) for s in b.tempo_map])
    if not isinstance(tmap_raw, (list, tuple)) or len(tmap_raw) > 256:
        raise WireError(f"{what}: tempo_map must be a list of at most 256 sections")
    tmap: list[TempoSection] = []
    for i, s in enumerate(tmap_raw):
        sw = f"{what}.tempo_map[{i}]"
        s = _obj(s, sw)
        sec = TempoSection(
            bar=_int(s, "bar", sw, lo=0, hi=100000),
            bpm=_num(s, "bpm", sw, lo=20, hi=400),
            beats_per_bar=_int(s, "beats_per_bar", sw, lo=1, hi=32, default=bpb),
            beat_unit=_int(s, "beat_unit", sw, lo=1, hi=32, default=unit),
        )
        if tmap and sec.bar <= tmap[-1].bar:
            raise WireError(f"{sw}: bars must increase")
        tmap.append(sec)
    offset = _num(d, "backing_offset_beats", what, lo=-64, hi=4096, default=b.backing_offset_beats)
    max_s = _int(d, "max_take_seconds", what, lo=5, hi=3600, default=b.max_take_seconds)
    return SessionSettings(
        title=title,
        rate=rate,
        bpm=bpm,
        beats_per_bar=bpb,
        beat_unit=unit,
        count_in_bars=count_in,
        parts=parts,
        tempo_map=tuple(tmap),
        backing_offset_beats=offset,
        max_take_seconds=max_s,
    )


@dataclass(frozen=True)
class ConnectAuth(Record):
    """The Socket.IO ``auth`` object every client connects with: its bearer token and the
    protocol version it speaks (the server refuses another version)."""

    token: str = spec(maxlen=200)
    protocol: int | None = spec(default=None)


@dataclass(frozen=True)
class ClockProbe(Record):
    """``clock.probe``: the client's time as it sent the probe (echoed in the ack)."""

    t0: float = spec(lo=-1e12, hi=1e12)


def parse_clock_probe(payload: Any) -> float:
    """``clock.probe`` payload: ``{"t0": client time}``; returns t0."""
    return ClockProbe.from_dict(payload, Ev.CLOCK_PROBE).t0


@dataclass(frozen=True)
class ClockReply(Record):
    """Ack of ``clock.probe``: the client's t0 echoed and the server's monotonic time."""

    t0: float = spec()
    server_time: float = spec()


@dataclass(frozen=True)
class ClockReport(Record):
    """The client's clock estimate: ``server_time ≈ client_time + offset`` (seconds)."""

    offset: float = spec(lo=-1e12, hi=1e12)
    error_bound: float = spec(lo=0, hi=3600)  # ≈ (RTT − RTT_min) / 2 of the samples used
    rtt_min: float = spec(lo=0, hi=3600)
    samples: int = spec(lo=1, hi=10**6)


def parse_clock_report(payload: Any) -> ClockReport:
    return ClockReport.from_dict(payload, Ev.CLOCK_REPORT)


_COUNT = 2**53  # largest count a JSON number carries exactly


@dataclass(frozen=True)
class LevelReport(Record):
    """~10 Hz from each singer: input level (dBFS) and what the singer's own stream lost.

    ``lost_frames``/``dropouts``: input frames this singer's stream lost since the latest
    take started (or since it joined), and in how many events; ``skipped_frames``: output
    frames its headset skipped.  They come from the client's frame accounting.
    ``overflows``/``underflows`` are the host API's flags, which on JACK count every
    client's xruns: kept for the record, not for warnings.
    """

    rms_db: float = spec(lo=-200, hi=20)
    peak_db: float = spec(lo=-200, hi=20)
    overflows: int = spec(lo=0, hi=_COUNT, default=0)
    underflows: int = spec(lo=0, hi=_COUNT, default=0)
    clipped: bool = spec(default=False)
    lost_frames: int = spec(lo=0, hi=_COUNT, default=0)
    dropouts: int = spec(lo=0, hi=_COUNT, default=0)
    skipped_frames: int = spec(lo=0, hi=_COUNT, default=0)


def parse_level_report(payload: Any) -> LevelReport:
    return LevelReport.from_dict(payload, Ev.LEVEL)


@dataclass(frozen=True)
class TakeState(Record):
    """``take.state``: the singer's progress on one take."""

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=TAKE_UPLOAD_STATES)
    detail: str = spec(maxlen=500, default="")


def parse_take_state(payload: Any) -> tuple[str, str, str]:
    """``take.state``: ``{"take_id", "state", "detail"?}``; returns the three strings."""
    t = TakeState.from_dict(payload, Ev.TAKE_STATE)
    return t.take_id, t.state, t.detail


@dataclass(frozen=True)
class CalibrationReport(Record):
    """``calibration``: the singer's round-trip latency, measured or as the device reports."""

    latency_frames: int = spec(lo=0, hi=10 * 192000)
    source: str = spec(one_of=("measured", "reported"))


def parse_calibration(payload: Any) -> tuple[int, str]:
    """``calibration``: ``{"latency_frames", "source": "measured"|"reported"}``."""
    c = CalibrationReport.from_dict(payload, Ev.CALIBRATION)
    return c.latency_frames, c.source


@dataclass(frozen=True)
class Wave(Record):
    """``wave``: a singer waves to the waiting room (an empty object; the server knows who)."""

    STRICT = True


@dataclass(frozen=True)
class TakeStart(Record):
    """``take.start`` broadcast: play timeline sample 0 at server time ``t0``."""

    take_id: str = spec(maxlen=64)
    t0: float = spec(lo=-1e12, hi=1e12)  # server monotonic seconds
    settings: SessionSettings = spec()
    # server monotonic seconds when broadcast (for delivery-latency stats)
    sent_at: float = spec(lo=-1e12, hi=1e12)
    tracks: dict[str, str] = spec(factory=dict)  # part -> sha256 of its backing
