"""A TCP proxy that delays every chunk by a random time, for clock-sync and network tests.

Each chunk read from one side is forwarded to the other after ``delay ± jitter`` seconds
(uniform), first in, first out per direction: a chunk never overtakes the one before it (as on
a real path, where TCP keeps order), so when a short delay follows a long one, the short one
waits.  :meth:`JitterProxy.drop_all` cuts every open connection (a "Wi-Fi drop").

Usage::

    async with JitterProxy("127.0.0.1", server_port, delay=0.020, jitter=0.010) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

__all__ = ["JitterProxy"]


class JitterProxy:
    """Asyncio TCP proxy on ``127.0.0.1:<port>`` (port chosen by the OS)."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay: float = 0.020,
        jitter: float = 0.010,
        seed: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.chunks = 0
        self.connections = 0  # accepted from clients
        self.bytes_to_client = 0  # bytes forwarded from the target back to clients

    async def __aenter__(self) -> JitterProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def drop_all(self) -> None:
        """Abort every open connection through the proxy (both sides see a reset)."""
        for w in list(self._writers):
            transport = w.transport
            if not transport.is_closing():
                transport.abort()
        self._writers.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        self._writers.update((cw, sw))
        self._spawn(self._pipe(cr, sw))
        self._spawn(self._pipe(sr, cw, to_client=True))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_client: bool = False
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                d = self.delay + self._rng.uniform(-self.jitter, self.jitter)
                queue.put_nowait((time.monotonic() + max(0.0, d), data))
                self.chunks += 1
                if to_client:
                    self.bytes_to_client += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()
