"""Tokens, ids, join codes, the limit on join-code guessing, and where a request's token is.

Tokens are 32 random bytes, urlsafe-base64; only their sha256 is stored, so a copy of the
database does not let anyone act as a leader or singer.  Join codes are short and use an
alphabet without look-alikes (no 0/O, 1/I/L), so they can be read out over a video call.

A request carries its token in ``Authorization: Bearer`` (``tutti lead``, ``tutti join``) or,
from the leader's web page, in the HttpOnly cookie :data:`LEADER_COOKIE`.  A cookie is sent
by the browser on its own, so a request that changes anything with one must also prove it
comes from the page: the :data:`CSRF_HEADER` equal to the :data:`CSRF_COOKIE` (which only
a page of this origin can read), and an ``Origin``, when sent, of this host.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web
from yarl import URL

from .errors import Forbidden, TooManyRequests, Unauthorized

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "new_token",
    "hash_token",
    "new_id",
    "new_code",
    "normalize_code",
    "bearer_token",
    "cookie_credential",
    "check_csrf",
    "check_page_origin",
    "same_host",
    "LEADER_COOKIE",
    "KEY_COOKIE",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "JoinLimiter",
]

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6

#: HttpOnly cookie holding the leader token of the web page's session.
LEADER_COOKIE = "tutti_leader"
#: HttpOnly cookie holding the host's session key the web page signed in with.
KEY_COOKIE = "tutti_key"
#: Cookie the page reads and echoes in :data:`CSRF_HEADER` on every request that changes things.
CSRF_COOKIE = "tutti_csrf"
CSRF_HEADER = "X-Tutti-CSRF"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    """A fresh bearer token (43 urlsafe characters, 256 random bits)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_id() -> str:
    """A random id for sessions, participants and takes (22 urlsafe characters, 128 random
    bits), never starting with ``-``: leaders type ids on the command line
    (``tutti lead download ID``, ``--session ID``), where a leading dash reads as an option."""
    while (i := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return i


def new_code() -> str:
    """A random join code of :data:`CODE_LENGTH` characters from :data:`CODE_ALPHABET`."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """Upper-case the code and drop spaces and dashes people type in."""
    return text.strip().upper().replace(" ", "").replace("-", "")


def bearer_token(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, else of the web page's
    :data:`LEADER_COOKIE` (CSRF-checked); 401 when there is neither."""
    header = request.headers.get("Authorization", "")
    if not header:
        cookie = cookie_credential(request, LEADER_COOKIE)
        if cookie is not None:
            return cookie
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "this needs 'Authorization: Bearer <token>' with a leader or singer token, "
            "or signing in on the server's web page",
            code="no_token",
        )
    return token.strip()


def cookie_credential(request: web.Request, name: str) -> str | None:
    """The secret in cookie ``name``, None when absent; a request that may change things
    must come from the page (Origin and CSRF token), else 403."""
    value = request.cookies.get(name, "").strip()
    if not value:
        return None
    if request.method not in _SAFE_METHODS:
        check_csrf(request)
    return value


def check_csrf(request: web.Request) -> None:
    """403 unless the request comes from this server's page: its Origin (when sent) is this
    host and its :data:`CSRF_HEADER` equals the :data:`CSRF_COOKIE`."""
    check_page_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    wire = "utf-8", "surrogatepass"  # a header is any text: never an encoding error here
    if not expected or not hmac.compare_digest(sent.encode(*wire), expected.encode(*wire)):
        raise Forbidden(
            f"this request came from a browser without the web page's {CSRF_HEADER} "
            "header; reload the page (if it persists, sign in again)",
            code="bad_csrf",
        )


def check_page_origin(request: web.Request) -> None:
    """403 when the request names an ``Origin`` other than this host (another site's page)."""
    origin = request.headers.get("Origin")
    if origin is not None and not same_host(origin, request.host):
        raise Forbidden(
            f"requests signed in by cookie are accepted only from this server's own page; "
            f"this one came from {origin[:100]!r}",
            code="bad_origin",
        )


def same_host(origin: str, host: str) -> bool:
    """Whether an ``Origin`` header names ``host`` (the request's ``Host``, with its port)."""
    try:
        authority = URL(origin).raw_authority
    except ValueError:
        return False
    return origin != "null" and bool(authority) and authority.lower() == host.lower()


class JoinLimiter:
    """Counts failed join attempts per client address in a sliding window.

    Parameters
    ----------
    max_failures : int
        Failures allowed per address within ``window_s``; more are refused with 429.
    window_s : float
        Window length, seconds.
    clock : callable
        Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        max_failures: int = 10,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def check(self, key: str) -> None:
        """Raise :class:`TooManyRequests` if ``key`` has used up its failures."""
        now = self._clock()
        q = self._prune(key, now)
        if len(q) >= self.max_failures:
            retry = math.ceil(q[0] + self.window_s - now)
            raise TooManyRequests(
                f"too many wrong join codes from this address ({len(q)} in "
                f"{self.window_s:.0f} s); try again in {retry} s",
                retry_after=retry,
            )
        if not q:
            self._failures.pop(key, None)

    def failed(self, key: str) -> None:
        """Record one failed attempt by ``key``."""
        now = self._clock()
        self._prune(key, now).append(now)
        if len(self._failures) > 100_000:  # bound memory under a flood of addresses
            for k in [k for k, v in self._failures.items() if not v or v[-1] < now - self.window_s]:
                del self._failures[k]
