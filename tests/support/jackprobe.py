"""An exact-frame JACK injector for timeline tests, and the rig that wires singers to it.

The injector runs in a process of its own (``python -m tests.support.jackprobe N``, driven
over its stdin and stdout by :class:`InjectorProcess`): every singer waits for its outputs each
cycle, so it must not share a GIL with a busy test.

Each singer's headset output is wired straight back to its own microphone (a digital
loopback), so no other client sits in a singer's path and a singer whose process stops holds
up nobody else.  :class:`Injector`, made with the ``jack`` package (JACK-Client), has only
outputs, one per singer, wired into the singers' microphones: it adds a test's bursts to every
microphone at one JACK frame (``last_frame_time``, exact to the sample).  Nothing feeds it, so
nothing can hold it up.  (A client that listens to the singers cannot be the judge: JACK runs
it before or after a singer as the graph is re-sorted, so what it hears moves by a period.)
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Injector", "InjectorProcess", "Probes", "burst"]


def _client(prefix: str) -> Any:
    import jack  # JACK-Client; libjack finds the test's server through JACK_DEFAULT_SERVER

    return jack.Client(f"{prefix}-{uuid.uuid4().hex[:6]}", no_start_server=True)


class Injector:
    """Outputs ``out_0 … out_{n-1}``; :meth:`inject` plays a burst on all at one JACK frame."""

    def __init__(self, n: int) -> None:
        self.client = _client("inject")
        self.ports = [self.client.outports.register(f"out_{k}") for k in range(n)]
        self._events: list[_Event] = []
        self.now = 0  # JACK frame of the last cycle seen
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        f = self.client.last_frame_time
        # a cycle that does not follow the last one: this client missed cycles or ran late
        # (it then reads a later cycle), so what it writes now may sound elsewhere
        in_step = f == self.now + frames
        self.now = f
        bufs = [p.get_array() for p in self.ports]
        for b in bufs:
            b.fill(0.0)
        for ev in self._events:
            lo, hi = max(ev.at, f), min(ev.at + ev.burst.shape[0], f + frames)
            if lo < hi:
                for b in bufs:
                    b[lo - f : hi - f] += ev.burst[lo - ev.at : hi - ev.at]
                ev.written += hi - lo
                ev.in_step = ev.in_step and in_step

    def start(self) -> Injector:
        self.client.activate()
        return self

    def inject(self, burst: npt.NDArray[np.float32], ahead: int) -> int:
        """Schedule ``burst`` (mono) ``ahead`` frames after the current cycle; its JACK frame."""
        at = int(self.client.frame_time) + ahead
        self._events.append(_Event(at, burst.astype(np.float32)))
        return at

    def sent(self, at: int) -> bool:
        """Whether the burst at JACK frame ``at`` went out whole, written only in cycles
        that followed one another (else where it sounds is not known to the frame)."""
        ev = next(e for e in self._events if e.at == at)
        return ev.written == ev.burst.shape[0] and ev.in_step

    def stop(self) -> None:
        self.client.deactivate()
        self.client.close()


@dataclass
class _Event:
    at: int
    burst: npt.NDArray[np.float32]
    written: int = 0
    in_step: bool = True


def burst(seed: int = 16, frames: int = 48) -> npt.NDArray[np.float32]:
    """The outside event: ``frames`` of a fixed ±0.6 pseudo-random sequence."""
    signs = np.sign(np.random.default_rng(seed).standard_normal(frames))
    return (0.6 * signs).astype(np.float32)


class InjectorProcess:
    """An :class:`Injector` in a child process; its ports are ``{name}:out_k``."""

    def __init__(self, n: int) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.jackprobe", str(n)],
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.name = self._reply()
        self.ports = [f"{self.name}:out_{k}" for k in range(n)]

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the injector process ended")
        return line.strip()

    def _ask(self, command: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return int(self._reply())

    @property
    def now(self) -> int:
        """JACK frame of the injector's latest cycle."""
        return self._ask("now")

    def inject(self, ahead: int) -> int:
        """Play :func:`burst` on every output ``ahead`` frames from now; its JACK frame."""
        return self._ask(f"inject {ahead}")

    def sent(self, at: int) -> bool:
        """:meth:`Injector.sent` of the burst at JACK frame ``at`` (once it has played)."""
        return bool(self._ask(f"sent {at}"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.communicate(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.communicate()


def _serve(n: int) -> None:
    """The child: an injector answering ``now`` and ``inject AHEAD`` on stdin, one per line."""
    import os
    import sys

    # the judge must not be the one that misses cycles: real-time priority where allowed
    # (its callback only copies a burst), the singers and the server stay as they are
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    inj = Injector(n).start()
    print(inj.client.name, flush=True)
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "now":
            print(inj.now, flush=True)
        elif cmd == "inject":
            print(inj.inject(burst(), int(arg[0])), flush=True)
        elif cmd == "sent":
            print(int(inj.sent(int(arg[0]))), flush=True)
    inj.stop()


class Probes:
    """The timeline tests' rig (tests/e2e/choir.py's ``Rig``): singers on digital loopback,
    fed by one :class:`Injector`."""

    def __init__(self, n: int) -> None:
        self.injector = InjectorProcess(n)

    def start(self) -> Probes:
        return self

    def wire(self, k: int, client: str) -> None:
        """A singer's PortAudio client: its output to its own input, and the injector's
        ``out_k`` into its input too."""
        from tests.support.jack import jack_connect

        jack_connect(f"{client}:out_0", f"{client}:in_0")
        jack_connect(self.injector.ports[k], f"{client}:in_0")

    def calibrating(self, k: int, on: bool) -> None:
        """Nothing to switch: the loopback is what calibration measures."""

    def stop(self) -> None:
        self.injector.stop()


if __name__ == "__main__":
    import sys

    _serve(int(sys.argv[1]))
