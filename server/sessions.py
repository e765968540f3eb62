"""Session lifecycle: create, join, read, change settings, close.

The rules live here, apart from HTTP and Socket.IO: who may do what, what a join needs, what
a closed session refuses.  Views call these methods and return their results as JSON.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from tutti.wire import (
    PROTOCOL_VERSION,
    Ev,
    Invite,
    Joined,
    JoinRequest,
    SessionClosed,
    SessionCreated,
    SessionInfo,
    SessionSettings,
    SessionState,
    SessionView,
    check_name,
    check_part,
    parse_settings,
)

from .auth import JoinLimiter, hash_token, new_code, new_id, new_token, normalize_code
from .client_address import address_bucket
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .models import Fanout, Participant, Principal, Session, session_view
from .store import SessionStore

__all__ = ["Sessions"]


class Sessions:
    """Session rules over a :class:`SessionStore`, announcing changes through a :class:`Fanout`."""

    def __init__(
        self,
        store: SessionStore,
        fanout: Fanout,
        limiter: JoinLimiter,
        *,
        lifetime_s: float = 30 * 24 * 3600.0,
        max_sessions: int = 50,
        max_joins: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # wall-clock seconds; tests move it instead of sleeping
        self.address_limiter = JoinLimiter(limiter.max_failures * 3, limiter.window_s)
        self.max_sessions = max_sessions
        self.max_joins = max_joins
        self.store = store
        self.fanout = fanout
        self.limiter = limiter
        self.lifetime_s = lifetime_s

    def not_open(self, s: Session) -> tuple[str, str] | None:
        """``(code, message)`` saying why ``s`` takes no joins or changes (closed by its
        leader, or past its lifetime), or None while it is open.  Every entry point — HTTP
        actions, joins, Socket.IO connects — refuses with this one answer."""
        if s.state != "open":
            return (
                "session_closed",
                "the session is closed by its leader: it takes no more "
                "singers, settings, tracks or takes",
            )
        ends = s.created_at + self.lifetime_s
        if self.clock() < ends:
            return None
        day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ends))
        return (
            "session_expired",
            f"the session expired on {day} (sessions last {self.lifetime_s / 86400:g} days "
            "from creation); its takes can still be downloaded — start a new session "
            "with `tutti lead create`",
        )

    # ------------------------------------------------------------------ lookups

    def principal(self, token: str) -> Principal:
        """The leader or singer a bearer token belongs to; 401 for an unknown token."""
        p = self.store.principal(hash_token(token))
        if p is None:
            raise Unauthorized(
                "unknown token: use the leader token from creating the session "
                "or the singer token from joining it",
                code="bad_token",
            )
        return p

    def session(self, session_id: str) -> Session:
        s = self.store.get_session(session_id)
        if s is None:
            raise NotFound(f"session {session_id!r} does not exist", code="no_session")
        return s

    def open_session(self, session_id: str) -> Session:
        """The session, or 409 if it is closed or expired."""
        s = self.session(session_id)
        refusal = self.not_open(s)
        if refusal is not None:
            raise Conflict(refusal[1], code=refusal[0])
        return s

    @staticmethod
    def require_leader(p: Principal, action: str) -> None:
        if not p.is_leader:
            raise Forbidden(f"only the session's leader may {action}", code="leader_only")

    # ------------------------------------------------------------------ actions

    def create(self, payload: Any) -> SessionCreated:
        """Create a session from a settings object; return its id, code and leader token."""
        settings = parse_settings(payload)
        n = self.store.count_open_sessions(self.clock() - self.lifetime_s)
        if n >= self.max_sessions:
            raise Forbidden(
                f"this server holds {n} open sessions, the most its host allows per session "
                f"key ({self.max_sessions}); close one with `tutti lead close`, or ask the "
                "host to raise the limit (`tutti serve --max-sessions N`)",
                code="session_quota",
            )
        token = new_token()
        for _ in range(20):  # a code collision is rare; retry with another code
            session = Session(new_id(), new_code(), settings, "open", self.clock())
            try:
                self.store.create_session(session, hash_token(token))
                break
            except sqlite3.IntegrityError:
                continue
        else:
            raise Conflict("could not find a free join code; try again", code="code_space_full")
        return SessionCreated(session.session_id, session.code, token, settings, PROTOCOL_VERSION)

    def _check_guessing(self, code: str, client: str) -> None:
        """Refuse a client that guessed too many wrong codes (429)."""
        # Wrong codes count per address and typed code, and (three times as many) per
        # address: one singer retyping a wrong code behind a shared NAT cannot lock the
        # others out, and guessing many codes from one address (an IPv6 /64) stays limited.
        addr = address_bucket(client)
        self.limiter.check(f"{addr} {normalize_code(code)}")
        self.address_limiter.check(addr)

    def _by_code(self, code: str, client: str) -> Session:
        """The session with join code ``code``; a wrong code counts against ``client``."""
        session = self.store.session_by_code(normalize_code(code))
        if session is None:
            addr = address_bucket(client)
            self.limiter.failed(f"{addr} {normalize_code(code)}")
            self.address_limiter.failed(addr)
            raise NotFound(
                "no session has this join code; check it with your leader", code="bad_code"
            )
        return session

    def invite(self, code: str, client: str) -> Invite:
        """What the invite link for ``code`` shows: the open session's title and parts."""
        self._check_guessing(code, client)
        session = self._by_code(code, client)
        refusal = self.not_open(session)
        if refusal is not None:
            raise Forbidden(refusal[1], code=refusal[0])
        return Invite(session.code, session.settings.title, tuple(session.settings.parts))

    def join(self, payload: Any, client: str) -> Joined:
        """A singer joins with ``{"code", "name", "part"}``; wrong codes count per ``client``."""
        req = JoinRequest.from_dict(payload, "join")
        self._check_guessing(req.code, client)
        name = check_name(req.name)
        session = self._by_code(req.code, client)
        refusal = self.not_open(session)
        if refusal is not None:
            raise Forbidden(refusal[1], code=refusal[0])
        if not req.part:
            raise BadRequest(
                "join: choose your voice part; this session's parts are "
                f"{', '.join(session.settings.parts)}",
                code="bad_part",
            )
        part = check_part(req.part, session.settings.parts)
        joined = self.store.count_participants(session.session_id)
        if joined >= self.max_joins:
            raise Forbidden(
                f"this session already has {joined} joins, the most the server's host allows "
                f"per session ({self.max_joins}); the host can raise it with "
                "`tutti serve --max-joins N`",
                code="join_quota",
            )
        token = new_token()
        participant = Participant(new_id(), session.session_id, name, part, self.clock())
        self.store.add_participant(participant, hash_token(token))
        tracks = self.store.tracks(session.session_id)
        return Joined(
            session.session_id,
            participant.participant_id,
            token,
            name,
            part,
            session.settings,
            {p: t.info() for p, t in tracks.items()},
        )

    def info(self, p: Principal) -> SessionInfo:
        """What a member sees of the session (the leader also sees the join code)."""
        s = self.session(p.session_id)
        tracks = {part: t.info() for part, t in self.store.tracks(s.session_id).items()}
        info = SessionInfo(s.session_id, p.role, s.settings, s.state, tracks)
        if p.is_leader:
            return dataclasses.replace(info, code=s.code)
        me = self.store.get_participant(p.participant_id or "")
        return dataclasses.replace(
            info,
            participant_id=p.participant_id,
            name=None if me is None else me.name,
            part=None if me is None else me.part,
        )

    def public(self, session_id: str) -> SessionView:
        """The session as broadcast to everyone in it (no code)."""
        return session_view(self.session(session_id), self.store.tracks(session_id))

    async def update_settings(self, p: Principal, payload: Any) -> SessionSettings:
        """Coroutine: apply a partial settings object; broadcast :data:`Ev.SESSION`."""
        self.require_leader(p, "change the session's settings")
        s = self.open_session(p.session_id)
        new = parse_settings(payload, base=s.settings)
        if new.rate != s.settings.rate and self.store.tracks(s.session_id):
            raise Conflict(
                f"the session has backing tracks at {s.settings.rate} Hz; the rate cannot "
                f"change to {new.rate} Hz while they exist",
                code="rate_locked",
            )
        self.store.update_settings(s.session_id, new)
        await self.fanout.to_session(s.session_id, Ev.SESSION, self.public(s.session_id))
        return new

    async def close(self, p: Principal) -> SessionState:
        """Coroutine: close the session; later joins and connections are refused."""
        self.require_leader(p, "close the session")
        s = self.session(p.session_id)
        if s.state == "open":
            self.store.close_session(s.session_id)
            await self.fanout.to_session(
                s.session_id, Ev.SESSION_CLOSED, SessionClosed(s.session_id)
            )
        return SessionState(s.session_id, "closed")
