"""The upload peer: a minimal aiohttp handler that streams a PUT body to disk and fsyncs it.

``python -m bench._peer_put DIR`` prints ``peer serving on http://127.0.0.1:PORT`` once
listening and runs until killed.  ``PUT /up/<name>`` (name: letters, digits, ``._-``) writes
the body to ``DIR/<name>`` in the order it arrives (file writes in a thread, as tutti's tus
handler does), fsyncs it and answers 201.  No auth, checksums, resume or validation: the
floor that tutti's tus uploads are compared with.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from aiohttp import web

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def make_app(folder: Path) -> web.Application:
    async def put(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not _NAME.match(name) or name.startswith("."):
            raise web.HTTPBadRequest(text="name: letters, digits, '._-' only")
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            size = 0
            async for block in request.content.iter_chunked(1 << 20):
                await asyncio.to_thread(_write_all, fd, block)
                size += len(block)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        return web.json_response({"size": size}, status=201)

    app = web.Application()
    app.router.add_put("/up/{name}", put)
    return app


async def main(folder: Path) -> None:
    runner = web.AppRunner(make_app(folder), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"peer serving on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
