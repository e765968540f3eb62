"""A whole choir on one JACK dummy server: 2 and 8 ``tutti join`` processes, one broadcast.

Each singer is a real ``tutti join`` subprocess (real PortAudio on JACK, real Socket.IO clock
sync against a real ``tutti serve`` process).  A recorder harness process
(:class:`tests.support.jack.RecorderProcess`) records every singer's headset output port in
one JACK client, so all channels are sample-aligned.  The leader starts one take; the first
timeline sample (the first count-in click, non-zero from its first sample) must leave every
singer within 48 frames (1 ms at 48 kHz) of the others.  Afterwards every singer's take is
uploaded and confirmed by the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.client.net_helpers import Leader
from tests.support.jack import JackServer, RecorderProcess, first_nonzero, jack_ports
from tests.support.server import ROOT, ServerProcess

pytestmark = [pytest.mark.jack, pytest.mark.slow]

RATE = 48000


async def _choir(jack: JackServer, tmp_path: Path, n: int) -> tuple[list[int], list[str]]:
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    procs: list[asyncio.subprocess.Process] = []
    logs = []
    try:
        async with aiohttp.ClientSession() as http:
            leader = await Leader(http, srv.url).create(rate=RATE, bpm=120.0, count_in_bars=1)
            for i in range(n):
                env = dict(jack.env)
                env.update(
                    TUTTI_JACK_CLIENT_NAME=f"singer{i}",
                    TUTTI_CONFIG_DIR=str(tmp_path / f"cfg{i}"),
                    TUTTI_DATA_DIR=str(tmp_path / f"local{i}"),
                    PYTHONUNBUFFERED="1",
                )
                logs.append((tmp_path / f"singer{i}.log").open("wb"))
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tutti",
                        "join",
                        srv.url,
                        "--code",
                        leader.code,
                        "--name",
                        f"singer {i}",
                        "--part",
                        "SATB"[i % 4],
                        "--plain",
                        cwd=ROOT,
                        env=env,
                        stdout=logs[-1],
                        stderr=asyncio.subprocess.PIPE,
                    )
                )
            # everyone joined, clock-synced and with the audio engine running
            deadline = time.monotonic() + 90
            while True:
                ps = await leader.roster()
                ready = [
                    p
                    for p in ps
                    if p["connected"] and p["clock"] is not None and p["latency_frames"] is not None
                ]
                if len(ready) == n:
                    break
                for p in procs:
                    if p.returncode is not None:
                        err = (await p.stderr.read()).decode() if p.stderr else ""
                        raise AssertionError(f"a singer exited ({p.returncode}): {err}")
                assert time.monotonic() < deadline, f"only {len(ready)}/{n} singers ready: {ps}"
                await asyncio.sleep(0.2)
            sources = [f"singer{i}:out_0" for i in range(n)]
            missing = set(sources) - set(jack_ports(jack.env))
            assert not missing, f"JACK ports not found: {missing}"
            lead_s = 2.0
            rec = await asyncio.to_thread(
                RecorderProcess, jack, sources, tmp_path / "choir.npy", lead_s + 3.0
            )
            take_id = await leader.arm()
            await leader.start(take_id, lead_s=lead_s)
            data = await asyncio.to_thread(rec.wait, 60)
            await leader.stop(take_id)
            firsts = first_nonzero(data, threshold=1e-4)
            print(f"\nfirst samples: {firsts}")
            assert all(f is not None for f in firsts), f"a singer played nothing: {firsts}"
            # every take reaches the server, sha256-confirmed
            for entry in ps:
                await leader.wait_state(take_id, entry["participant_id"], "uploaded", timeout=60)
            final = await leader.roster()
            states = [p["clock"]["error_bound"] for p in final]
            # levels (~10 Hz) reach the leader's roster
            assert all(p["level"] is not None for p in final), final
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()
            if p.stderr is not None:
                await p.stderr.read()
        for fh in logs:
            fh.close()
        await asyncio.to_thread(srv.stop)
    return [int(f) for f in firsts if f is not None], [f"{b * 1e6:.0f}" for b in states]


@pytest.mark.parametrize("n", [2, 8])
async def test_choir_starts_together(jack: JackServer, tmp_path: Path, n: int) -> None:
    firsts, bounds = await _choir(jack, tmp_path, n)
    spread = max(firsts) - min(firsts)
    rel = np.array(firsts) - min(firsts)
    print(
        f"\n{n} singers: first samples at recorder frames {firsts}; spread {spread} frames "
        f"({spread / RATE * 1e3:.3f} ms); relative {rel.tolist()}; clock error bounds (us) "
        f"{bounds}; load {os.getloadavg()[0]:.1f}"
    )
    assert spread <= 48


def _singer_env(jack: JackServer, tmp_path: Path, name: str) -> dict[str, str]:
    env = dict(jack.env)
    env.update(
        TUTTI_JACK_CLIENT_NAME=name,
        TUTTI_CONFIG_DIR=str(tmp_path / f"cfg-{name}"),
        TUTTI_DATA_DIR=str(tmp_path / f"local-{name}"),
        PYTHONUNBUFFERED="1",
    )
    return env


async def test_unsupported_rate_is_exit_5(jack: JackServer, tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    try:
        async with aiohttp.ClientSession() as http:
            leader = await Leader(http, srv.url).create(rate=44100)  # JACK runs at 48 kHz
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tutti",
            "join",
            srv.url,
            "--code",
            leader.code,
            "--name",
            "Fay",
            "--part",
            "S",
            "--plain",
            cwd=ROOT,
            env=_singer_env(jack, tmp_path, "fay"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await asyncio.to_thread(srv.stop)
    assert proc.returncode == 5, out.decode() + err.decode()
    assert "audio device problem" in err.decode() and "44100" in err.decode()


async def test_kill9_mid_take_then_restart_recovers_and_uploads(
    jack: JackServer, tmp_path: Path
) -> None:
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    env = _singer_env(jack, tmp_path, "gus")
    args = [
        sys.executable,
        "-m",
        "tutti",
        "join",
        srv.url,
        "--plain",
        "--name",
        "Gus",
        "--part",
        "T",
    ]
    log = (tmp_path / "gus.log").open("wb")
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with aiohttp.ClientSession() as http:
            leader = await Leader(http, srv.url).create(rate=RATE, bpm=120.0)
            args += ["--code", leader.code]
            procs.append(
                await asyncio.create_subprocess_exec(
                    *args, cwd=ROOT, env=env, stdout=log, stderr=log
                )
            )
            deadline = time.monotonic() + 60
            while True:
                ps = await leader.roster()
                if ps and ps[0]["connected"] and ps[0]["latency_frames"] is not None:
                    break
                assert time.monotonic() < deadline and procs[0].returncode is None
                await asyncio.sleep(0.2)
            pid = ps[0]["participant_id"]
            take_id = await leader.arm()
            started = await leader.start(take_id, lead_s=1.0)
            # sing for ~3 s after t0, then the laptop "crashes"
            await asyncio.sleep(started["t0"] - started["server_time"] + 3.0)
            procs[0].kill()
            await procs[0].wait()
            killed_after = 3.0
            assert await leader.singer_state(take_id, pid) == "recording"
            await leader.stop(take_id)
            # restart: the same singer (saved token) recovers the take and uploads it
            procs.append(
                await asyncio.create_subprocess_exec(
                    *args, cwd=ROOT, env=env, stdout=log, stderr=log
                )
            )
            await leader.wait_state(take_id, pid, "uploaded", timeout=60)
            confirmed = f"take {take_id} uploaded and confirmed"
            deadline = time.monotonic() + 20
            while confirmed not in (tmp_path / "gus.log").read_text():
                assert time.monotonic() < deadline, "the client never confirmed the upload"
                await asyncio.sleep(0.1)
            roster = await leader.roster()
            async with http.get(
                f"{srv.url}/api/session/takes/{take_id}/manifest", headers=leader.auth
            ) as r:
                manifest = await r.json()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(p.wait(), 20)
                except TimeoutError:
                    p.kill()
                    await p.wait()
        log.close()
        await asyncio.to_thread(srv.stop)
    assert [p["participant_id"] for p in roster] == [pid]  # not a second participant
    rec = manifest["recordings"][0]
    recorded_s = (rec["frames"] + rec["start_offset"]) / RATE  # seconds after t0 on disk
    lost = killed_after - recorded_s
    print(
        f"\nkill -9 after {killed_after:.1f} s of take: {recorded_s:.3f} s recovered "
        f"(lost {lost * 1e3:.0f} ms)"
    )
    assert lost <= 1.0
    text = (tmp_path / "gus.log").read_text()
    assert f"recovered take {take_id}" in text
    # confirmed by sha256 → the local copy is gone
    assert not list((tmp_path / "local-gus" / "takes").glob("*/journal.json"))
