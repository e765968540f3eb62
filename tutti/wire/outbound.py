"""What the server sends on Socket.IO: one record per event, built by the server, parsed once
by each client at its edge (``Record.from_dict``).  :data:`SERVER_EVENTS` maps every
server-to-client event name to its record; :mod:`tutti.wire.schema` exports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tutti.wire.contract import (
    MIX_STATES,
    TAKE_UPLOAD_STATES,
    Ev,
    LevelReport,
    SessionSettings,
    TakeStart,
)
from tutti.wire.record import Record, WireError, spec

__all__ = [
    "TrackInfo",
    "SessionView",
    "TakeView",
    "Welcome",
    "LiveLevel",
    "LiveClock",
    "RosterEntry",
    "Roster",
    "Levels",
    "Clocks",
    "LevelRate",
    "MAX_LEVEL_HZ",
    "TakeArmed",
    "TakeStop",
    "TakeUpdates",
    "MixFiles",
    "TakeMix",
    "SessionClosed",
    "LobbySinger",
    "Lobby",
    "Waves",
    "NOTE_MAX_CHARS",
    "LOBBY_NAMES_MAX",
    "WAVES_NAMES_MAX",
    "WAVE_EVERY_S",
    "check_note",
    "ErrorReport",
    "Refusal",
    "ConnectRefused",
    "connect_refusal",
    "SERVER_EVENTS",
    "SESSION_STATES",
    "TAKE_STATES",
]

#: A session's states; a take's states.
SESSION_STATES: Final = ("open", "closed")
TAKE_STATES: Final = ("armed", "running", "stopped")


#: The most ``level`` reports a singer sends per second (what a live meter needs).
MAX_LEVEL_HZ: Final = 10.0


@dataclass(frozen=True)
class TrackInfo(Record):
    """A backing track as stored: its checksum, length and format."""

    sha256: str = spec(maxlen=64)
    frames: int = spec(lo=0)
    rate: int = spec(lo=1)
    channels: int = spec(lo=1, hi=64)
    size: int = spec(lo=0)
    format: str = spec(maxlen=16)


@dataclass(frozen=True)
class SessionView(Record):
    """The session as everyone in it sees it (no join code): ``session`` event and welcome."""

    session_id: str = spec(maxlen=64)
    settings: SessionSettings = spec()
    state: str = spec(one_of=SESSION_STATES)
    tracks: dict[str, TrackInfo] = spec(factory=dict)  # part -> its backing


@dataclass(frozen=True)
class TakeView(Record):
    """The session's latest take, so a reconnecting singer can finish one whose stop it missed."""

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=TAKE_STATES)
    t0: float | None = spec(default=None)  # server monotonic seconds, once running


@dataclass(frozen=True)
class Welcome(Record):
    """``welcome``, to the connecting socket: who you are and the session as it is now."""

    role: str = spec(one_of=("leader", "singer"))
    session: SessionView = spec()
    server_time: float = spec()  # server monotonic seconds when sent
    take: TakeView | None = spec(default=None)
    participant_id: str | None = spec(default=None, maxlen=64)  # singers only
    name: str | None = spec(default=None, maxlen=64)
    part: str | None = spec(default=None, maxlen=32)
    level_hz: float | None = spec(default=None, lo=0, hi=MAX_LEVEL_HZ)  # singers: `level.rate`


@dataclass(frozen=True)
class LevelRate(Record):
    """``level.rate``, to a singer: send ``level`` at most ``hz`` times a second (0: none,
    no leader is watching).  The server keeps the session's total within a budget."""

    hz: float = spec(lo=0, hi=MAX_LEVEL_HZ)


@dataclass(frozen=True)
class LiveLevel(Record):
    """A singer's input level in a roster entry (the rest of the report is in the entry)."""

    rms_db: float = spec(lo=-200, hi=20)
    peak_db: float = spec(lo=-200, hi=20)
    clipped: bool = spec(default=False)


@dataclass(frozen=True)
class LiveClock(Record):
    """A singer's clock estimate as its last ``clock.report`` gave it (seconds)."""

    offset: float = spec()
    error_bound: float = spec(lo=0)
    rtt_min: float = spec(lo=0)


@dataclass(frozen=True)
class RosterEntry(Record):
    """``participant``, and each entry of ``roster``: one singer, stored and live."""

    participant_id: str = spec(maxlen=64)
    name: str = spec(maxlen=64)
    part: str = spec(maxlen=32)
    connected: bool = spec()
    latency_frames: int | None = spec(default=None, lo=0)
    latency_source: str | None = spec(default=None, one_of=("measured", "reported"))
    clock: LiveClock | None = spec(default=None)
    level: LiveLevel | None = spec(default=None)
    overflows: int = spec(lo=0, default=0)
    underflows: int = spec(lo=0, default=0)
    lost_frames: int = spec(lo=0, default=0)
    dropouts: int = spec(lo=0, default=0)
    skipped_frames: int = spec(lo=0, default=0)
    last_seen: float | None = spec(default=None)  # wall-clock seconds since the epoch


@dataclass(frozen=True)
class Roster(Record):
    """``roster``, to a leader as it connects: every singer of the session."""

    participants: tuple[RosterEntry, ...] = spec()


@dataclass(frozen=True)
class Levels(Record):
    """``levels``, to the leaders every interval: the reports that came in, by participant."""

    levels: dict[str, LevelReport] = spec()


@dataclass(frozen=True)
class Clocks(Record):
    """``clocks``, to the leaders every interval: singers' clock estimates that moved enough
    to show (a roster entry's ``clock``; the roster call has every report)."""

    clocks: dict[str, LiveClock] = spec()


@dataclass(frozen=True)
class TakeArmed(Record):
    """``take.armed``, to the session: a take is about to start with these settings."""

    take_id: str = spec(maxlen=64)
    expected_count: int = spec(lo=0)
    settings: SessionSettings = spec()


@dataclass(frozen=True)
class TakeStop(Record):
    """``take.stop``, to the session: the leader stopped the take."""

    take_id: str = spec(maxlen=64)
    stopped_at: float = spec()  # wall-clock seconds since the epoch


@dataclass(frozen=True)
class TakeUpdates(Record):
    """``take.updates``, to the leaders: these singers' upload state on one take is now
    ``state`` (with ``detail``).  Batched: a singer's newest state of the last tenth of a
    second, one message per take, state and detail."""

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=TAKE_UPLOAD_STATES)
    participant_ids: tuple[str, ...] = spec()
    detail: str = spec(maxlen=500, default="")


@dataclass(frozen=True)
class MixFiles(Record):
    """Where a ready mix is fetched (paths on the server, the caller's token as auth)."""

    opus: str = spec(maxlen=300)
    flac: str = spec(maxlen=300)


@dataclass(frozen=True)
class TakeMix(Record):
    """``take.mix``, to the leaders and the take's singers, and the reply of ``…/mix``: the
    state of the server's mix of one take, with the gains and mutes it is (being) made with.

    ``version`` counts the mixes made of the take (a remix is the next one); ``gains_db``
    and ``muted`` are keyed by participant id; ``duration_s`` and ``files`` only when ready.
    """

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=MIX_STATES)
    detail: str = spec(maxlen=2000, default="")
    version: int = spec(lo=0, default=0)
    gains_db: dict[str, float] = spec(factory=dict)
    muted: tuple[str, ...] = spec(maxlen=2000, default=())
    duration_s: float | None = spec(lo=0.0, default=None, unit="seconds")
    files: MixFiles | None = spec(default=None)


#: The longest note a leader may leave for the waiting room (characters).
NOTE_MAX_CHARS: Final = 280
#: Names a ``lobby`` lists at most (the counts cover everyone; a screen shows no more).
LOBBY_NAMES_MAX: Final = 200
#: Names a ``waves`` carries at most (``more`` counts the rest).
WAVES_NAMES_MAX: Final = 10
#: Seconds a singer waits between two waves (the server refuses sooner ones: ``too_soon``).
WAVE_EVERY_S: Final = 10.0


def check_note(raw: Any) -> str:
    """The leader's note for the waiting room: plain text of at most
    :data:`NOTE_MAX_CHARS` characters, line breaks allowed, no other control characters;
    surrounding space is dropped ("" clears the note)."""
    if not isinstance(raw, str):
        raise WireError("note: a text is needed (an empty one clears the note)")
    note: str = raw.strip()
    if len(note) > NOTE_MAX_CHARS:
        raise WireError(f"note: at most {NOTE_MAX_CHARS} characters (this one has {len(note)})")
    if any((ord(c) < 32 and c != "\n") or ord(c) == 127 for c in note):
        raise WireError("note: plain text only (letters, digits, punctuation, line breaks)")
    return note


@dataclass(frozen=True)
class LobbySinger(Record):
    """One singer in the waiting room: their first name and part, nothing else."""

    name: str = spec(maxlen=64)
    part: str = spec(maxlen=32)


@dataclass(frozen=True)
class Lobby(Record):
    """``lobby``, to the session's singers at most once a second while it changes: who is
    here (first names and parts, in the order they came), how many per part, the leader's
    note.  ``at`` is the server time it was taken: a client keeps the newest (several server
    processes each send their own)."""

    here: tuple[LobbySinger, ...] = spec(maxlen=LOBBY_NAMES_MAX)
    count: int = spec(lo=0)
    parts: dict[str, int] = spec(factory=dict)
    note: str = spec(maxlen=NOTE_MAX_CHARS, default="")
    at: float = spec(default=0.0, unit="seconds (server clock)")


@dataclass(frozen=True)
class Waves(Record):
    """``waves``, to the session's singers at most once a second: the first names of those
    who waved since the last one, and how many more did."""

    names: tuple[str, ...] = spec(maxlen=WAVES_NAMES_MAX)
    more: int = spec(lo=0, default=0)


@dataclass(frozen=True)
class SessionClosed(Record):
    """``session.closed``, to the session: nothing more will happen in it."""

    session_id: str = spec(maxlen=64)


@dataclass(frozen=True)
class ErrorReport(Record):
    """``error.report``, to one socket: an event it sent was refused, and why."""

    event: str = spec(maxlen=64)
    code: str = spec(maxlen=64)
    message: str = spec(maxlen=2000)


@dataclass(frozen=True)
class Refusal(Record):
    """Why the server refused a Socket.IO connection: a stable code and a sentence."""

    code: str = spec(maxlen=64)
    message: str = spec(maxlen=2000)


@dataclass(frozen=True)
class ConnectRefused(Record):
    """What a client's ``connect_error`` handler receives when the server refuses it."""

    message: str = spec(maxlen=2000)
    data: Refusal | None = spec(default=None)


def connect_refusal(payload: Any) -> str | None:
    """The sentence of a ``connect_error`` payload, or None when it carries none (a network
    failure, not a refusal)."""
    try:
        return ConnectRefused.from_dict(payload, "connect_error").message or None
    except WireError:
        return None


#: Every server-to-client event and the record it carries.
SERVER_EVENTS: Final[dict[str, type[Record]]] = {
    Ev.WELCOME: Welcome,
    Ev.ROSTER: Roster,
    Ev.PARTICIPANT: RosterEntry,
    Ev.LEVELS: Levels,
    Ev.CLOCKS: Clocks,
    Ev.LEVEL_RATE: LevelRate,
    Ev.SESSION: SessionView,
    Ev.TAKE_ARMED: TakeArmed,
    Ev.TAKE_START: TakeStart,
    Ev.TAKE_STOP: TakeStop,
    Ev.TAKE_UPDATES: TakeUpdates,
    Ev.TAKE_MIX: TakeMix,
    Ev.SESSION_CLOSED: SessionClosed,
    Ev.ERROR: ErrorReport,
    Ev.LOBBY: Lobby,
    Ev.WAVES: Waves,
}
