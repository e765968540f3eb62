"""take.start fan-out to many singers: ``tutti serve`` in one process, the singers' real
python-socketio clients in a few others (so the measurement is not the harness's own loop).

Delivery latency = arrival − the server's ``sent_at`` (both ``time.monotonic()`` on one
host).  N defaults to 200 to keep the suite quick on a shared machine; set
``TUTTI_BROADCAST_N`` for more (the 1,000-singer goal is the benchmark's, in bench/).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.server.helpers import create_session, join
from tests.support.server import ServeProcess

N = int(os.environ.get("TUTTI_BROADCAST_N", "200"))
PROCS = 4


@pytest.mark.slow
async def test_take_start_reaches_every_singer(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "data")
    procs: list[asyncio.subprocess.Process] = []
    try:
        url = await server.start()
        async with aiohttp.ClientSession(url) as http:
            leader = await create_session(http)
            tokens = [
                (await join(http, leader.code, f"Singer {i}", "SATB"[i % 4])).token
                for i in range(N)
            ]
            for k in range(PROCS):
                f = tmp_path / f"tokens{k}.json"
                f.write_text(json.dumps(tokens[k::PROCS]))
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.server.broadcast_client",
                        url,
                        str(f),
                        str(tmp_path / f"delays{k}.json"),
                        stdout=asyncio.subprocess.PIPE,
                        cwd=Path(__file__).parents[2],
                    )
                )
            for p in procs:
                assert p.stdout is not None
                assert await asyncio.wait_for(p.stdout.readline(), 60) == b"ready\n"
            async with http.post("/api/session/takes", headers=leader.headers) as r:
                take_id = (await r.json())["take_id"]
            async with http.post(
                f"/api/session/takes/{take_id}/start", json={"lead_s": 2.0}, headers=leader.headers
            ) as r:
                assert r.status == 200
            codes = [await asyncio.wait_for(p.wait(), 90) for p in procs]
        assert codes == [0] * PROCS  # every singer got take.start
        d = (
            np.concatenate(
                [json.loads((tmp_path / f"delays{k}.json").read_text()) for k in range(PROCS)]
            )
            * 1e3
        )
        assert len(d) == N
        p50, p99 = np.percentile(d, 50), np.percentile(d, 99)
        print(
            f"\ntake.start to {N} singers ({PROCS} client processes): p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, max {d.max():.1f} ms"
        )
        # What must hold: t0 is 2 s ahead and every singer has it with ≥ 1 s to spare.  The
        # p50/p99 figures are printed, not asserted: on a shared 2-core machine a load spike
        # from other work moves them by hundreds of ms (bench/ measures the goal).
        assert d.max() < 1000 * (2.0 - 1.0)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await server.stop()
