"""A choir on one machine for end-to-end tests: a JACK harness between every singer's headset
and microphone, ``tutti join`` singer processes, ``tutti serve`` and a leader session.

Each voice ``(name, part, carrier Hz)`` gets one harness channel.  The harness is one JACK
client: for voice ``k`` it returns what the singer plays to their microphone in the same JACK
cycle, multiplied by the voice's carrier tone while ``ring[k]`` is set (so each voice's
recording is at its own pitch) or unchanged (a plain loopback, for ``tutti calibrate``).
``heard`` keeps every frame the singers played, by harness frame number.  Tests that need
singers who do not hold each other up pass another :class:`Rig` (tests/support/jackprobe.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

from tests.client.lead_cli import run_cli
from tests.support.jack import (
    JackError,
    JackServer,
    isolate_ports,
    jack_connect,
    jack_ports,
    new_ports,
)
from tests.support.ports import unused_port
from tests.support.server import ServeProcess
from tutti import wire

RATE = 48000
PERIOD = 256
#: A 4800-frame table holds whole cycles of every carrier that is a multiple of 10 Hz.
TABLE = 4800
ROOT = Path(__file__).resolve().parents[2]
#: Singers calibrated or started at once: their runs are real time, and each process's start
#: costs about a second of CPU (8 one after the other took 45 s to calibrate).
AT_ONCE = 4
#: (name, part, carrier Hz) of one voice.
Voice = tuple[str, str, float]


# -- the harness ----------------------------------------------------------------------------


class Harness:
    """One JACK client between each singer's headset output and microphone input.

    Channel ``k``: ``out_k = in_k * carrier_k`` when ``ring[k]`` is set (singing), else
    ``out_k = in_k`` (a plain loopback, for ``tutti calibrate``).  ``heard`` records every
    input frame (what the singers played) by harness frame number.
    """

    def __init__(self, voices: Sequence[Voice], seconds: float) -> None:
        n = np.arange(TABLE)
        self.voices = list(voices)
        self.table = np.stack(
            [np.sin(2 * np.pi * f * n / RATE) for _, _, f in voices], axis=1
        ).astype(np.float32)
        self.ring = np.zeros(len(voices), np.float32)
        self.heard = np.zeros((int(seconds * RATE), len(voices)), np.float32)

        self.pos = 0
        self.flags = 0
        self.ins: list[str] = []
        self.outs: list[str] = []
        self._stream: Any = None
        self._idx = np.arange(8192)

    def _cb(self, indata: Any, outdata: Any, frames: int, _t: Any, status: Any) -> None:
        n = self.pos
        if status:
            self.flags += 1
        carrier = self.table[(n + self._idx[:frames]) % TABLE]
        gain = carrier * self.ring + (1.0 - self.ring)
        np.multiply(indata, gain, out=outdata)
        m = min(frames, self.heard.shape[0] - n)
        if m > 0:
            self.heard[n : n + m] = indata[:m]
        self.pos = n + frames

    def start(self) -> Harness:
        import sounddevice as sd

        with new_ports() as ports:
            self._stream = sd.Stream(
                samplerate=RATE,
                blocksize=PERIOD,
                device="system",
                channels=len(self.voices),
                dtype="float32",
                callback=self._cb,
            )
        isolate_ports(ports)
        self.ins = [p for p in ports if ":in_" in p]
        self.outs = [p for p in ports if ":out_" in p]
        assert len(self.ins) == len(self.outs) == len(self.voices), ports
        self._stream.start()
        return self

    def wire(self, k: int, client: str) -> None:
        """Put a singer's new PortAudio client on channel ``k``."""
        jack_connect(f"{client}:out_0", self.ins[k])
        jack_connect(self.outs[k], f"{client}:in_0")

    def calibrating(self, k: int, on: bool) -> None:
        """Channel ``k`` is a plain loopback while its singer calibrates, else it sings."""
        self.ring[k] = 0.0 if on else 1.0

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class Rig(Protocol):
    """What sits around the singers' JACK clients (the harness, or the timeline probes)."""

    def wire(self, k: int, client: str) -> None: ...
    def calibrating(self, k: int, on: bool) -> None: ...
    def stop(self) -> None: ...


#: How often a Wirer looks for the new client: every jack_lsp is a JACK client opening and
#: closing, and polled every 20 ms they cost the whole graph dozens of xruns (a killed singer's
#: restart: 40 per singer in one take, the harness slipping back and forth for 1.3 s).
_POLL_S = 0.25


class Wirer:
    """Wires the JACK client named ``client`` to singer ``k``'s place in ``rig`` once it
    appears.  Each process names its client (``TUTTI_JACK_CLIENT_NAME``), so singers may
    start at once and each still lands on its own channel; one thread looks for every wirer
    waiting, with one ``jack_lsp`` a poll."""

    _lock = threading.Lock()
    _waiting: list[Wirer] = []
    _poller: threading.Thread | None = None

    def __init__(self, rig: Rig, k: int, client: str) -> None:
        self.rig, self.k, self.name = rig, k, client
        self.done = threading.Event()
        self._stop = threading.Event()
        with Wirer._lock:
            Wirer._waiting.append(self)
            if Wirer._poller is None:
                Wirer._poller = threading.Thread(target=Wirer._poll, daemon=True)
                Wirer._poller.start()

    @staticmethod
    def _poll() -> None:
        while True:
            time.sleep(_POLL_S)  # the poll's period (see _POLL_S), not a wait for a condition
            with Wirer._lock:
                Wirer._waiting[:] = [w for w in Wirer._waiting if not w._stop.is_set()]
                waiting = list(Wirer._waiting)
                if not waiting:
                    Wirer._poller = None
                    return
            try:
                ports = jack_ports()
                for w in waiting:
                    w._try(ports)
            except (JackError, subprocess.TimeoutExpired):  # refused or stuck under load
                continue

    def _try(self, ports: list[str]) -> None:
        """Wire the client if it is there (idempotent: its ports are isolated first)."""
        mine = [p for p in ports if p.rsplit(":", 1)[0] == self.name]
        if f"{self.name}:in_0" in mine and f"{self.name}:out_0" in mine:
            isolate_ports(mine)
            self.rig.wire(self.k, self.name)
            self._stop.set()
            self.done.set()

    async def wait(self, timeout: float) -> str:
        ok = await asyncio.to_thread(self.done.wait, timeout)
        self._stop.set()
        assert ok, f"no JACK stream appeared for singer {self.k} within {timeout} s"
        return self.name


# -- processes ------------------------------------------------------------------------------


@dataclass
class SingerProc:
    """One ``tutti join`` process with its own config and data folders."""

    k: int
    voice: Voice
    url: str
    code: str
    home: Path
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    _clients: Iterator[int] = field(default_factory=itertools.count)
    _pump: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.voice[0]

    def _client(self) -> str:
        """A JACK client name of its own for the next process (a killed one's may linger)."""
        return f"singer{self.k}-{next(self._clients)}"

    def _env(self, client: str) -> dict[str, str]:
        return {
            **self.env,
            "TUTTI_JACK_CLIENT_NAME": client,
            "TUTTI_CONFIG_DIR": str(self.home / "config"),
            "TUTTI_DATA_DIR": str(self.home / "data"),
            "PYTHONUNBUFFERED": "1",
            **(
                {"TUTTI_CLOCK_TRACE": os.environ["TUTTI_CLOCK_TRACE"] + f"-{self.name}.npy"}
                if "TUTTI_CLOCK_TRACE" in os.environ
                else {}
            ),
        }

    async def calibrate(self, harness: Rig, attempts: int = 3) -> int:
        """``tutti calibrate`` through the harness in loopback mode; the frames it stored.

        Like a singer, run it again if it could not measure (on this shared, non-real-time
        machine an xrun during a run can spoil it); every failed attempt is printed.
        """
        harness.calibrating(self.k, True)
        for attempt in range(attempts):
            client = self._client()
            wirer = Wirer(harness, self.k, client)
            p = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tutti",
                "calibrate",
                "--device",
                "system",
                "--blocksize",
                str(PERIOD),
                "--json",
                cwd=ROOT,
                env=self._env(client),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(p.communicate(), 120)
            finally:
                wirer._stop.set()
                if p.returncode is None:  # timed out, or another singer's calibration failed
                    p.kill()
                    await p.wait()
            assert wirer.done.is_set(), "calibrate's stream was never wired to the harness"
            if p.returncode == 0:
                harness.calibrating(self.k, False)
                return int(json.loads(out)["frames"])
            print(
                f"calibration attempt {attempt + 1} of {self.name} failed:\n{err.decode()[-800:]}"
            )
        raise AssertionError(f"{self.name}: calibration failed {attempts} times")

    async def start(self, harness: Rig) -> str:
        client = self._client()
        wirer = Wirer(harness, self.k, client)
        name, part, _ = self.voice
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tutti",
            "join",
            self.url,
            "--code",
            self.code,
            "--name",
            name,
            "--part",
            part,
            "--device",
            "system",
            "--blocksize",
            str(PERIOD),
            "--plain",
            cwd=ROOT,
            env=self._env(client),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._pump = asyncio.create_task(self._read())
        return await wirer.wait(60)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    async def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        if self._pump is not None:
            await self._pump

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await self._pump

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.lines[-25:])


@dataclass
class Choir:
    url: str
    serve: ServeProcess
    rig: Rig
    singers: list[SingerProc]
    settings: wire.SessionSettings
    backings: dict[str, npt.NDArray[np.float32]]
    latencies: list[int]
    code: str = ""
    wire_log: Path | None = None

    @property
    def harness(self) -> Harness:
        """The rig, where it is the singing harness."""
        assert isinstance(self.rig, Harness)
        return self.rig


@contextlib.asynccontextmanager
async def choir(
    jack: JackServer,
    tmp_path: Path,
    voices: Sequence[Voice],
    *,
    seconds: float = 150,
    start: int | None = None,
    backing_seconds: float = 5.0,
    rig: Rig | None = None,
) -> AsyncIterator[Choir]:
    """Server + session with a noise backing per part + harness + calibrated singers, the
    first ``start`` of them (default all) running ``tutti join``."""
    wire_log = tmp_path / "wire.jsonl"  # every message the server sends (tests/support/wirecheck)
    serve = ServeProcess(
        tmp_path / "server-data", "--port", str(unused_port()), "--wire-log", str(wire_log)
    )
    url = await serve.start()
    harness = rig if rig is not None else Harness(voices, seconds=seconds).start()
    singers: list[SingerProc] = []
    try:
        res = await run_cli(
            "lead",
            "create",
            url,
            "--title",
            "Sofa Singers E2E",
            "--bpm",
            "120",
            "--count-in",
            "1",
            "--parts",
            "S,A,T,B",
            "--json",
        )
        assert res.code == 0, res
        created = res.json()
        settings = wire.parse_settings(created["settings"])
        backings = {}
        rng = np.random.default_rng(5)
        for part in sorted({part for _, part, _ in voices}):
            noise = (0.1 * rng.standard_normal((int(RATE * backing_seconds), 1))).astype(np.float32)
            path = tmp_path / f"backing-{part}.wav"
            sf.write(str(path), noise, RATE, subtype="FLOAT")
            backings[part] = sf.read(str(path), dtype="float32", always_2d=True)[0]
            res = await run_cli("lead", "track", part, str(path))
            assert res.code == 0, res
        singers += [
            SingerProc(k, voice, url, created["code"], tmp_path / f"singer{k}", jack.env)
            for k, voice in enumerate(voices)
        ]
        at_once = asyncio.Semaphore(AT_ONCE)

        async def calibrated(s: SingerProc) -> int:
            async with at_once:
                return await s.calibrate(harness)

        async def started(s: SingerProc) -> str:
            async with at_once:
                return await s.start(harness)

        async with asyncio.TaskGroup() as tg:
            calibrations = [tg.create_task(calibrated(s)) for s in singers]
        latencies = [t.result() for t in calibrations]
        running = singers if start is None else singers[:start]
        async with asyncio.TaskGroup() as tg:
            for s in running:
                tg.create_task(started(s))
        await wait_roster(len(running))
        yield Choir(
            url, serve, harness, singers, settings, backings, latencies, created["code"], wire_log
        )
    finally:
        for s in singers:
            with contextlib.suppress(Exception):
                await s.stop()
        harness.stop()
        await serve.stop()


async def wait_roster(n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        res = await run_cli("lead", "roster", "--json")
        people = res.json()["participants"] if res.code == 0 else []
        ready = [p for p in people if p["connected"] and p["latency_source"] == "measured"]
        if len(ready) >= n:
            return list(people)
        if time.monotonic() > deadline:
            raise AssertionError(f"roster not ready: {people}")
        await asyncio.sleep(0.5)
