"""Share links: a read-only token per take that plays its mix on a plain page, revocable.

A share link is ``/listen/<token>``: the token is random (like every token, 256 bits), shown
once to the leader and stored only as its sha256 (:func:`tutti.server.auth.hash_token`), in
``shares.json`` in the data directory.  It names one take; it opens that take's mix and
nothing else.  The leader revokes every link of a take at once (``DELETE …/share``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tutti.fsutil import write_json_atomic

from .auth import hash_token, new_token

__all__ = ["Shared", "ShareLinks"]

log = logging.getLogger("tutti.share")


@dataclass(frozen=True)
class Shared:
    """What a share token opens: one take of one session."""

    session_id: str
    take_id: str


class ShareLinks:
    """The share tokens of every take (hashed), kept in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._links: dict[str, Shared] = self._read()
        self._lock = asyncio.Lock()  # one write of the file at a time, in order

    def _read(self) -> dict[str, Shared]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {h: Shared(str(v["session_id"]), str(v["take_id"])) for h, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("event=shares_unreadable path=%s error=%s", self.path, exc)
            return {}

    async def _write(self) -> None:
        doc = {
            h: {"session_id": s.session_id, "take_id": s.take_id} for h, s in self._links.items()
        }
        await asyncio.to_thread(write_json_atomic, self.path, doc, indent=None, mode=0o600)

    async def create(self, session_id: str, take_id: str) -> str:
        """Coroutine: a new token for the take (the only time it exists unhashed)."""
        token = new_token()
        async with self._lock:
            self._links[hash_token(token)] = Shared(session_id, take_id)
            await self._write()
        return token

    async def revoke(self, take_id: str) -> int:
        """Coroutine: forget every token of the take; how many there were."""
        async with self._lock:
            gone = [h for h, s in self._links.items() if s.take_id == take_id]
            for h in gone:
                del self._links[h]
            if gone:
                await self._write()
        return len(gone)

    def lookup(self, token: str) -> Shared | None:
        """The take a token opens, None for an unknown or revoked one."""
        if not 16 <= len(token) <= 128:
            return None
        return self._links.get(hash_token(token))
