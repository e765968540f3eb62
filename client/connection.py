"""The singer's connection to a tutti server: HTTP join, then one Socket.IO client.

:func:`join_session` calls ``POST /api/join`` (or, with a token saved from an earlier run
for the same server and code, checks it with ``GET /api/session`` and reuses it, so a
restarted client is the *same participant* and may still upload its unfinished takes).
:class:`Connection` wraps ``socketio.AsyncClient`` with the token in ``auth``; python-socketio
reconnects by itself with the same ``auth``, and the server treats a reconnect as the same
participant.  Every refusal becomes a :class:`JoinError` with a sentence a singer can act on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import socketio

from tutti import wire
from tutti.client import config
from tutti.errors import ExitCode, TuttiError
from tutti.wire import PROTOCOL_VERSION, SessionSettings, WireError

__all__ = [
    "JoinError",
    "PartTrack",
    "JoinInfo",
    "normalise_url",
    "error_of",
    "join_session",
    "Connection",
    "RECONNECT_WAIT_S",
    "reconnect_pauses",
]

log = logging.getLogger(__name__)


_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)
#: A dropped socket is connected again forever (a singer's Wi-Fi may come back any time): first
#: after RECONNECT_FIRST_S, the pause doubling up to RECONNECT_MAX_S, each ± RECONNECT_SPREAD
#: seconds so that a restarted server is not met by everyone at once.
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
RECONNECT_SPREAD = 0.3
#: How long one attempt waits for the server to accept the socket.  python-socketio's own
#: reconnection waits 1 s: a server busy with hundreds of singers coming back (one of its
#: processes died) takes longer, so every attempt gave up, dropped the socket and came again,
#: and the server's work on it was lost (docs/benchmarks-server.md, the cluster).
RECONNECT_WAIT_S = 10.0


def reconnect_pauses() -> Iterator[float]:
    """Seconds to wait before each attempt to connect a dropped socket again, endless."""
    pause = RECONNECT_FIRST_S
    while True:
        yield max(0.0, pause + RECONNECT_SPREAD * (2 * random.random() - 1))
        pause = min(2 * pause, RECONNECT_MAX_S)


class JoinError(TuttiError):
    """Joining failed; ``str(exc)`` is a sentence for the singer, ``exit_code`` for the shell."""

    def __init__(
        self, message: str, *, exit_code: ExitCode = ExitCode.REFUSED, code: str = ""
    ) -> None:
        super().__init__(message, exit_code=exit_code)
        self.code: str = code


@dataclass(frozen=True)
class PartTrack:
    """The backing track a singer sings to: the part it belongs to and the server's record."""

    part: str
    info: wire.TrackInfo


@dataclass(frozen=True)
class JoinInfo:
    """Who we are in the session."""

    base_url: str
    session_id: str
    participant_id: str
    token: str
    part: str
    name: str
    settings: SessionSettings
    tracks: dict[str, wire.TrackInfo] = field(default_factory=dict)

    @property
    def track(self) -> PartTrack | None:
        """This singer's backing: the track for their part (or the session's only track)."""
        if self.part in self.tracks:
            return PartTrack(self.part, self.tracks[self.part])
        if len(self.tracks) == 1:
            return PartTrack(*next(iter(self.tracks.items())))
        return None


def normalise_url(url: str) -> str:
    """``http(s)://host[:port]`` without a trailing slash; raises :class:`JoinError` otherwise."""
    u = url.strip()
    if "://" not in u:
        u = "http://" + u
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JoinError(
            f"server URL {url!r} is not valid; expected e.g. http://choir.example.org:8765",
            exit_code=ExitCode.USAGE,
        )
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}"


async def error_of(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    """``(code, message)`` of an API error reply, or empty strings when it is not one."""
    try:
        err = wire.ErrorBody.from_dict(await resp.json(content_type=None)).error
        return err.code, err.message
    except (aiohttp.ContentTypeError, ValueError, aiohttp.ClientError):  # ValueError: WireError
        return "", ""


def _saved_key(base_url: str, code: str, name: str) -> str:
    return f"{base_url} {code.strip().upper()} {name.strip()}"


async def join_session(
    http: aiohttp.ClientSession,
    base_url: str,
    *,
    code: str,
    name: str,
    part: str | None,
    remember: bool = True,
) -> JoinInfo:
    """Coroutine: join (or re-join) a session as a singer.

    Raises
    ------
    JoinError
        Server unreachable (``exit_code`` 3), join refused: unknown code, closed session,
        bad name or part, rate limited (``exit_code`` 4).
    """
    key = _saved_key(base_url, code, name)
    saved = config.saved_join(key) if remember else None
    try:
        if saved is not None and (part is None or saved.part == part):
            info = await _resume(http, base_url, saved, name)
            if info is not None:
                return info
        body = wire.JoinRequest(code.strip(), name, part).to_dict()
        async with http.post(f"{base_url}/api/join", json=body, timeout=_HTTP_TIMEOUT) as resp:
            if resp.status != 200:
                ecode, msg = await error_of(resp)
                err = _refusal(resp, ecode, msg, code)
                if part is None and resp.status in (400, 422) and "part" in msg:
                    err = JoinError(f"{msg} — choose your voice part with --part", code=err.code)
                raise err
            data = await resp.json()
    except aiohttp.ClientConnectorError as exc:
        raise JoinError(
            f"cannot reach the tutti server at {base_url} ({exc.os_error.strerror or exc}); "
            "check the address and that the server is running",
            exit_code=ExitCode.UNREACHABLE,
            code="unreachable",
        ) from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise JoinError(
            f"the tutti server at {base_url} did not answer properly "
            f"({exc.__class__.__name__}: {exc})",
            exit_code=ExitCode.UNREACHABLE,
            code="unreachable",
        ) from exc
    try:
        joined = wire.Joined.from_dict(data, "the join answer")
    except WireError as exc:
        raise JoinError(f"the server's join answer is malformed ({exc})", code="protocol") from exc
    info = JoinInfo(
        base_url=base_url,
        session_id=joined.session_id,
        participant_id=joined.participant_id,
        token=joined.token,
        part=joined.part,
        name=name,
        settings=joined.settings,
        tracks=joined.tracks,
    )
    if remember:
        saving = config.SavedJoin(info.token, info.participant_id, info.part, info.session_id)
        config.remember_join(key, saving)
    return info


async def _resume(
    http: aiohttp.ClientSession, base_url: str, saved: config.SavedJoin, name: str
) -> JoinInfo | None:
    token = saved.token
    async with http.get(
        f"{base_url}/api/session",
        headers={"Authorization": f"Bearer {token}"},
        timeout=_HTTP_TIMEOUT,
    ) as resp:
        if resp.status != 200:
            return None  # token no longer valid (session closed or server data reset): join anew
        data = await resp.json()
    try:
        sess = wire.SessionInfo.from_dict(data, "the session")
    except WireError:
        return None  # not a session this client can sing in: join anew
    if sess.state == "closed" or sess.participant_id is None:
        return None
    return JoinInfo(
        base_url=base_url,
        session_id=sess.session_id,
        participant_id=sess.participant_id,
        token=token,
        part=sess.part or saved.part,
        name=name,
        settings=sess.settings,
        tracks=sess.tracks,
    )


def _refusal(resp: aiohttp.ClientResponse, ecode: str, msg: str, code: str) -> JoinError:
    if resp.status == 404:
        text = (
            f"the join code {code.strip()!r} is not known to this server; "
            "check the code your choir leader gave you"
        )
    elif resp.status == 429:
        wait = resp.headers.get("Retry-After", "a minute")
        text = f"too many wrong join codes from this address; try again in {wait} seconds"
    elif resp.status == 409 or ecode == "session_closed":
        text = msg or "this session is closed; ask your choir leader for the new code"
    else:
        text = msg or f"the server refused the join (HTTP {resp.status})"
    return JoinError(text, exit_code=ExitCode.REFUSED, code=ecode or f"http_{resp.status}")


#: Takes the event's record (:data:`tutti.wire.SERVER_EVENTS` names its type).
Handler = Callable[[Any], Awaitable[None]]


class Connection:
    """The Socket.IO connection of one singer (or leader) token.

    Parameters
    ----------
    base_url : str
        ``http(s)://host:port`` of the server.
    token : str
        The participant's bearer token (sent in the connect ``auth``).
    handlers : dict
        Event name → coroutine taking the event's record (S→C events of
        :class:`tutti.wire.Ev`); each payload is parsed here, once, and one that does not
        match the contract is logged and dropped.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        handlers: dict[str, Handler] | None = None,
        *,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)  # reconnects itself: _reconnect
        self.state = "connecting"
        self.reconnects = 0
        self.refused: str | None = None
        self._on_state = on_state
        self._ever_connected = False
        self._reconnect_hooks: list[Callable[[], Awaitable[None]]] = []
        self._closing = False
        self._again: asyncio.Task[None] | None = None  # connecting a dropped socket again
        self.sio.on("connect", self._connected)
        self.sio.on("disconnect", self._disconnected)
        self.sio.on("connect_error", self._connect_error)
        self.malformed: list[str] = []  # what the server sent off the contract, said once each
        for event, fn in (handlers or {}).items():
            self.on(event, fn)

    def on(self, event: str, fn: Handler) -> None:
        """Register a handler for a server event; it gets the payload parsed into its record."""
        kind = wire.SERVER_EVENTS[event]

        async def parsed(data: Any = None) -> None:
            try:
                record = kind.from_dict(data, event)
            except WireError as exc:
                log.warning("ignored a malformed %s event: %s", event, exc)
                self.malformed.append(str(exc))
                return
            await fn(record)

        self.sio.on(event, parsed)

    def on_reconnect(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine run after every *re*-connect (not the first connect)."""
        self._reconnect_hooks.append(fn)

    def _set(self, state: str) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    async def _connected(self) -> None:
        self._set("connected")
        if self._ever_connected:
            self.reconnects += 1
            for hook in self._reconnect_hooks:
                asyncio.ensure_future(hook())
        self._ever_connected = True

    async def _disconnected(self, *_: Any) -> None:
        if self._closing:
            return
        self._set("reconnecting")
        if self._again is None or self._again.done():
            self._again = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Connect the dropped socket again (see :data:`RECONNECT_WAIT_S`) until it is back,
        the server refuses it, or :meth:`close`."""
        for pause in reconnect_pauses():
            await asyncio.sleep(pause)
            if self._closing or self.sio.connected:
                return
            try:
                await self._open(RECONNECT_WAIT_S)
                return
            except socketio.exceptions.ConnectionError:
                if self.refused:
                    self._set("refused")
                    return
                self._set("reconnecting")

    async def _open(self, timeout: float) -> None:
        """Coroutine: one attempt to connect (raises ``socketio.exceptions.ConnectionError``)."""
        await self.sio.connect(
            self.base_url,
            auth=wire.ConnectAuth(self.token, PROTOCOL_VERSION).to_dict(),
            transports=["websocket"],
            socketio_path="socket.io",
            wait_timeout=timeout,
        )

    async def _connect_error(self, data: Any = None) -> None:
        self.refused = wire.connect_refusal(data) or self.refused
        self._set("refused" if self.refused else "reconnecting")

    async def connect(self, timeout: float = 10.0, patience: float = 60.0) -> None:
        """Coroutine: connect once (a dropped socket is then connected again by itself).

        A server that cannot be reached (restarting, a network blip) is tried again with a
        growing pause for up to ``patience`` seconds; a refusal ends it at once.

        Raises
        ------
        JoinError
            The server refused the socket (bad token, wrong protocol, closed session) or
            could not be reached within ``patience`` seconds.
        """
        deadline = time.monotonic() + patience
        pause = 0.5
        while True:
            try:
                await self._open(timeout)
                return
            except socketio.exceptions.ConnectionError as exc:
                if self.refused or time.monotonic() + pause > deadline:
                    why = self.refused or str(exc)
                    raise JoinError(
                        f"the server at {self.base_url} refused the live connection: {why}",
                        exit_code=ExitCode.REFUSED if self.refused else ExitCode.UNREACHABLE,
                    ) from exc
            self._set("reconnecting")
            await asyncio.sleep(pause)
            pause = min(2 * pause, 5.0)

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    async def emit(self, event: str, data: wire.Record) -> bool:
        """Coroutine: send an event's record if connected; returns False (dropped) otherwise."""
        if not self.sio.connected:
            return False
        try:
            await self.sio.emit(event, data.to_dict())
        except socketio.exceptions.SocketIOError:
            return False
        return True

    async def call(self, event: str, data: dict[str, Any], timeout: float) -> Any:
        """Coroutine: send an event and await its ack.

        Raises ``TimeoutError`` when no ack arrives and ``ConnectionError`` when not connected
        (the contract :class:`tutti.client.clock.ClockSync` expects).
        """
        if not self.sio.connected:
            raise ConnectionError("not connected")
        try:
            return await self.sio.call(event, data, timeout=timeout)
        except socketio.exceptions.TimeoutError as exc:
            raise TimeoutError(f"no answer to {event} within {timeout} s") from exc
        except socketio.exceptions.SocketIOError as exc:
            raise ConnectionError(str(exc)) from exc

    async def close(self) -> None:
        """Coroutine: disconnect and stop reconnecting."""
        self._closing = True
        if self._again is not None:
            self._again.cancel()
        try:
            await self.sio.disconnect()
        except Exception:  # noqa: BLE001 - closing must not fail
            log.debug("disconnect failed", exc_info=True)
        self._set("closed")
