"""``tutti lead watch`` against the real server: live roster lines, and keys from a terminal.

The keyed test runs ``python -m tutti lead watch`` as a subprocess whose stdin is the slave
side of a pseudo-terminal (so it reads keys in cbreak mode, as on a leader's laptop) and whose
stdout is a pipe (so it prints plain lines the test can read).
"""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from pathlib import Path

from tests.client.lead_cli import run_cli
from tests.client.lead_support import Singer


async def _expect(
    stream: asyncio.StreamReader, needle: str, seen: list[str], timeout: float = 15.0
) -> str:
    """Read lines until one contains ``needle``; every line read is appended to ``seen``."""

    async def scan() -> str:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"watch ended before printing {needle!r}; got {seen}")
            line = raw.decode().rstrip("\n")
            seen.append(line)
            if needle in line:
                return line

    return await asyncio.wait_for(scan(), timeout)


async def test_watch_keys_start_and_stop_takes(server: str, tmp_path: Path) -> None:
    res = await run_cli("lead", "create", server, "--title", "Sofa", "--json")
    assert res.code == 0, res
    code = res.json()["code"]
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tutti",
        "lead",
        "watch",
        "--lead",
        "1",
        stdin=slave,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(slave)
    seen: list[str] = []
    ann = Singer(server, "Ann", "S")
    try:
        assert proc.stdout is not None
        await _expect(proc.stdout, "keys: s start, x stop, q quit", seen)
        await ann.join(code)
        await ann.connect()
        await _expect(proc.stdout, "Ann (S) joined, connected", seen)
        await ann.report(latency=480, rms_db=-18.0, dropouts=2, overflows=9)
        await _expect(proc.stdout, "Ann (S) calibrated: 480 frames (measured)", seen)
        await _expect(proc.stdout, "WARNING Ann (S): audio dropout on their computer", seen)
        await _expect(proc.stdout, "levels: Ann -18 dB", seen)
        os.write(master, b"s")
        started = await _expect(proc.stdout, "started", seen)
        take_id = started.split()[1]
        os.write(master, b"x")
        await _expect(proc.stdout, f"take {take_id} stopped", seen)
        os.write(master, b"q")
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        await ann.close()
    # the singer got the take the leader's key started, and the server has it stopped
    assert [e for e, _ in ann.events if e.startswith("take.")] == [
        "take.armed",
        "take.start",
        "take.stop",
    ]
    res = await run_cli("lead", "takes", "--json")
    (take,) = res.json()["takes"]
    assert take["take_id"] == take_id and take["state"] == "stopped"


async def test_watch_without_terminal_prints_plain_lines(server: str) -> None:
    res = await run_cli("lead", "create", server, "--title", "Sofa", "--json")
    ann = await Singer(server, "Ann", "A").join(res.json()["code"])
    code = res.json()["code"]
    res = await run_cli("lead", "watch", "--duration", "1")
    assert res.code == 0, res
    lines = res.out.splitlines()
    assert "watching; no terminal on stdin, keys ignored" in lines
    assert f"watching Sofa (join code {code})" in lines
    assert "Ann (A) joined, not connected" in lines
    del ann


async def test_watch_on_a_terminal_draws_the_live_table(server: str) -> None:
    res = await run_cli("lead", "create", server, "--title", "Sofa", "--json")
    code = res.json()["code"]
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tutti",
        "lead",
        "watch",
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"},
    )
    os.close(slave)
    screen = bytearray()
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    wanted: list[bytes] = []

    def readable() -> None:
        try:
            screen.extend(os.read(master, 65536))
        except OSError:
            loop.remove_reader(master)
            got.set()
            return
        if wanted and all(w in screen for w in wanted):
            got.set()

    async def wait_for(*needles: str) -> None:
        wanted[:] = [n.encode() for n in needles]
        got.clear()
        if all(w in screen for w in wanted):
            return
        await asyncio.wait_for(got.wait(), 15)
        assert all(w in screen for w in wanted), (needles, screen.decode(errors="replace"))

    loop.add_reader(master, readable)
    ann = Singer(server, "Ann", "S")
    try:
        await wait_for(f"join code {code}", "input level", "nobody yet")
        await ann.join(code)
        await ann.connect()
        await ann.report(latency=480, rms_db=-6.0)
        await wait_for("Ann", "480 fr 10.0 ms (measured)", "±0.20 ms", "████")
        os.write(master, b"q")
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        loop.remove_reader(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        await ann.close()
