"""The HTTP API's bodies: what clients send to ``/api/…`` and every JSON reply, one record
each.  The server builds the replies; ``tutti lead``, ``tutti join`` and the pages parse each
once where it arrives.  (The take folder's ``take.json`` is :mod:`tutti.takeformat`'s.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tutti.wire.contract import (
    DEFAULT_START_LEAD_S,
    MAX_START_LEAD_S,
    MIN_START_LEAD_S,
    TAKE_STATES,
    TAKE_UPLOAD_STATES,
    SessionSettings,
)
from tutti.wire.outbound import (
    NOTE_MAX_CHARS,
    SESSION_STATES,
    Roster,
    TakeMix,
    TrackInfo,
    check_note,
)
from tutti.wire.record import Record, WireError, spec

__all__ = [
    "JoinRequest",
    "MixRequest",
    "ShareLink",
    "MIN_MIX_GAIN_DB",
    "MAX_MIX_GAIN_DB",
    "StartRequest",
    "UploadMetadata",
    "BACKING_UPLOAD",
    "BackingUploadMetadata",
    "is_backing_upload",
    "SignIn",
    "WebState",
    "Health",
    "SessionCreated",
    "Invite",
    "invite_link",
    "Joined",
    "Cue",
    "Lyrics",
    "NoteRequest",
    "Note",
    "SessionInfo",
    "SessionState",
    "TrackStored",
    "TakeArmedReply",
    "TakeStarted",
    "TakeStopped",
    "TakeSingerInfo",
    "TakeInfo",
    "TakeList",
    "Deleted",
    "MyRecordingsDeleted",
    "ErrorDetail",
    "ErrorBody",
    "error_message",
    "HTTP_REPLIES",
    "HTTP_REQUESTS",
]

#: Longest join code a singer may type (codes are short; spaces and dashes are ignored).
MAX_CODE_CHARS: Final = 32


@dataclass(frozen=True)
class JoinRequest(Record):
    """``POST /api/join``: the join code, the singer's name and voice part (checked by the
    server against the session, in that order: a wrong code says nothing of the parts)."""

    code: str = spec(maxlen=MAX_CODE_CHARS)
    name: str | None = spec(default=None, maxlen=200)
    part: str | None = spec(default=None, maxlen=200)


@dataclass(frozen=True)
class StartRequest(Record):
    """``POST /api/takes/{id}/start``: how far ahead of now timeline sample 0 is (seconds)."""

    STRICT = True

    lead_s: float = spec(
        default=DEFAULT_START_LEAD_S, lo=MIN_START_LEAD_S, hi=MAX_START_LEAD_S, unit="seconds"
    )


#: A singer's gain in a server remix, dB (on top of loudness matching).
MIN_MIX_GAIN_DB: Final = -24.0
MAX_MIX_GAIN_DB: Final = 12.0


@dataclass(frozen=True)
class MixRequest(Record):
    """``POST /api/session/takes/{take_id}/mix``: remix with these gains (dB, by participant
    id, −24 to +12; a singer not named gets 0 dB) and these singers left out (none if not
    given): the body is the whole of the mix's choices, as the sliders show them."""

    STRICT = True

    gains_db: dict[str, float] = spec(factory=dict)
    muted: tuple[str, ...] = spec(default=(), maxlen=2000)

    def checked_gains(self) -> dict[str, float]:
        """The gains, each checked against the accepted range (WireError names the singer)."""
        for pid, db in self.gains_db.items():
            if not MIN_MIX_GAIN_DB <= db <= MAX_MIX_GAIN_DB:
                raise WireError(
                    f"gains_db[{pid[:64]!r}]: must be from {MIN_MIX_GAIN_DB:g} to "
                    f"{MAX_MIX_GAIN_DB:g} dB, got {db:g}"
                )
        return dict(self.gains_db)


@dataclass(frozen=True)
class ShareLink(Record):
    """``POST /api/session/takes/{take_id}/share``: the listening page of a new share link
    (its token is in the path: it is shown once and stored hashed)."""

    url: str = spec(maxlen=200)


@dataclass(frozen=True)
class UploadMetadata(Record):
    """A take upload's tus ``Upload-Metadata`` (every value a string, as tus carries them):
    which take, the file's name and sha256, and its ``take.json`` recording entry as JSON
    (:func:`tutti.takeformat.parse_recording` reads that)."""

    take_id: str = spec(maxlen=64)
    filename: str = spec(maxlen=255)
    recording: str = spec(maxlen=256 * 1024)
    sha256: str = spec(maxlen=64, default="")


#: ``kind`` in the Upload-Metadata of a backing-track upload (take uploads carry no kind).
BACKING_UPLOAD: Final = "backing"


@dataclass(frozen=True)
class BackingUploadMetadata(Record):
    """A backing-track upload's tus ``Upload-Metadata`` (the leader's web page sends it):
    which part, and the file's name (shown only; the format is read from the file)."""

    kind: str = spec(one_of=(BACKING_UPLOAD,))
    part: str = spec(maxlen=32)
    filename: str = spec(maxlen=255, default="")


def is_backing_upload(metadata: dict[str, str]) -> bool:
    """Whether tus ``Upload-Metadata`` asks for a backing track (else it is a take's)."""
    return metadata.get("kind") == BACKING_UPLOAD


@dataclass(frozen=True)
class SignIn(Record):
    """``POST /api/web/signin``: the host's session key or a leader token."""

    secret: str = spec(maxlen=200)


@dataclass(frozen=True)
class Health(Record):
    """``GET /healthz``: the server answers, its version and protocol."""

    ok: bool = spec()
    version: str = spec(maxlen=64)
    protocol: int = spec(lo=1)


@dataclass(frozen=True)
class SessionCreated(Record):
    """``POST /api/sessions``: the new session, its join code and the leader's token."""

    session_id: str = spec(maxlen=64)
    code: str = spec(maxlen=MAX_CODE_CHARS)
    leader_token: str = spec(maxlen=200)
    settings: SessionSettings = spec()
    protocol: int = spec(lo=1)


def invite_link(base_url: str, code: str) -> str:
    """The link a leader shares (``GET /j/{code}``, a page for the singer's browser; also what
    ``tutti join LINK`` reads)."""
    return f"{base_url.rstrip('/')}/j/{code}"


@dataclass(frozen=True)
class Invite(Record):
    """``GET /api/invite/{code}``: what an invite link (``/j/{code}``) tells before joining:
    the session's title and voice parts (an unknown code counts toward the join rate limit)."""

    code: str = spec(maxlen=MAX_CODE_CHARS)
    title: str = spec(maxlen=120)
    parts: tuple[str, ...] = spec(maxlen=16)


@dataclass(frozen=True)
class Joined(Record):
    """``POST /api/join``: the singer's identity and token, and the session to sing in."""

    session_id: str = spec(maxlen=64)
    participant_id: str = spec(maxlen=64)
    token: str = spec(maxlen=200)
    name: str = spec(maxlen=64)
    part: str = spec(maxlen=32)
    settings: SessionSettings = spec()
    tracks: dict[str, TrackInfo] = spec(factory=dict)


@dataclass(frozen=True)
class SessionInfo(Record):
    """``GET /api/session``: the session as a member sees it; the leader also gets the join
    code, a singer their own identity."""

    session_id: str = spec(maxlen=64)
    role: str = spec(one_of=("leader", "singer"))
    settings: SessionSettings = spec()
    state: str = spec(one_of=SESSION_STATES)
    tracks: dict[str, TrackInfo] = spec(factory=dict)
    code: str | None = spec(default=None, maxlen=MAX_CODE_CHARS)
    participant_id: str | None = spec(default=None, maxlen=64)
    name: str | None = spec(default=None, maxlen=64)
    part: str | None = spec(default=None, maxlen=32)


@dataclass(frozen=True)
class SessionState(Record):
    """``POST /api/session/close``: the session and its state now."""

    session_id: str = spec(maxlen=64)
    state: str = spec(one_of=SESSION_STATES)


@dataclass(frozen=True)
class TrackStored(TrackInfo):
    """``PUT /api/session/tracks/{part}``: the backing track as stored, and its part."""

    part: str = spec(maxlen=32)


@dataclass(frozen=True)
class Cue(Record):
    """One timed line of a part's words (:mod:`tutti.cues` reads the uploaded file): at
    ``seconds`` from the backing's start (LRC), or at ``bar``:``beat`` (1-based; of the
    count-in when ``count_in``, else of the song)."""

    text: str = spec(maxlen=200)
    seconds: float | None = spec(default=None, lo=0, hi=86400)
    bar: int | None = spec(default=None, lo=1, hi=10000)
    beat: int | None = spec(default=None, lo=1, hi=32)
    count_in: bool = spec(default=False)


@dataclass(frozen=True)
class Lyrics(Record):
    """``PUT``/``GET /api/session/lyrics/{part}``: a part's words, timed."""

    part: str = spec(maxlen=32)
    cues: tuple[Cue, ...] = spec(maxlen=2000)


@dataclass(frozen=True)
class TakeArmedReply(Record):
    """``POST /api/takes``: the armed take and the singers it expects a recording from."""

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=TAKE_STATES)
    expected: tuple[str, ...] = spec()  # participant ids


@dataclass(frozen=True)
class TakeStarted(Record):
    """``POST /api/takes/{id}/start``: when timeline sample 0 plays (server monotonic s)."""

    take_id: str = spec(maxlen=64)
    t0: float = spec()
    server_time: float = spec()


@dataclass(frozen=True)
class TakeStopped(Record):
    """``POST /api/takes/{id}/stop``."""

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=TAKE_STATES)
    stopped_at: float = spec()  # wall-clock seconds since the epoch


@dataclass(frozen=True)
class TakeSingerInfo(Record):
    """One expected singer of a take and how far their recording got."""

    participant_id: str = spec(maxlen=64)
    name: str = spec(maxlen=64)
    part: str = spec(maxlen=32)
    state: str = spec(one_of=TAKE_UPLOAD_STATES)
    detail: str = spec(maxlen=500, default="")


@dataclass(frozen=True)
class TakeInfo(Record):
    """A take as the leader sees it, with when the host will remove it."""

    take_id: str = spec(maxlen=64)
    state: str = spec(one_of=TAKE_STATES)
    t0: float | None = spec()
    created_at: float = spec()  # wall-clock seconds since the epoch
    stopped_at: float | None = spec()
    settings: SessionSettings = spec()
    singers: tuple[TakeSingerInfo, ...] = spec()
    expires_at: float | None = spec(default=None)  # None: kept until the leader deletes it


@dataclass(frozen=True)
class TakeList(Record):
    """``GET /api/takes``: the session's takes, oldest first."""

    takes: tuple[TakeInfo, ...] = spec()


@dataclass(frozen=True)
class Deleted(Record):
    """``DELETE`` of a take or a session: what is gone."""

    deleted: bool = spec()
    take_id: str | None = spec(default=None, maxlen=64)
    session_id: str | None = spec(default=None, maxlen=64)


@dataclass(frozen=True)
class MyRecordingsDeleted(Record):
    """``DELETE /api/me/recordings``: how many of the singer's recordings and uploads went."""

    deleted_recordings: int = spec(lo=0)
    deleted_uploads: int = spec(lo=0)


@dataclass(frozen=True)
class ErrorDetail(Record):
    """What went wrong: a stable code for programs, a sentence for people."""

    code: str = spec(maxlen=64)
    message: str = spec(maxlen=4000)


@dataclass(frozen=True)
class NoteRequest(Record):
    """``PUT /api/session/note``: the leader's note for the waiting room ("" clears it)."""

    STRICT = True

    note: str = spec(maxlen=4 * NOTE_MAX_CHARS)  # check_note gives the real limit

    @classmethod
    def parse(cls, payload: Any) -> str:
        """The note of a request body, checked (:func:`tutti.wire.check_note`)."""
        return check_note(cls.from_dict(payload, "note request").note)


@dataclass(frozen=True)
class Note(Record):
    """``GET``/``PUT /api/session/note``: the waiting room's note as it is now."""

    note: str = spec(maxlen=NOTE_MAX_CHARS)


@dataclass(frozen=True)
class ErrorBody(Record):
    """Every 4xx/5xx reply of the API: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail = spec()


@dataclass(frozen=True)
class WebState(Record):
    """``GET /api/web/me``, sign-in, sign-out and ``POST /api/web/sessions``: what this
    browser may do.  ``can_create``: it may create sessions (signed in with the key, or the
    server is open); ``session``: the session it leads, None when it leads none."""

    can_create: bool = spec()
    open_server: bool = spec()
    session: SessionInfo | None = spec(default=None)


def error_message(payload: Any) -> str:
    """The sentence of an API error body, or "" when the body is not one (a proxy's page)."""
    try:
        return ErrorBody.from_dict(payload, "error").error.message
    except WireError:
        return ""


#: The JSON bodies clients send, by route (``PATCH /api/session`` takes any subset of the
#: settings' fields).
HTTP_REQUESTS: Final[dict[str, type[Record]]] = {
    "POST /api/sessions": SessionSettings,
    "POST /api/join": JoinRequest,
    "POST /api/session/takes/{take_id}/start": StartRequest,
    "POST /files/ (Upload-Metadata)": UploadMetadata,
    "POST /files/ (Upload-Metadata, backing)": BackingUploadMetadata,
    "POST /api/web/signin": SignIn,
    "POST /api/web/sessions": SessionSettings,
    "POST /api/session/takes/{take_id}/mix": MixRequest,
    "PUT /api/session/note": NoteRequest,
}

#: Every JSON reply, by route (errors: :class:`ErrorBody`; ``…/manifest``: ``take.json``).
HTTP_REPLIES: Final[dict[str, type[Record]]] = {
    "GET /healthz": Health,
    "POST /api/sessions": SessionCreated,
    "POST /api/join": Joined,
    "GET /api/invite/{code}": Invite,
    "GET /api/session": SessionInfo,
    "PATCH /api/session": SessionSettings,
    "POST /api/session/close": SessionState,
    "DELETE /api/session": Deleted,
    "DELETE /api/session/recordings": MyRecordingsDeleted,
    "GET /api/session/roster": Roster,
    "PUT /api/session/tracks/{part}": TrackStored,
    "PUT /api/session/lyrics/{part}": Lyrics,
    "GET /api/session/lyrics/{part}": Lyrics,
    "DELETE /api/session/lyrics/{part}": Deleted,
    "GET /api/session/note": Note,
    "PUT /api/session/note": Note,
    "POST /api/session/takes": TakeArmedReply,
    "GET /api/session/takes": TakeList,
    "POST /api/session/takes/{take_id}/start": TakeStarted,
    "POST /api/session/takes/{take_id}/stop": TakeStopped,
    "DELETE /api/session/takes/{take_id}": Deleted,
    "GET /api/web/me": WebState,
    "POST /api/web/signin": WebState,
    "POST /api/web/signout": WebState,
    "POST /api/web/sessions": WebState,
    "GET /api/session/takes/{take_id}/mix": TakeMix,
    "POST /api/session/takes/{take_id}/mix": TakeMix,
    "POST /api/session/takes/{take_id}/share": ShareLink,
    "error": ErrorBody,
}
