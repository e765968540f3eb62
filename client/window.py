"""The singer's window: the local page ``tutti sing`` serves on 127.0.0.1 and opens in the browser.

One home for the page's HTTP API.  Only this computer's browser, holding the one-time secret
of the address ``tutti sing`` opened, may drive it:

- it listens on 127.0.0.1 only, on a random port;
- ``/?s=SECRET`` is accepted once: it is exchanged for an HttpOnly, SameSite=Strict cookie and
  the browser is sent on to ``/`` (so the secret leaves the address bar and the history);
- every request must carry that cookie, a ``Host`` of ``127.0.0.1:PORT`` or ``localhost:PORT``
  (a web site that points its own name at 127.0.0.1 fails here) and, when there is an
  ``Origin``, that same origin; actions are POSTs with a JSON body (no form can send one);
- the Content-Security-Policy lets the page load only its own scripts and styles (no CDN).

What the page sees is pushed as Server-Sent Events (``/api/events``, a JSON state a few times a
second); what it does is ``POST /api/<action>``, each body parsed here, once, into typed
arguments for a :class:`WindowFlow` (``tutti sing``'s steps, :mod:`tutti.client.sing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from tutti.errors import ExitCode, TuttiError

__all__ = [
    "WindowError",
    "WindowFlow",
    "Window",
    "page_dir",
    "CSP",
    "PUSH_HZ",
]

#: State pushes per second (the countdown and the words need a few; the meter wants ~10).
PUSH_HZ: Final = 10.0
#: The page may load its own files only; no inline script or style, no other site.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECRET_PARAM: Final = "s"
_MAX_BODY: Final = 4096
_FILES: Final = {  # the page's files and their types; nothing else is served
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}


class WindowError(TuttiError):
    """An action the page asked for cannot be done now; the message says why, in plain words."""

    exit_code = ExitCode.USAGE  # on the command line: a wrong invite link


class WindowFlow(Protocol):
    """What the page drives (:class:`tutti.client.sing.SingFlow`)."""

    def snapshot(self) -> dict[str, Any]: ...
    def devices(self) -> list[dict[str, Any]]: ...
    async def open_link(self, link: str) -> None: ...
    async def join(self, name: str, part: str) -> None: ...
    async def choose_device(self, input_index: int, output_index: int) -> None: ...
    async def test_sound(self) -> None: ...
    async def confirm_device(self) -> None: ...
    async def change_device(self) -> None: ...
    async def calibrate(self) -> None: ...
    async def finish_setup(self) -> None: ...
    async def wave(self) -> None: ...
    async def listen(self) -> None: ...


def page_dir() -> Path:
    """The page's folder: ``tutti/singerpage`` in an install, ``web/singer`` in the source tree."""
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "singerpage", here.parent / "web" / "singer"):
        if (folder / "index.html").is_file():
            return folder
    raise WindowError("the singer's page is missing from this install of tutti; install it again")


# ---------------------------------------------------------------------------- the edge


def _text(body: dict[str, Any], key: str, maxlen: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise WindowError(f"{key}: a text is needed")
    if len(value) > maxlen:
        raise WindowError(f"{key}: at most {maxlen} characters")
    return value.strip()


def _index(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1024:
        raise WindowError(f"{key}: a device number from the list is needed")
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise WindowError("send the action as JSON (Content-Type: application/json)")
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise WindowError(f"the request is larger than {_MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise WindowError("the request is not valid JSON") from None
    if not isinstance(body, dict):
        raise WindowError("the request must be a JSON object")
    return body


_Action = Callable[[WindowFlow, dict[str, Any]], Awaitable[None]]

#: action name -> what it does with the parsed body
ACTIONS: Final[dict[str, _Action]] = {
    "link": lambda f, b: f.open_link(_text(b, "link", 500)),
    "join": lambda f, b: f.join(_text(b, "name", 64), _text(b, "part", 32)),
    "device": lambda f, b: f.choose_device(_index(b, "input"), _index(b, "output")),
    "test-sound": lambda f, b: f.test_sound(),
    "headset": lambda f, b: f.confirm_device(),
    "change-headset": lambda f, b: f.change_device(),
    "calibrate": lambda f, b: f.calibrate(),
    "ready": lambda f, b: f.finish_setup(),
    "wave": lambda f, b: f.wave(),
    "listen": lambda f, b: f.listen(),
}


# ---------------------------------------------------------------------------- the server


@dataclass
class _Guard:
    """Who may use the window: the secret (once), then the cookie; the allowed Host/Origin."""

    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    cookie_value: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    secret_used: bool = False
    port: int = 0

    @property
    def cookie_name(self) -> str:
        return f"tutti_sing_{self.port}"  # cookies ignore ports: one name per window

    @property
    def hosts(self) -> tuple[str, str]:
        return (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    def refusal(self, request: web.Request) -> str | None:
        """Why ``request`` is refused (None: it may go on, perhaps to the secret exchange)."""
        host = request.headers.get("Host", "")
        if host not in self.hosts:
            return f"wrong Host {host[:80]!r}: open http://127.0.0.1:{self.port}/"
        origin = request.headers.get("Origin")
        if origin is not None and origin not in {f"http://{h}" for h in self.hosts}:
            return "requests from other web sites are refused"
        return None

    def has_cookie(self, request: web.Request) -> bool:
        got = request.cookies.get(self.cookie_name, "")
        return hmac.compare_digest(got.encode(), self.cookie_value.encode())

    def takes_secret(self, request: web.Request) -> bool:
        """The one-time secret, on the page's address, not yet exchanged."""
        got = request.query.get(_SECRET_PARAM, "")
        ok = request.path == "/" and hmac.compare_digest(got.encode(), self.secret.encode())
        if ok and not self.secret_used:
            self.secret_used = True
            return True
        return False


_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_GUARD = web.AppKey("guard", _Guard)
_FLOW = web.AppKey("flow", WindowFlow)
_CLOSING = web.AppKey("closing", asyncio.Event)


def _refused(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status, headers=_HEADERS)


@web.middleware
async def _protect(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = request.app[_GUARD]
    why = guard.refusal(request)
    if why is not None:
        return _refused(403, why)
    if guard.has_cookie(request):
        response = await handler(request)
        if not response.prepared:
            response.headers.update(_HEADERS)
        return response
    if guard.takes_secret(request):
        found = web.Response(status=303, headers={**_HEADERS, "Location": "/"})
        found.set_cookie(
            guard.cookie_name, guard.cookie_value, httponly=True, samesite="Strict", path="/"
        )
        return found
    return _refused(
        403,
        "this window belongs to another browser or an earlier start; close it and start "
        "`tutti sing` again (it opens the right address)",
    )


async def _file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    kind = _FILES.get(name)
    if kind is None:
        raise web.HTTPNotFound(text="no such file")
    return web.FileResponse(page_dir() / name, headers={"Content-Type": f"{kind}; charset=utf-8"})


async def _devices(request: web.Request) -> web.Response:
    try:
        found = await asyncio.to_thread(request.app[_FLOW].devices)
    except TuttiError as exc:
        return _refused(409, str(exc))
    return web.json_response({"devices": found})


async def _action(request: web.Request) -> web.Response:
    act = ACTIONS.get(request.match_info["action"])
    if act is None:
        raise web.HTTPNotFound(text="no such action")
    try:
        await act(request.app[_FLOW], await _json_body(request))
    except TuttiError as exc:  # WindowError, JoinError, DeviceError: the page shows the words
        return _refused(400 if isinstance(exc, WindowError) else 409, str(exc))
    return web.json_response(request.app[_FLOW].snapshot())


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the flow's state, ``PUSH_HZ`` times a second until the window ends."""
    resp = web.StreamResponse(
        headers={**_HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    closing, flow = request.app[_CLOSING], request.app[_FLOW]
    with contextlib.suppress(ConnectionError):
        while not closing.is_set():
            await resp.write(f"data: {json.dumps(flow.snapshot())}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), 1.0 / PUSH_HZ)
        await resp.write(b"event: end\ndata: {}\n\n")
    return resp


def make_app(flow: WindowFlow, guard: _Guard) -> web.Application:
    """The window's application (routes and state; :class:`Window` owns the socket)."""
    app = web.Application(middlewares=[_protect], client_max_size=_MAX_BODY)
    app[_GUARD], app[_FLOW], app[_CLOSING] = guard, flow, asyncio.Event()

    async def end_events(app: web.Application) -> None:
        app[_CLOSING].set()

    app.on_shutdown.append(end_events)
    app.router.add_get("/", _file)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/devices", _devices)
    app.router.add_post("/api/{action}", _action)
    app.router.add_get("/{name}", _file)
    return app


class Window:
    """The running window: ``await start()`` binds 127.0.0.1 on a random port, ``url`` is the
    address to open (with the one-time secret), ``await close()`` ends it."""

    def __init__(self, flow: WindowFlow) -> None:
        self.guard = _Guard()
        self.app = make_app(flow, self.guard)
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self.guard.port

    @property
    def url(self) -> str:
        """The address to open once; it lets one browser in."""
        return f"http://127.0.0.1:{self.port}/?{_SECRET_PARAM}={self.guard.secret}"

    async def start(self) -> str:
        """Coroutine: serve the window; returns :attr:`url`."""
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.guard.port = int(runner.addresses[0][1])
        return self.url

    async def close(self) -> None:
        """Coroutine: stop serving (open event streams end first)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
