"""Where a session's timed words live: one JSON file per part in the session's folder (so they
go with the session when it is deleted or expires, and into backups with it)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from pathlib import Path

from tutti.fsutil import write_json_atomic
from tutti.wire import Lyrics, WireError

__all__ = ["LyricsStore"]

log = logging.getLogger(__name__)


class LyricsStore:
    """Blocking file I/O: call from a thread."""

    def __init__(self, sessions_dir: Path) -> None:
        self.sessions_dir = sessions_dir

    def _path(self, session_id: str, part: str) -> Path:
        # a part may hold any letter and spaces: its file name is its UTF-8, base64url-encoded
        name = base64.urlsafe_b64encode(part.encode()).decode().rstrip("=")
        return self.sessions_dir / session_id / "lyrics" / f"{name}.json"

    def put(self, session_id: str, lyrics: Lyrics) -> None:
        path = self._path(session_id, lyrics.part)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, lyrics.to_dict())

    def get(self, session_id: str, part: str) -> Lyrics | None:
        try:
            raw = self._path(session_id, part).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return Lyrics.from_dict(json.loads(raw), "lyrics")
        except (ValueError, WireError) as exc:  # reads as none: the leader uploads them again
            log.warning("event=lyrics_unreadable session=%s part=%r: %s", session_id, part, exc)
            return None

    def delete(self, session_id: str, part: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            self._path(session_id, part).unlink()
            return True
        return False
