"""Typed records of the session server's durable state.

Identity apart from the live connection: a :class:`Participant` is who joined (name, part,
token) and survives reconnects and server restarts; the live Socket.IO side (connected
sockets, levels, clock quality) lives in :mod:`tutti.server.realtime`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tutti.takeformat import Recording
from tutti.wire import (
    TAKE_STATES,
    Record,
    SessionSettings,
    SessionView,
    TakeInfo,
    TakeSingerInfo,
    TrackInfo,
)

__all__ = [
    "Role",
    "Principal",
    "Session",
    "Participant",
    "Track",
    "Take",
    "TakeSinger",
    "TAKE_STATES",
    "TRACK_FORMATS",
    "Fanout",
    "session_view",
]

Role = Literal["leader", "singer"]


#: Audio container -> (file extension, MIME type), for tracks and take files.
TRACK_FORMATS: dict[str, tuple[str, str]] = {
    "WAV": ("wav", "audio/wav"),
    "FLAC": ("flac", "audio/flac"),
    "OGG": ("ogg", "audio/ogg"),
}


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to: the leader of a session, or one of its singers."""

    role: Role
    session_id: str
    participant_id: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"


@dataclass(frozen=True)
class Session:
    """A session: its join code, settings and whether it still accepts joins."""

    session_id: str
    code: str
    settings: SessionSettings
    state: str  # "open" | "closed"
    created_at: float  # wall-clock seconds since the epoch


@dataclass(frozen=True)
class Participant:
    """A singer who joined a session (identity; not the live connection)."""

    participant_id: str
    session_id: str
    name: str
    part: str
    created_at: float
    latency_frames: int | None = None
    latency_source: str | None = None


@dataclass(frozen=True)
class Track:
    """A backing track for one voice part, stored content-addressed as ``tracks/<sha256>``."""

    part: str
    sha256: str
    frames: int
    rate: int
    channels: int
    size: int  # bytes
    format: str  # "WAV" | "FLAC" | "OGG"

    @property
    def ext(self) -> str:
        return TRACK_FORMATS[self.format][0]

    @property
    def content_type(self) -> str:
        return TRACK_FORMATS[self.format][1]

    def info(self) -> TrackInfo:
        return TrackInfo(self.sha256, self.frames, self.rate, self.channels, self.size, self.format)

    def to_dict(self) -> dict[str, Any]:
        return self.info().to_dict()


@dataclass(frozen=True)
class TakeSinger:
    """One expected singer's progress on one take, and its recording once uploaded."""

    participant_id: str
    name: str
    part: str
    state: str  # one of tutti.wire.TAKE_UPLOAD_STATES
    detail: str = ""
    recording: Recording | None = None

    def info(self) -> TakeSingerInfo:
        return TakeSingerInfo(self.participant_id, self.name, self.part, self.state, self.detail)


@dataclass(frozen=True)
class Take:
    """A take: settings and backing snapshotted when armed, the expected singers, its times.

    ``t0`` is server monotonic seconds of *the run that started it*; it is kept for the
    record and means nothing after a restart.
    """

    take_id: str
    session_id: str
    state: str  # one of TAKE_STATES
    created_at: float  # wall-clock seconds since the epoch
    settings: SessionSettings
    tracks: dict[str, Track] = field(default_factory=dict)  # part -> track at arm time
    t0: float | None = None
    stopped_at: float | None = None  # wall-clock seconds since the epoch
    singers: tuple[TakeSinger, ...] = ()

    def singer(self, participant_id: str) -> TakeSinger | None:
        return next((s for s in self.singers if s.participant_id == participant_id), None)

    def info(self, expires_at: float | None = None) -> TakeInfo:
        """The take as the leader sees it; ``expires_at``: when the host will remove it."""
        return TakeInfo(
            take_id=self.take_id,
            state=self.state,
            t0=self.t0,
            created_at=self.created_at,
            stopped_at=self.stopped_at,
            settings=self.settings,
            singers=tuple(x.info() for x in self.singers),
            expires_at=expires_at,
        )


def session_view(s: Session, tracks: dict[str, Track]) -> SessionView:
    """The session as broadcast to everyone in it (no join code)."""
    return SessionView(
        s.session_id, s.settings, s.state, {part: t.info() for part, t in tracks.items()}
    )


class Fanout(Protocol):
    """Where events go: the session room (everyone) or the leader room.  Coroutines.

    The Socket.IO server implements it (:class:`tutti.server.realtime.Realtime`); with several
    server processes, a Redis-backed Socket.IO manager fans the same calls out.
    """

    async def to_session(self, session_id: str, event: str, data: Record) -> None: ...
    async def to_leaders(self, session_id: str, event: str, data: Record) -> None: ...
    async def take_update(
        self,
        session_id: str,
        take_id: str,
        participant_id: str,
        state: str,
        detail: str = "",
        *,
        stored: bool = False,
        now: bool = False,
    ) -> None: ...
    async def flush_take_updates(self, session_id: str) -> None: ...
