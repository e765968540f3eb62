"""The leader's web app: its pages and files, sign-in by cookie, and its Socket.IO link.

The page (``web/`` at the top of the repository, or ``$TUTTI_WEB_DIR``) is plain HTML, CSS
and ES modules; its two npm packages (socket.io-client, tus-js-client) are served from
``web/node_modules``, which the set-up scripts fill with ``npm ci``.  Without them the server
still runs and ``/`` says what to run.

Signing in trades the host's session key or a leader token for HttpOnly cookies
(:mod:`tutti.server.auth` reads them, so the page uses the same ``/api`` as ``tutti lead``);
no token ever appears in a URL or in the page's script.  The Socket.IO connection of a page
takes its leader token from the same cookie.
"""

from __future__ import annotations

import io
import os
import secrets
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import segno
from aiohttp import web

from tutti.wire import Record, SessionInfo, SignIn, WebState, WireError, invite_link

from .app_keys import SERVICES, Services
from .auth import (
    CSRF_COOKIE,
    KEY_COOKIE,
    LEADER_COOKIE,
    check_csrf,
    check_page_origin,
    cookie_credential,
    hash_token,
    same_host,
)
from .client_address import browser_base_url, browser_scheme
from .errors import BadRequest, Forbidden, NotFound, Unauthorized
from .headers import PAGE_CSP
from .http_api import _json
from .realtime import Realtime

__all__ = [
    "WEB_DIR_ENV",
    "WEB_ROOT",
    "VENDOR",
    "web_dir",
    "add_webapp",
    "accept_cookie_on_socket",
]

#: Environment variable naming the web app's folder when tutti is installed from a package
#: (``pip install``, not editable): the ``web/`` folder of the source tree.
WEB_DIR_ENV = "TUTTI_WEB_DIR"
#: Where the app serves its files from (pages, ``app/`` modules and styles, ``node_modules``).
WEB_ROOT = web.AppKey("web_root", Path)
#: The npm files the page loads, by the name it loads them under ``/web/vendor/``.
VENDOR: dict[str, str] = {
    "socket.io.esm.min.js": "socket.io-client/dist/socket.io.esm.min.js",
    "tus.min.js": "tus-js-client/dist/tus.min.js",
}
_PAGES = {"index": "index.html", "missing": "missing.html"}
_APP_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


# ------------------------------------------------------------------ pages and files


def web_dir() -> Path:
    """The web app's folder: ``$TUTTI_WEB_DIR``, else ``web/`` beside the source's ``server/``."""
    return Path(os.environ.get(WEB_DIR_ENV) or Path(__file__).resolve().parents[1] / "web")


def _vendor_ready(root: Path) -> bool:
    return all((root / "node_modules" / path).is_file() for path in VENDOR.values())


def _page(request: web.Request, name: str) -> web.StreamResponse:
    root = request.app[WEB_ROOT]
    if not (root / _PAGES["missing"]).is_file():
        return web.Response(
            status=503,
            text=f"The leader's web page is not installed here: its files are not in {root}. "
            f"Set {WEB_DIR_ENV} to the web/ folder of tutti's source (and run `npm ci` in "
            "it), then restart the server. See docs/deploy.md.\n",
        )
    if not _vendor_ready(root):
        name = "missing"
    return web.FileResponse(
        root / _PAGES[name],
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": PAGE_CSP,
            "Cache-Control": "no-cache",
        },
    )


async def index(request: web.Request) -> web.StreamResponse:
    return _page(request, "index")


async def app_file(request: web.Request) -> web.FileResponse:
    """A file of ``web/app/`` (the page's modules and styles), by plain name only."""
    name = request.match_info["name"]
    path = request.app[WEB_ROOT] / "app" / name
    ctype = _APP_TYPES.get(path.suffix)
    if ctype is None or "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no web app file {name[:80]!r}", code="no_file")
    return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})


async def vendor_file(request: web.Request) -> web.FileResponse:
    """One of the npm files in :data:`VENDOR`, from ``web/node_modules``."""
    name = request.match_info["name"]
    rel = VENDOR.get(name)
    if rel is None:
        raise NotFound(f"no web app package file {name[:80]!r}", code="no_file")
    path = request.app[WEB_ROOT] / "node_modules" / rel
    if not path.is_file():
        raise NotFound(
            "the web app's JavaScript packages are not installed: run `npm ci` in the web/ "
            "folder (scripts/serve.sh does it), then reload",
            code="web_packages_missing",
        )
    return web.FileResponse(
        path, headers={"Content-Type": "text/javascript", "Cache-Control": "max-age=3600"}
    )


# ------------------------------------------------------------------------ sign-in


def _reply(body: Record, status: int = 200) -> web.Response:
    return web.json_response(body.to_dict(), status=status)


def _secure(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a TLS proxy)."""
    return browser_scheme(request) == "https"


def _set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: float
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(max_age),
        path="/",
        httponly=name != CSRF_COOKIE,  # the page reads only the CSRF token
        samesite="Strict",
        secure=_secure(request),
    )


def _with_csrf(request: web.Request, response: web.StreamResponse, svc: Services) -> None:
    """Give the browser a CSRF token when it has none."""
    if not request.cookies.get(CSRF_COOKIE):
        lifetime = svc.config.session_lifetime_s
        _set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(24), lifetime)


def _led_session(svc: Services, token: str | None) -> SessionInfo | None:
    """The session the leader token leads, None for no token or one that is not a leader's."""
    if not token:
        return None
    p = svc.store.principal(hash_token(token))
    if p is None or not p.is_leader or svc.store.get_session(p.session_id) is None:
        return None
    return svc.sessions.info(p)


def _state(svc: Services, key: str | None, token: str | None) -> WebState:
    can_create = svc.host_key.open or (key is not None and svc.host_key.matches(key))
    return WebState(can_create, svc.host_key.open, _led_session(svc, token))


async def me(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    state = _state(svc, request.cookies.get(KEY_COOKIE), request.cookies.get(LEADER_COOKIE))
    response = _reply(state)
    _with_csrf(request, response, svc)
    return response


def _parse_sign_in(payload: Any) -> str:
    try:
        secret = SignIn.from_dict(payload, "sign-in").secret.strip()
    except WireError as exc:
        raise BadRequest(f'{exc}; send {{"secret": KEY_OR_TOKEN}}', code="bad_sign_in") from None
    if not secret:
        raise BadRequest("type the session key or a leader token", code="bad_sign_in")
    return secret


async def sign_in(request: web.Request) -> web.Response:
    """Trade the host's key or a leader token for cookies (the Origin must be this host)."""
    svc = request.app[SERVICES]
    check_page_origin(request)
    secret = _parse_sign_in(await _json(request))
    lifetime = svc.config.session_lifetime_s
    if svc.host_key.matches(secret):
        response = _reply(_state(svc, secret, request.cookies.get(LEADER_COOKIE)))
        _set_cookie(request, response, KEY_COOKIE, secret, lifetime)
    else:
        p = svc.store.principal(hash_token(secret))
        if p is None:
            raise Unauthorized(
                "that is neither this server's session key nor a leader token; check for a "
                "missing character, or ask the server's host for the session key",
                code="bad_secret",
            )
        if not p.is_leader:
            raise Forbidden(
                "that is a singer's token; singers join with `tutti join`, not on this page",
                code="leader_only",
            )
        response = _reply(_state(svc, request.cookies.get(KEY_COOKIE), secret))
        _set_cookie(request, response, LEADER_COOKIE, secret, lifetime)
    _with_csrf(request, response, svc)
    return response


async def sign_out(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    check_csrf(request)
    response = _reply(WebState(svc.host_key.open, svc.host_key.open))
    for name in (LEADER_COOKIE, KEY_COOKIE):
        response.del_cookie(name, path="/")
    return response


async def create_session(request: web.Request) -> web.Response:
    """Create a session as ``POST /api/sessions`` does, with the key from the sign-in
    cookie; the new leader token goes into the leader cookie, not the reply."""
    svc = request.app[SERVICES]
    check_csrf(request)
    key = cookie_credential(request, KEY_COOKIE)
    if not svc.host_key.open and (key is None or not svc.host_key.matches(key)):
        raise Unauthorized(
            "creating a session needs the server's session key: sign in with it first "
            "(the host finds it in the output of `tutti serve`)",
            code="no_session_key",
        )
    created = svc.sessions.create(await _json(request))
    info = svc.sessions.info(svc.sessions.principal(created.leader_token))
    response = _reply(WebState(True, svc.host_key.open, info), status=201)
    _set_cookie(
        request, response, LEADER_COOKIE, created.leader_token, svc.config.session_lifetime_s
    )
    return response


async def invite_qr(request: web.Request) -> web.Response:
    """``GET /api/web/invite.svg``: the invite link of the signed-in session as a QR code."""
    svc = request.app[SERVICES]
    info = _led_session(svc, cookie_credential(request, LEADER_COOKIE))
    if info is None or info.code is None:
        raise Unauthorized("sign in as the session's leader first", code="no_token")
    buf = io.BytesIO()
    qr = segno.make(invite_link(browser_base_url(request), info.code), error="m")
    qr.save(buf, kind="svg", scale=8, border=2, xmldecl=False, title="Invite link")
    return web.Response(
        body=buf.getvalue(),
        headers={"Content-Type": "image/svg+xml", "Cache-Control": "no-store"},
    )


# ------------------------------------------------------------------------ Socket.IO


def _cookie_token(environ: dict[str, Any]) -> str | None:
    """The leader cookie of a Socket.IO handshake from this host's page, else None."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(str(environ.get("HTTP_COOKIE", "")))
    except Exception:  # a malformed Cookie header is no sign-in
        return None
    morsel = jar.get(LEADER_COOKIE)
    origin = environ.get("HTTP_ORIGIN")
    if morsel is None or (
        origin is not None and not same_host(str(origin), str(environ.get("HTTP_HOST", "")))
    ):
        return None
    return morsel.value or None


def accept_cookie_on_socket(realtime: Realtime) -> None:
    """Let a page's Socket.IO connection authenticate with the leader cookie: when the
    connect ``auth`` carries no token, the cookie's is used (the origin check of Socket.IO
    keeps other sites' pages out)."""
    original = realtime.sio.handlers["/"]["connect"]

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        if isinstance(auth, dict) and "token" not in auth:
            token = _cookie_token(environ)
            if token is not None:
                auth = {**auth, "token": token}
        return await original(sid, environ, auth)

    realtime.sio.on("connect", connect)


# ------------------------------------------------------------------------ wiring


def add_webapp(app: web.Application) -> None:
    """Serve the web app (from :func:`web_dir`) at ``/`` and its sign-in API under
    ``/api/web/``."""
    app[WEB_ROOT] = web_dir()
    r = app.router
    r.add_get("/", index)
    r.add_get("/web/app/{name}", app_file)
    r.add_get("/web/vendor/{name}", vendor_file)
    r.add_get("/api/web/me", me)
    r.add_post("/api/web/signin", sign_in)
    r.add_post("/api/web/signout", sign_out)
    r.add_post("/api/web/sessions", create_session)
    r.add_get("/api/web/invite.svg", invite_qr)
    accept_cookie_on_socket(app[SERVICES].realtime)
