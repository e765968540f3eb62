"""The host's session key: who may create sessions on this server, and how many.

``tutti serve`` creates a random key in the data directory on first start
(``session-key``, readable by its owner only) and prints how to hand it to leaders; a
leader's ``tutti lead create`` sends it in the :data:`KEY_HEADER` header.  Only its sha256
is compared and stored with each session, so the quota "open sessions per key" follows a
key across restarts, and a new key (delete the file) starts a fresh count.  ``--open``
switches the key off for a private network.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from aiohttp import web

from .errors import Unauthorized

__all__ = ["KEY_FILE", "KEY_HEADER", "OPEN_KEY_ID", "load_or_create_key", "key_id", "HostKey"]

#: File in the data directory holding the key.
KEY_FILE = "session-key"
#: Request header that carries the key on ``POST /api/sessions``.
KEY_HEADER = "X-Tutti-Session-Key"
#: Key id recorded for sessions created on an open server.
OPEN_KEY_ID = "open"


def key_id(key: str) -> str:
    """The stored form of a key: its sha256, hex (first 32 characters)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def load_or_create_key(data_dir: Path) -> tuple[str, bool]:
    """The key in ``data_dir/session-key``, created (mode 0600) if missing; (key, created)."""
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key, False
    key = secrets.token_urlsafe(24)
    tmp = path.with_name(f"{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # the first of several processes starting at once wins
    except FileExistsError:
        kept = path.read_text(encoding="utf-8").strip()
        if kept:
            os.unlink(tmp)
            return kept, False
        os.replace(tmp, path)  # an empty file from an earlier crash
        return key, True
    os.unlink(tmp)
    return key, True


class HostKey:
    """Checks the key on session creation; ``key=None`` is an open server."""

    def __init__(self, key: str | None) -> None:
        self._key = key

    @property
    def open(self) -> bool:
        return self._key is None

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the host's key (never on an open server)."""
        if self._key is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._key.encode())

    def check(self, request: web.Request) -> str:
        """The key id of the request's key; 401 when it is missing or wrong."""
        if self._key is None:
            return OPEN_KEY_ID
        given = request.headers.get(KEY_HEADER, "").strip()
        if not given:
            raise Unauthorized(
                "creating a session on this server needs the host's session key: pass "
                "`tutti lead create --key KEY` or set TUTTI_SESSION_KEY; the host finds it in "
                f"the server's data directory ({KEY_FILE}) and in the output of `tutti serve`",
                code="no_session_key",
            )
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._key.encode()):
            raise Unauthorized(
                "wrong session key: ask the server's host for the current one (the file "
                f"{KEY_FILE} in its data directory)",
                code="bad_session_key",
            )
        return key_id(self._key)
