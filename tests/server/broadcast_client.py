"""Simulated singers for the broadcast test: ``python -m tests.server.broadcast_client``.

Reads singer tokens (JSON list) from a file, connects one python-socketio client per token,
prints ``ready``, waits for every client's ``take.start``, and writes the delivery delays
(arrival − ``sent_at``, seconds, both ``time.monotonic()`` on this host) as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import socketio

from tutti.wire import PROTOCOL_VERSION, Ev


async def main(url: str, tokens_file: Path, out: Path, timeout: float = 60.0) -> int:
    tokens: list[str] = json.loads(tokens_file.read_text())
    arrived: dict[int, tuple[float, float]] = {}
    clients: list[socketio.AsyncClient] = []

    def on_start(i: int) -> Any:
        async def handler(data: dict[str, Any]) -> None:
            arrived[i] = (time.monotonic(), float(data["sent_at"]))

        return handler

    for i, token in enumerate(tokens):
        c = socketio.AsyncClient(reconnection=False)
        c.on(Ev.TAKE_START, on_start(i))
        await c.connect(
            url,
            auth={"token": token, "protocol": PROTOCOL_VERSION},
            transports=["websocket"],
            wait_timeout=30,
        )
        clients.append(c)
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while len(arrived) < len(tokens) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    out.write_text(json.dumps([a - s for a, s in arrived.values()]))
    for c in clients:
        await c.disconnect()
    return 0 if len(arrived) == len(tokens) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))))
