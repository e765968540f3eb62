"""Storage quotas: bytes one session and the whole server may hold, checked before a body is read.

A session's bytes are its backing tracks plus its take folder; the server's are everything in
the data directory.  Both are measured by walking the folders in a worker thread (the
folders hold at most a few thousand files) when an upload announces its size; the refusal
names the limit and the ``tutti serve`` flag that raises it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from .errors import ApiError

__all__ = ["GIB", "QuotaExceeded", "StorageQuota", "folder_bytes"]

GIB = 1024**3


class QuotaExceeded(ApiError):
    status = 413
    default_code = "storage_quota"


def folder_bytes(root: Path) -> int:
    """Total size of the regular files under ``root`` (0 if it does not exist); blocking."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # removed while walking
    return total


class StorageQuota:
    """Per-session and per-server byte limits over a data directory."""

    def __init__(self, data_dir: Path, per_session: int, per_server: int) -> None:
        self.data_dir = data_dir
        self.per_session = per_session
        self.per_server = per_server

    async def check(self, session_id: str, track_bytes: int, incoming: int) -> None:
        """Coroutine: refuse ``incoming`` more bytes for ``session_id`` (which holds
        ``track_bytes`` of backing tracks) when either limit would be passed."""
        takes = self.data_dir / "takes" / session_id
        session_now = track_bytes + await asyncio.to_thread(folder_bytes, takes)
        if session_now + incoming > self.per_session:
            raise QuotaExceeded(
                f"this session holds {session_now / GIB:.2f} GiB; {incoming} bytes more would "
                f"pass the {self.per_session / GIB:g} GiB the server's host allows per session "
                "(the host can raise it with `tutti serve --max-session-gb N`)",
                details={"limit": self.per_session, "used": session_now},
            )
        server_now = await asyncio.to_thread(folder_bytes, self.data_dir)
        if server_now + incoming > self.per_server:
            raise QuotaExceeded(
                f"this server holds {server_now / GIB:.2f} GiB; {incoming} bytes more would "
                f"pass the {self.per_server / GIB:g} GiB its host allows (ask the host to free "
                "space or raise it with `tutti serve --max-server-gb N`)",
                details={"limit": self.per_server, "used": server_now},
            )
