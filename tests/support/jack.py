"""A private JACK dummy server for tests, port wiring, and a multi-port recorder harness.

Several engineers run tests on one machine at once, so every server gets a unique name
(``jackd -n <name>``) and clients find it through ``JACK_DEFAULT_SERVER``; the default
server name is never used and ``JACK_NO_START_SERVER`` stops libjack from starting one.

In-process use::

    server = JackServer().start()      # sets os.environ, re-initialises PortAudio
    ...                                # sounddevice now lists "JACK Audio Connection Kit"
    server.stop()                      # restores the environment

Subprocesses get ``server.env``.  The dummy driver is started with 16 capture and 16
playback ports so that a harness can open one 8+-channel PortAudio stream on "system" and
record many clients sample-aligned (one JACK client, one cycle).

Recorder harness, also as a command for other processes::

    python -m tests.support.jack record --out takes.npy --seconds 6 singer-1:out_0 singer-2:out_0

prints ``READY`` once its ports are connected, then writes a float32 (frames, N) ``.npy``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "JackError",
    "JackServer",
    "jackd_available",
    "jack_ports",
    "jack_connections",
    "jack_connect",
    "jack_disconnect",
    "isolate_ports",
    "new_ports",
    "Recorder",
    "RecorderProcess",
    "first_nonzero",
]


class JackError(RuntimeError):
    """The JACK server or a JACK tool failed; the message carries its output."""


def jackd_available() -> bool:
    """Whether the JACK server and its command-line tools are installed."""
    return all(shutil.which(t) for t in ("jackd", "jack_lsp", "jack_connect", "jack_disconnect"))


def _env(env: dict[str, str] | None) -> dict[str, str]:
    e = dict(os.environ if env is None else env)
    e["JACK_NO_START_SERVER"] = "1"
    return e


def _tool(args: Sequence[str], env: dict[str, str] | None = None, check: bool = True) -> str:
    for attempt in range(3):
        p = subprocess.run(list(args), capture_output=True, text=True, env=_env(env), timeout=30)
        # "cannot connect": a loaded server can fail to open a tool's client; try again
        if p.returncode == 0 or "jack_client_open() failed" not in p.stderr or attempt == 2:
            break
        time.sleep(0.5)
    if check and p.returncode != 0:
        raise JackError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def jack_ports(env: dict[str, str] | None = None) -> list[str]:
    """All port names on the server (``client:port``)."""
    return [ln.strip() for ln in _tool(["jack_lsp"], env).splitlines() if ln.strip()]


def jack_connections(env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Each port and the ports connected to it."""
    out: dict[str, list[str]] = {}
    cur = ""
    for ln in _tool(["jack_lsp", "-c"], env).splitlines():
        if not ln.strip():
            continue
        if ln.startswith((" ", "\t")):
            out[cur].append(ln.strip())
        else:
            cur = ln.strip()
            out[cur] = []
    return out


def jack_connect(src: str, dst: str, env: dict[str, str] | None = None) -> None:
    """Connect output port ``src`` to input port ``dst``."""
    _tool(["jack_connect", src, dst], env)


def jack_disconnect(src: str, dst: str, env: dict[str, str] | None = None) -> None:
    """Disconnect ``src`` from ``dst``."""
    _tool(["jack_disconnect", src, dst], env)


def isolate_ports(ports: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Remove every connection of ``ports`` (PortAudio wires new streams to "system")."""
    conns = jack_connections(env)
    for p in ports:
        for other in conns.get(p, []):
            # jack_disconnect accepts the two ends in either order
            _tool(["jack_disconnect", p, other], env, check=False)


@contextmanager
def new_ports(env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """Collect the ports that appear while the block runs (e.g. a stream being opened).

    The yielded list is filled in (sorted: ``in_*`` before ``out_*``, by number) when the
    block exits.
    """
    before = set(jack_ports(env))
    found: list[str] = []
    yield found

    def order(p: str) -> tuple[str, str, int]:
        client, _, port = p.rpartition(":")
        kind, _, num = port.rpartition("_")
        return (client, kind, int(num) if num.isdigit() else 0)

    found.extend(sorted(set(jack_ports(env)) - before, key=order))


class JackServer:
    """``jackd -R -n <unique> -d dummy -r <rate> -p <period>`` for one test run.

    Parameters
    ----------
    rate : int
        Sample rate in Hz.
    period : int
        Frames per JACK cycle.  A stream's output wired to its own input comes back one
        cycle later (plus one more when PortAudio adapts to a fixed blocksize).
    ports : int
        Capture and playback ports of the dummy "system" client.
    """

    def __init__(self, *, rate: int = 48000, period: int = 256, ports: int = 16) -> None:
        self.rate = rate
        self.period = period
        self.ports = ports
        self.name = f"tutti-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = Path(f"/tmp/{self.name}.log")
        self._saved: dict[str, str | None] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses that must use this server."""
        e = dict(os.environ)
        e["JACK_DEFAULT_SERVER"] = self.name
        e["JACK_NO_START_SERVER"] = "1"
        return e

    def start(self, timeout: float = 20.0) -> JackServer:
        """Start the server, wait until it answers, point this process (and PortAudio) at it."""
        # -t: clients get 5 s (not 0.5 s) to answer the server; the machines running the
        # tests are loaded and a slow answer must not get a client thrown out.
        # -R: real-time priority where the system allows it (jackd goes on without it where
        # not), so that its clients' audio threads are not the ones an ordinary busy
        # process starves, as on a singer's machine set up for audio
        cmd = ["jackd", "-R", "-P", "70", "-t", "5000", "-n", self.name, "-d", "dummy"]
        cmd += ["-r", str(self.rate), "-p", str(self.period)]
        cmd += ["-C", str(self.ports), "-P", str(self.ports)]
        log = self._log.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise JackError(f"jackd exited ({self.proc.returncode}): {self.log_text()}")
            p = subprocess.run(
                ["jack_lsp"], capture_output=True, text=True, env=self.env, timeout=20
            )
            if p.returncode == 0 and "system:playback_1" in p.stdout:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise JackError(f"jackd did not come up in {timeout} s: {self.log_text()}")
            time.sleep(0.1)
        for k, v in (("JACK_DEFAULT_SERVER", self.name), ("JACK_NO_START_SERVER", "1")):
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        _reinit_portaudio()
        return self

    def log_text(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and restore the environment (close your streams first)."""
        import sounddevice as sd

        if self._saved:
            sd._terminate()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self._saved:
            self._saved = {}
            sd._initialize()
        if os.environ.get("TUTTI_KEEP_JACK_LOG"):
            print(f"JACK server log kept: {self._log}", file=sys.stderr)
        else:
            self._log.unlink(missing_ok=True)

    # convenience wrappers bound to this server
    def ports_list(self) -> list[str]:
        return jack_ports(self.env)

    def connections(self) -> dict[str, list[str]]:
        return jack_connections(self.env)

    def connect(self, src: str, dst: str) -> None:
        jack_connect(src, dst, self.env)

    def disconnect(self, src: str, dst: str) -> None:
        jack_disconnect(src, dst, self.env)

    def isolate(self, ports: Sequence[str]) -> None:
        isolate_ports(ports, self.env)


def _reinit_portaudio() -> None:
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


def first_nonzero(x: npt.NDArray[Any], threshold: float = 0.0) -> list[int | None]:
    """Index of the first sample with ``|x| > threshold`` in each column (None if none)."""
    x2 = x.reshape(x.shape[0], -1)
    out: list[int | None] = []
    for c in range(x2.shape[1]):
        nz = np.flatnonzero(np.abs(x2[:, c]) > threshold)
        out.append(int(nz[0]) if nz.size else None)
    return out


class Recorder:
    """Record ``sources`` (JACK output ports) sample-aligned in this process.

    Opens one PortAudio input stream with ``len(sources)`` channels on the JACK "system"
    device, unwires PortAudio's automatic connections and connects ``sources[i]`` to its
    ``i``-th input.  Every channel comes through the same JACK cycle, so relative sample
    positions between channels are exact.

    Parameters
    ----------
    sources : sequence of str
        Ports to record (may be empty at start; see :meth:`add_source`).
    channels : int
        Channels to open (≥ len(sources)).
    seconds : float
        Capacity; recording stops when full.
    """

    def __init__(
        self,
        sources: Sequence[str] = (),
        *,
        channels: int | None = None,
        seconds: float = 10.0,
        rate: int = 48000,
    ) -> None:
        import sounddevice as sd

        self.channels = channels or max(1, len(sources))
        self.rate = rate
        self.buf = np.zeros((int(seconds * rate), self.channels), np.float32)
        self.pos = 0
        self.first_adc: float | None = None
        #: (harness frame, frames) this recorder itself missed: silence in the recording
        self.gaps: list[tuple[int, int]] = []
        self._frames: Any = None  # JACK's cycle counter: a missed cycle keeps its place
        self._reads: list[tuple[int, int]] = []  # (recorded frame, JACK cycle frame) per block
        self._sd = sd
        self._stream: Any = None
        self.ports: list[str] = []
        self._sources = list(sources)

    def _cb(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        n = self.pos
        jf = self._frames
        if jf is not None and jf.buffer_size == frames:
            self._reads.append((n, jf.frame()))
        if self.first_adc is None:
            self.first_adc = time_info.inputBufferAdcTime
        m = min(frames, self.buf.shape[0] - n)
        if m > 0:
            self.buf[n : n + m] = indata[:m]
            self.pos = n + m

    def _placed(self, data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``data`` (blocks as they came) with every cycle this harness missed put back as
        silence in its place, noted in :attr:`gaps`.  A block's JACK frame less its place
        in ``data`` steps up by the frames missed before it; a callback that ran late reads
        a later cycle, never an earlier one, so the truth is the lowest step from there on."""
        if not self._reads:
            return data
        at = np.array([r[0] for r in self._reads], np.int64)
        step = np.array([r[1] for r in self._reads], np.int64) - at
        step = np.minimum.accumulate(step[::-1])[::-1]
        step -= step[0]
        out = np.zeros((data.shape[0] + int(step[-1]), data.shape[1]), np.float32)
        ends = [*at[1:].tolist(), data.shape[0]]
        for k, (a, e) in enumerate(zip(at.tolist(), ends, strict=True)):
            out[a + step[k] : e + step[k]] = data[a:e]
            if k and step[k] > step[k - 1]:
                self.gaps.append((a + int(step[k - 1]), int(step[k] - step[k - 1])))
        return out

    def missed(self, lo: int, hi: int) -> bool:
        """Whether this harness missed any frame in [lo, hi)."""
        return any(at < hi and lo < at + k for at, k in self.gaps)

    def start(self) -> Recorder:
        from tutti.client.jackframes import open_jack_frames

        self._frames = open_jack_frames()
        sd = self._sd
        with new_ports() as ports:
            self._stream = sd.InputStream(
                samplerate=self.rate,
                channels=self.channels,
                dtype="float32",
                device="system",
                callback=self._cb,
            )
        self.ports = [p for p in ports if ":in_" in p]
        if len(self.ports) != self.channels:
            raise JackError(f"recorder expected {self.channels} new input ports, saw {ports}")
        self._stream.start()  # PortAudio wires the ports to "system" here; undo that
        isolate_ports(self.ports)
        for i, src in enumerate(self._sources):
            jack_connect(src, self.ports[i])
        return self

    def add_source(self, channel: int, src: str, timeout: float = 10.0) -> None:
        """Connect output port ``src`` (waiting up to ``timeout`` s for it) to ``channel``."""
        deadline = time.monotonic() + timeout
        while True:
            ports = jack_ports()
            if src in ports:
                break
            if time.monotonic() > deadline:
                raise JackError(f"port {src} did not appear; the server has {ports}")
            time.sleep(0.1)
        jack_connect(src, self.ports[channel])

    def stop(self) -> npt.NDArray[np.float32]:
        """Stop and return what was recorded, float32 (frames, channels)."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        return self._placed(self.buf[: self.pos].copy())


class RecorderProcess:
    """The recorder harness in its own process (``python -m tests.support.jack record``)."""

    def __init__(self, server: JackServer, sources: Sequence[str], out: Path, seconds: float):
        self.out = Path(out)
        cmd = [sys.executable, "-m", "tests.support.jack", "record", "--out", str(out)]
        cmd += ["--seconds", str(seconds), *sources]
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=server.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise JackError(f"recorder did not start: {line!r} {err}")

    def wait(self, timeout: float = 60.0) -> npt.NDArray[np.float32]:
        """Wait for the recording to finish and load it."""
        _, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise JackError(f"recorder failed ({self.proc.returncode}): {err}")
        return np.load(self.out)  # type: ignore[no-any-return]


def _record_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.support.jack record")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("sources", nargs="+")
    a = ap.parse_args(argv)
    rec = Recorder(a.sources, seconds=a.seconds, rate=a.rate).start()
    print("READY", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    full = rec.buf.shape[0]
    while rec.pos < full and not done.wait(0.05):
        pass
    data = rec.stop()
    np.save(a.out, data)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[[Sequence[str]], int]] = {"record": _record_main}
    if not args or args[0] not in commands:
        print(f"usage: python -m tests.support.jack {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
