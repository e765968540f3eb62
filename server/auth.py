"""Tokens, ids, join codes, and the limit on join-code guessing.

Tokens are 32 random bytes, urlsafe-base64; only their sha256 is stored, so a copy of the
database does not let anyone act as a leader or singer.  Join codes are short and use an
alphabet without look-alikes (no 0/O, 1/I/L), so they can be read out over a video call.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import deque
from collections.abc import Callable

from aiohttp import web

from .errors import TooManyRequests, Unauthorized

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "new_token",
    "hash_token",
    "new_id",
    "new_code",
    "normalize_code",
    "bearer_token",
    "JoinLimiter",
]

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6


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
    """The token of an ``Authorization: Bearer <token>`` header; 401 when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "this needs 'Authorization: Bearer <token>' with a leader or singer token",
            code="no_token",
        )
    return token.strip()


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
