"""``tutti serve --wire-log FILE``: every message the server sends, one JSON line each.

For whoever debugs a client, and for the contract test, which checks every line against
the JSON Schema of :mod:`tutti.wire.schema`.  A line is ``{"kind": "event" | "ack" |
"reply", "name": event name or "METHOD /route/{template}", "status": HTTP status (replies),
"data": the payload}``.  Off by default: it holds names and levels of singers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

__all__ = ["WireLog"]


class WireLog:
    """Appends one JSON line per message sent, flushed as it goes (the event loop's only)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def note(self, kind: str, name: str, data: Any, status: int | None = None) -> None:
        if self._file is None:
            return
        line = {"kind": kind, "name": name, "data": data}
        if status is not None:
            line["status"] = status
        self._file.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
